"""scripts.pretrain_small_sam and the weights it made: the shipped file is the recorded
one (its SHA-256), and the command's first steps give the recorded losses again."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.checkpoints import CheckpointError
from helpers.data.downloads import sha256sum
from helpers.sam.model import TINY_SHA256, TINY_WEIGHTS, build_tiny_sam, load_sam, load_tiny_weights
from scripts import pretrain_small_sam as pretrain

RECORD = (
    Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "pretrain_small_sam.json"
)


def _record() -> dict:
    return json.loads(RECORD.read_text())["results"]


def test_the_shipped_weights_are_the_recorded_ones():
    record = _record()
    assert sha256sum(TINY_WEIGHTS) == TINY_SHA256 == record["sha256"]
    assert TINY_WEIGHTS.stat().st_size <= 10 * 2**20  # fp16, at most about 10 MB
    state = torch.load(TINY_WEIGHTS, weights_only=True)
    assert {v.dtype for v in state.values()} == {torch.float16}
    assert record["steps"] == record["of_steps"]  # a finished run, not a first look


def test_smoke_mode_loads_them_as_the_released_model():
    sam = load_sam("tiny")
    state = torch.load(TINY_WEIGHTS, weights_only=True)
    for name, value in sam.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, state[name].float()), name
    assert not sam.training


def test_a_damaged_or_missing_weights_file_is_refused_naming_it(tmp_path):
    copy = tmp_path / "tiny_sam.pt"
    data = bytearray(TINY_WEIGHTS.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte flipped
    copy.write_bytes(bytes(data))
    with pytest.raises(
        CheckpointError, match=r"tiny_sam\.pt: SHA-256 .* a damaged or changed file"
    ):
        load_tiny_weights(build_tiny_sam(), copy)
    with pytest.raises(CheckpointError, match=r"missing\.pt: the small SAM's weights are missing"):
        load_tiny_weights(build_tiny_sam(), tmp_path / "missing.pt")


def test_the_commands_first_steps_give_the_recorded_losses(tmp_path):
    """The first two optimizer steps of the recorded run, from scratch: the same scenes (by
    their seeds), the same initial weights and draws, the same losses."""
    summary = pretrain.main(["--steps", "2", "--out", str(tmp_path / "run")])
    recorded = _record()
    assert summary["config"] == recorded["config"]  # the shipped run's settings
    np.testing.assert_allclose(summary["first_losses"], recorded["first_losses"][:2], rtol=1e-4)


def test_scenes_are_drawn_from_their_own_seeds_at_the_models_frame():
    a, b = pretrain.draw_scene(3), pretrain.draw_scene(3)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["masks"], b["masks"])
    assert not np.array_equal(pretrain.draw_scene(4)["image"][:5], a["image"][:5])
    assert max(a["image"].shape[:2]) == pretrain.TINY["frame"]
    assert a["masks"].shape[1:] == a["image"].shape[:2] == a["void"].shape
    assert (a["masks"].reshape(len(a["masks"]), -1).sum(1) >= pretrain.MIN_PIXELS).all()


@pytest.mark.parametrize("k", range(6))
def test_the_held_back_classes_come_as_their_parts_and_the_others_whole(k):
    """The same drawing either way; with the split, each held-back object's instances are
    its parts (disjoint, together its visible mask), every other object is one instance."""
    from scripts.data_example import _voc_scene

    whole_image, whole, classes = _voc_scene(np.random.default_rng([9, k]), 200, 150)
    split_image, parts, names = _voc_scene(np.random.default_rng([9, k]), 200, 150, pretrain.SPLIT)
    assert np.array_equal(whole_image, split_image)
    for cls, mask in zip(classes, whole):
        mine = [m for m, n in zip(parts, names) if n == cls and (m & mask).any()]
        if cls in pretrain.SPLIT:
            assert len(mine) >= 2 and np.array_equal(np.any(mine, axis=0), mask)
            assert sum(m.sum() for m in mine) == mask.sum()  # disjoint
        else:
            assert any(np.array_equal(m, mask) for m in mine)
