"""The jobs under torchrun with 2 CPU processes (gloo), against one process.

Notebook 06, run by the test command, checks both entry points end to end (asserts in
its cells): a 2-process SAM run, interrupted after epoch 1 and resumed, ends with the
weights of a 1-process run with the same global batch (within 1e-5: float rounding,
which grows with the steps, so a short-run tolerance), the embedding cache filled in
parallel holds each image once and each process encoded its share; Mask R-CNN trains
under DDP with the processes' weights in step. Here, what the notebook does not show:

- evaluation split over processes and gathered on rank 0 gives the AP of one process,
  and a non-finite loss on one rank stops every rank in both loops;
- a stalled rank ends the job within the configured timeout, naming the rank.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
SAM_ARGS = ["--epochs", "2", "--batch-images", "2", "--click-rounds", "1", "--refine-rounds", "0"]
SAM_ARGS += ["--train-images", "4", "--val-images", "1"]


#: A slow machine may give the torchrun jobs more time: SEGCOURSE_TEST_TIMEOUT_SCALE=3.
TIMEOUT_SCALE = float(os.environ.get("SEGCOURSE_TEST_TIMEOUT_SCALE", "1"))


def torchrun(*args, timeout=600):
    """``torchrun --standalone --nproc_per_node 2 ...``; returns the JSON lines printed.
    ``timeout`` (seconds, times ``SEGCOURSE_TEST_TIMEOUT_SCALE``) guards against a hang,
    not a speed: a run here takes well under a minute."""
    timeout *= TIMEOUT_SCALE
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", SEGCOURSE_SMOKE="1", TQDM_DISABLE="1")
    done = subprocess.run(
        cmd + list(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return [json.loads(line) for line in lines]


def test_evaluation_gathered_on_rank_0_equals_one_process_and_a_nan_on_one_rank_stops_all(
    tmp_path,
):
    sys.path.insert(0, str(ROOT / "tests"))
    from distributed_eval_job import reader_and_model

    from helpers.detection.coco_eval import evaluate_detector

    reader, model = reader_and_model()
    alone = evaluate_detector(model, reader, show_progress=False)
    assert 0 < alone["segm"]["AP"] < 1  # a non-trivial result
    out = torchrun(str(ROOT / "tests" / "distributed_eval_job.py"), str(tmp_path))
    assert sorted(r["rank"] for r in out) == [0, 1]  # both ranks finished: none hung
    for r in out:  # every rank has the result gathered on rank 0
        assert r["segm"] == alone["segm"]["AP"] and r["bbox"] == alone["bbox"]["AP"]
    by_rank = {r["rank"]: r["raised"] for r in out}
    for loop in ("sam", "maskrcnn"):
        assert "non-finite loss" in by_rank[1][loop]
        assert "on another process" in by_rank[0][loop]  # rank 0 stopped too


def _pid_of_rank(rank: int, mark: str) -> int | None:
    """The process torchrun started as ``rank`` (its environment carries our mark)."""
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            env = dict(
                kv.split("=", 1) for kv in environ.read_bytes().decode().split("\0") if "=" in kv
            )
        except OSError:
            continue
        if env.get("SEGCOURSE_TEST_MARK") == mark and env.get("RANK") == str(rank):
            if env.get("LOCAL_RANK") is not None:
                return int(environ.parent.name)
    return None


def test_a_stalled_rank_ends_the_job_within_its_timeout_with_a_message_naming_the_rank(
    tmp_path,
):
    """SIGSTOP one of two ranks once training runs: the other stops at its next
    collective after the configured timeout (10 s) with an error that says which
    collective and which rank, and torchrun ends the job, instead of both waiting
    silently for gloo's default of 30 minutes."""
    import contextlib
    import signal
    import time
    import uuid

    mark = uuid.uuid4().hex
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "helpers.sam.train", *SAM_ARGS, "--epochs", "50", "--dist-timeout", "10"]
    cmd += ["--out", str(tmp_path / "run"), "--embeddings", str(tmp_path / "emb")]
    env = dict(os.environ, OMP_NUM_THREADS="1", SEGCOURSE_SMOKE="1", TQDM_DISABLE="1")
    env.update(PYTHONUNBUFFERED="1", SEGCOURSE_TEST_MARK=mark)
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines, stalled, named = [], None, None
    try:
        for line in proc.stdout:
            lines.append(line)
            if stalled is None and "training the sam recipe" in line:
                pid = _pid_of_rank(1, mark)
                assert pid is not None, "rank 1 not found"
                os.kill(pid, signal.SIGSTOP)
                stalled = time.monotonic()
            if named is None and stalled is not None and "did not complete" in line:
                named = time.monotonic()  # rank 0 gave up, naming itself and the collective
                # torchrun now stops the job; the stopped rank is let go so that it takes
                # its SIGTERM at once instead of after torchrun's 30 s of grace
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        code = proc.wait(timeout=180 * TIMEOUT_SCALE)
        ended = time.monotonic()
    finally:
        for sig in (signal.SIGCONT, signal.SIGKILL):  # whatever is left of the job
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        proc.wait()
    output = "".join(lines)
    assert stalled is not None, output[-3000:]
    assert code != 0
    assert "rank 0 of 2:" in output and "did not complete (timeout 10 s)" in output, output[-3000:]
    assert named is not None and named - stalled < 10 + 30  # the timeout, plus start-up
    assert ended - named < 60
