import numpy as np
import pytest

from helpers import DATA_EXAMPLE, VOCInstanceDataset
from helpers.prompts import PromptConfig, choose_kinds, instance_candidates, sample_prompts


@pytest.fixture(scope="module")
def sample():
    return VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")[0]


def test_points_fall_inside_or_outside_their_instance_and_never_on_void(sample):
    cands = [instance_candidates(m, sample["void"]) for m in sample["masks"]]
    rng = np.random.default_rng(0)
    cfg = PromptConfig(n_pos=2, n_neg=3, use_box=False)
    for _ in range(20):
        p = sample_prompts(cands, cfg, rng)
        assert p["boxes"] is None and p["points"].shape == (len(cands), 5, 2)
        assert p["labels"].tolist() == [[1, 1, 0, 0, 0]] * len(cands)
        for mask, pts, labs in zip(sample["masks"], p["points"], p["labels"]):
            cols, rows = (pts[:, 0] - 0.5).astype(int), (pts[:, 1] - 0.5).astype(int)
            assert (mask[rows, cols] == (labs == 1)).all()
            assert not sample["void"][rows, cols].any()


def test_box_is_tight_on_pixel_edges_and_jitter_stays_in_bounds(sample):
    mask = sample["masks"][0]
    c = instance_candidates(mask, sample["void"])
    ys, xs = np.nonzero(mask)
    assert c.box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    rng = np.random.default_rng(1)
    h, w = mask.shape
    bw, bh = c.box[2] - c.box[0], c.box[3] - c.box[1]
    for _ in range(50):
        b = sample_prompts([c], PromptConfig(use_points=False, box_jitter=0.1), rng)["boxes"][0]
        assert (np.abs(b - c.box) <= 0.1 * np.array([bw, bh, bw, bh]) + 1e-3).all()
        assert 0 <= b[0] < b[2] <= w and 0 <= b[1] < b[3] <= h


def test_prompt_kind_probabilities_are_as_documented():
    rng = np.random.default_rng(2)
    draws = [choose_kinds(PromptConfig(both_prob=0.2), rng) for _ in range(4000)]
    freq = {k: draws.count(k) / len(draws) for k in set(draws)}
    assert abs(freq[(True, True)] - 0.2) < 0.03
    assert abs(freq[(True, False)] - 0.4) < 0.03 and abs(freq[(False, True)] - 0.4) < 0.03
    recipe = {choose_kinds(PromptConfig(), rng) for _ in range(500)}
    assert recipe == {(True, False), (False, True)}  # the seed recipe: always one kind


def test_tiny_instances_still_get_a_foreground_point():
    mask = np.zeros((10, 10), bool)
    mask[4, 7] = True
    c = instance_candidates(mask)
    p = sample_prompts([c], PromptConfig(use_box=False), np.random.default_rng(0))
    assert p["points"][0, 0].tolist() == [7.5, 4.5]
