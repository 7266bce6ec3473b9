"""The checkpoint contract both fine-tuning loops share."""

import numpy as np
import pytest
import torch

from helpers.checkpoints import (
    TRAINING_STATE_KEYS,
    CheckpointError,
    atomic_save,
    load_weights,
    read_checkpoint,
    resume_training,
    save_training_state,
)
from helpers.sam.training import SamTrainConfig


def _run_objects(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (s + 1))
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    return model, optimizer, scheduler, scaler


def test_a_saved_state_resumes_every_object_and_the_random_state(tmp_path):
    model, optimizer, scheduler, scaler = _run_objects()
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    cfg = SamTrainConfig(epochs=3)
    save_training_state(
        tmp_path / "last.pt",
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        scaler=scaler,
        epoch=1,
        config=cfg,
        history=[{"epoch": 1}],
        best_score=0.5,
    )
    expected_draw = torch.rand(3)  # what the run would draw next
    other = _run_objects(seed=1)
    state = resume_training(tmp_path / "last.pt", cfg, *other)
    assert (
        set(state) == set(TRAINING_STATE_KEYS)
        and state["epoch"] == 1
        and state["best_score"] == 0.5
    )
    for a, b in zip(model.state_dict().values(), other[0].state_dict().values()):
        assert torch.equal(a, b)
    assert other[1].state_dict()["state"][0]["step"] == 1 and other[2].last_epoch == 1
    assert torch.equal(torch.rand(3), expected_draw)


def test_no_state_yet_is_a_fresh_start(tmp_path):
    assert resume_training(tmp_path / "last.pt", SamTrainConfig(), *_run_objects()) is None


def test_resuming_with_other_settings_names_them(tmp_path):
    objects = _run_objects()
    save_training_state(
        tmp_path / "last.pt",
        model=objects[0],
        optimizer=objects[1],
        lr_scheduler=objects[2],
        scaler=objects[3],
        epoch=1,
        config=SamTrainConfig(lr=1e-4),
        history=[],
        best_score=0.0,
    )
    with pytest.raises(
        CheckpointError,
        match=r"last.pt: written with other settings \(lr: 0.0001 there, 0.0005 now\)",
    ):
        resume_training(tmp_path / "last.pt", SamTrainConfig(lr=5e-4), *_run_objects())


def test_a_truncated_state_or_one_of_another_model_is_a_clear_error(tmp_path):
    objects = _run_objects()
    path = tmp_path / "last.pt"
    save_training_state(
        path,
        model=objects[0],
        optimizer=objects[1],
        lr_scheduler=objects[2],
        scaler=objects[3],
        epoch=1,
        config=SamTrainConfig(),
        history=[],
        best_score=0.0,
    )
    bigger = torch.nn.Linear(3, 4)
    with pytest.raises(
        CheckpointError, match="does not fit the model being trained: 2 shape mismatches"
    ):
        resume_training(path, SamTrainConfig(), bigger, *_run_objects()[1:])
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="last.pt: not a readable training state"):
        resume_training(path, SamTrainConfig(), *_run_objects())
    atomic_save({"epoch": 1}, path)
    with pytest.raises(CheckpointError, match="not a training state of this course"):
        resume_training(path, SamTrainConfig(), *_run_objects())


class _Evil:
    """A pickle that would run code when loaded: it would write a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _every_user_file_loader(tmp_path):
    """Each function through which the course reads a file a user may be handed."""
    from helpers.sam.embeddings import EmbeddingCache
    from helpers.sam.model import build_tiny_sam, load_decoder, load_sam

    sam = build_tiny_sam()
    model, optimizer, scheduler, scaler = _run_objects()
    cache = EmbeddingCache(tmp_path / "emb", sam)
    image = np.zeros((8, 8, 3), np.uint8)
    return {
        "load_decoder": lambda p: load_decoder(sam, p),
        "load_sam": lambda p: load_sam("tiny", p),
        "resume_training": lambda p: resume_training(
            p, SamTrainConfig(), model, optimizer, scheduler, scaler
        ),
        "load_weights": lambda p: load_weights(model, p),
        "read_checkpoint": read_checkpoint,
        "embedding cache entry": lambda p: (
            p.replace(cache.path(image)),
            cache._read(cache.path(image), image),
        ),
    }


def test_no_loader_runs_pickled_code(tmp_path):
    """Loading with weights_only=True refuses a pickle whose __reduce__ calls os.system:
    the loader fails (or recomputes) and the marker file never appears."""
    loaders = _every_user_file_loader(tmp_path)
    for name, load in loaders.items():
        marker = tmp_path / f"ran-{name.replace(' ', '_')}"
        path = tmp_path / f"{name.replace(' ', '_')}.pt"
        torch.save({"model": _Evil(marker), "mask_decoder": _Evil(marker)}, path)
        try:
            load(path)
        except Exception:
            pass  # refused: what is required here is that nothing ran
        assert not marker.exists(), f"{name} ran pickled code"


def test_every_torch_load_in_the_package_is_weights_only():
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "helpers"
    calls = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                calls.append((path.name, kw.get("weights_only")))
    assert calls, "no torch.load found: the check reads nothing"
    assert all(w == "True" for _, w in calls), calls


def test_temporary_files_left_by_a_killed_writer_are_swept_by_the_next_write(tmp_path):
    import os
    import time

    old = tmp_path / ".last.pt.abc123.tmp"  # what a SIGKILL mid-write leaves
    old.write_bytes(b"half a checkpoint")
    os.utime(old, (time.time() - 2 * 3600,) * 2)
    fresh = tmp_path / ".last.pt.def456.tmp"  # maybe another writer, right now
    fresh.write_bytes(b"being written")
    other = tmp_path / ".best.pt.ghi789.tmp"  # another file's: not this write's to judge
    other.write_bytes(b"x")
    os.utime(other, (time.time() - 2 * 3600,) * 2)
    atomic_save({"a": torch.ones(1)}, tmp_path / "last.pt")
    assert not old.exists() and fresh.exists() and other.exists()
    assert (tmp_path / "last.pt").is_file()
