"""helpers.distributed: the shard partition, the gradient sum and collectives that fail
with a name; and the jobs under torchrun with 2 CPU processes (gloo), against one process.

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
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given
from hypothesis import strategies as st
from oracles import FAST

from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.voc import VOCInstanceDataset
from helpers.distributed import CollectiveError, Place, shard, sum_gradients, sum_over_ranks
from helpers.sam.embeddings import EmbeddingCache
from helpers.sam.items import prepare_items
from helpers.sam.model import build_tiny_sam, with_own_decoder
from helpers.sam.training import IMAGE_LOSSES, SamTrainConfig

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
                stalled = True
            if named is None and stalled is not None and "did not complete" in line:
                named = True  # rank 0 gave up, naming itself and the collective
                # torchrun now stops the job; the stopped rank is let go so that it takes
                # its SIGTERM at once instead of after torchrun's 30 s of grace
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        code = proc.wait(timeout=180 * TIMEOUT_SCALE)
    finally:
        for sig in (signal.SIGCONT, signal.SIGKILL):  # whatever is left of the job
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        proc.wait()
    output = "".join(lines)
    assert stalled is not None, output[-3000:]
    assert code != 0
    assert "rank 0 of 2:" in output and "did not complete (timeout 10 s)" in output, output[-3000:]
    assert named is not None  # rank 0 gave up by itself and said why; proc.wait above
    # bounds the whole job, so a hang fails the test instead of stalling it


@FAST
@given(st.integers(0, 200), st.integers(1, 16))
def test_shards_cover_every_index_once_and_differ_by_at_most_one(n, world):
    shares = [list(shard(n, Place(rank=r, world=world))) for r in range(world)]
    assert sorted(i for s in shares for i in s) == list(range(n))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


N_IMAGES = 4


STATE = {}  # what the forked processes read: set by the fixture before they start


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    base = build_tiny_sam()
    cache = EmbeddingCache(tmp_path_factory.mktemp("emb"), base)
    ds = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")
    items, _ = prepare_items(torch.utils.data.Subset(ds, range(N_IMAGES)), cache, False)
    STATE.update(base=base, items=items)
    return base, items


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_step(rank: int, world: int, recipe: str):
    """A step of N_IMAGES images on this process's share, then an optimizer step with a
    strong weight decay (SGD: linear in the gradient, so float rounding stays rounding;
    Adam's first step divides by the gradient's own size and would amplify it); returns
    the decoder's weights after it."""
    sam = with_own_decoder(STATE["base"])
    params = list(sam.mask_decoder.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.SGD(params, lr=0.1, weight_decay=0.5)
    cfg = SamTrainConfig(recipe=recipe, click_rounds=1, refine_rounds=0)
    for slot in shard(N_IMAGES, Place(rank=rank, world=world)):
        rng = np.random.default_rng([0, 1, 0, slot])
        IMAGE_LOSSES[recipe](sam, STATE["items"][slot], cfg, rng, N_IMAGES)
    sum_gradients(params)
    optimizer.step()
    return {k: v.detach().clone() for k, v in sam.mask_decoder.state_dict().items()}


def _worker(rank, world, port, out, recipe):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        weights = _one_step(rank, world, recipe)
        if rank == 0:
            torch.save(weights, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("recipe", ["seed", "sam"])
def test_two_processes_take_the_step_of_one_including_parameters_without_gradient(
    prepared, tmp_path, recipe
):
    base, _ = prepared
    alone = _one_step(0, 1, recipe)
    out = tmp_path / "two.pt"
    mp.start_processes(_worker, args=(2, _free_port(), out, recipe), nprocs=2, start_method="fork")
    two = torch.load(out, weights_only=True)
    for k in alone:
        torch.testing.assert_close(two[k], alone[k], atol=1e-6, rtol=0, msg=k)
    start = base.mask_decoder.state_dict()
    iou_head = [k for k in start if k.startswith("iou_prediction_head.")]
    moved = {k for k in iou_head if not torch.equal(two[k], start[k])}
    if recipe == "seed":  # no loss on the IoU head: the optimizer skips it, on 2 processes too
        assert moved == set()
    else:
        assert moved == set(iou_head)


def _stalled_worker(rank, world, port, out):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=__import__("datetime").timedelta(seconds=3),
    )
    try:
        if rank == 1:
            import time

            time.sleep(8)  # stalled: never joins the all-reduce in time
            return
        try:
            sum_over_ranks([1.0])
        except CollectiveError as err:
            out.write_text(str(err))
    finally:
        dist.destroy_process_group()


def test_a_process_that_never_joins_a_collective_makes_the_other_stop_naming_it(tmp_path):
    out = tmp_path / "message.txt"
    mp.start_processes(_stalled_worker, args=(2, _free_port(), out), nprocs=2, start_method="fork")
    message = out.read_text()
    assert message.startswith("rank 0 of 2: an all-reduce of numbers")
    assert "did not complete" in message and "another process stalled or died" in message


def test_without_a_process_group_errors_pass_unchanged():
    from helpers.distributed import collective

    with pytest.raises(KeyError):
        with collective("anything"):
            raise KeyError("mine")


def test_the_process_group_gets_the_configured_timeout(monkeypatch):
    """setup() passes an explicit timeout to init_process_group: its argument, else
    SEGCOURSE_DIST_TIMEOUT, else 600 s (gloo's default would be 30 minutes)."""
    from datetime import timedelta

    import helpers.distributed as distributed

    calls = []
    monkeypatch.setattr(distributed, "_timeout", None)  # restored afterwards
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: calls.append(kw))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    distributed.setup("cpu", timeout=7)
    monkeypatch.setenv("SEGCOURSE_DIST_TIMEOUT", "42")
    distributed.setup("cpu")
    monkeypatch.delenv("SEGCOURSE_DIST_TIMEOUT")
    place = distributed.setup("cpu")
    assert [c["timeout"] for c in calls] == [
        timedelta(seconds=7),
        timedelta(seconds=42),
        timedelta(seconds=600),
    ]
    assert all(c["backend"] == "gloo" for c in calls) and (place.rank, place.world) == (1, 2)
    monkeypatch.setenv("SEGCOURSE_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="SEGCOURSE_DIST_TIMEOUT='soon'"):
        distributed.setup("cpu")
