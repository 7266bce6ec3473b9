"""helpers.sam.prompts: first prompts where they belong, the seed's scheme and the SAM
paper's box noise."""

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from oracles import FAST, edge_scenes

from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.voc import VOCInstanceDataset
from helpers.sam.prompts import (
    PromptConfig,
    choose_kinds,
    instance_candidates,
    noisy_box,
    sample_prompts,
)


@st.composite
def instance_scenes(draw):
    h, w = draw(st.integers(4, 40)), draw(st.integers(4, 40))
    y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
    y1, x1 = draw(st.integers(y0 + 1, h)), draw(st.integers(x0 + 1, w))
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    void = draw(arrays(bool, (h, w))) & draw(st.booleans())
    assume((mask & ~void).any())
    return mask, void


@FAST
@given(instance_scenes(), st.integers(0, 2**31))
def test_first_prompts_lie_where_they_belong(scene, seed):
    mask, void = scene
    cands = [instance_candidates(mask, void)]
    cfg = PromptConfig(n_pos=2, n_neg=1, p_points=0, p_box=0, p_both=1, box_noise=0.0)
    p = sample_prompts(cands, cfg, np.random.default_rng(seed))
    ys, xs = np.nonzero(mask)
    assert p["boxes"][0].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]  # tight, inclusive
    for (x, y), lab in zip(p["points"][0], p["labels"][0]):
        assert 0 <= x < mask.shape[1] and 0 <= y < mask.shape[0]
        assert not void[int(y), int(x)]  # never on void
        assert mask[int(y), int(x)] == (lab == 1)


def noisy_box_by_hand(box, shape, rng):
    """The SAM paper's box noise, written out: standard deviation 10% of the side, capped
    at 20 px of SAM's 1024 frame, i.e. 20 * (longest side / 1024) px of the image."""
    h, w = shape
    scale = 1024 / max(h, w)  # original pixels -> SAM's frame
    out = []
    for k, v in enumerate(box):
        side = (box[2] - box[0] + 1) if k % 2 == 0 else (box[3] - box[1] + 1)
        std_frame = min(0.1 * side * scale, 20.0)
        out.append(v + rng.normal() * std_frame / scale)
    x0 = min(max(out[0], 0), w - 1)
    y0 = min(max(out[1], 0), h - 1)
    x1 = max(min(max(out[2], 0), w - 1), x0)
    y1 = max(min(max(out[3], 0), h - 1), y0)
    return np.array([x0, y0, x1, y1])


@FAST
@given(
    st.tuples(st.integers(20, 1200), st.integers(20, 1200)),
    st.floats(0.01, 0.9),
    st.floats(0.01, 0.9),
    st.integers(0, 2**31),
)
def test_box_noise_is_the_papers_in_sams_frame_for_any_aspect_ratio(shape, fw, fh, seed):
    h, w = shape
    bw, bh = max(1, int(fw * w)), max(1, int(fh * h))
    box = np.array([w // 4, h // 4, min(w - 1, w // 4 + bw), min(h - 1, h // 4 + bh)], float)
    got = noisy_box(box, shape, PromptConfig(), np.random.default_rng(seed))
    draws = np.random.default_rng(seed).normal(0.0, 1.0, 4)  # the same four draws
    rng = iter(draws)
    want = noisy_box_by_hand(box, shape, SimpleNamespace(normal=lambda: next(rng)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def sample():
    return VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")[0]


def test_points_fall_inside_or_outside_their_instance_and_never_on_void(sample):
    cands = [instance_candidates(m, sample["void"]) for m in sample["masks"]]
    rng = np.random.default_rng(0)
    cfg = PromptConfig(n_pos=2, n_neg=3, p_points=1, p_box=0)
    for _ in range(20):
        p = sample_prompts(cands, cfg, rng)
        assert p["boxes"] is None and p["points"].shape == (len(cands), 5, 2)
        assert p["labels"].tolist() == [[1, 1, 0, 0, 0]] * len(cands)
        for mask, pts, labs in zip(sample["masks"], p["points"], p["labels"]):
            cols, rows = pts[:, 0].astype(int), pts[:, 1].astype(int)
            assert np.array_equal(pts, np.round(pts))  # pixel indices (SamPredictor's convention)
            assert (mask[rows, cols] == (labs == 1)).all()
            assert not sample["void"][rows, cols].any()


def test_box_is_the_first_and_last_column_and_row(sample):
    mask = sample["masks"][0]
    c = instance_candidates(mask, sample["void"])
    ys, xs = np.nonzero(mask)
    assert c.box.tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
    rng = np.random.default_rng(1)
    tight = sample_prompts([c], PromptConfig(p_points=0, p_box=1, box_noise=0), rng)["boxes"][0]
    assert tight.tolist() == c.box.tolist()


@pytest.mark.parametrize("side", [60, 400])
def test_box_noise_has_a_tenth_of_the_side_as_deviation_capped_at_20_px_of_sams_frame(side):
    """The SAM paper's box noise: standard deviation 10% of the side, at most 20 pixels
    (of SAM's 1024 frame: here the image is 2048 px, so 40 of its pixels)."""
    mask = np.zeros((2048, 2048), bool)
    mask[600 : 600 + side, 600 : 600 + side] = True  # far from the image border
    c = instance_candidates(mask)
    rng = np.random.default_rng(1)
    cfg = PromptConfig(p_points=0, p_box=1, box_noise=0.1, box_noise_max=20)
    shifts = np.stack([sample_prompts([c], cfg, rng)["boxes"][0] - c.box for _ in range(3000)])
    expected = min(0.1 * side, 20 * 2048 / 1024)  # 6 px, or the cap: 40 px
    assert shifts.std() == pytest.approx(expected, rel=0.05)
    assert abs(shifts.mean()) < 0.1 * expected
    assert (np.abs(shifts) > 2 * expected).mean() == pytest.approx(
        0.0455, abs=0.015
    )  # normal tails


def test_noisy_boxes_stay_in_the_image_and_ordered(sample):
    h, w = sample["masks"][0].shape
    rng = np.random.default_rng(4)
    cfg = PromptConfig(p_points=0, p_box=1, box_noise=0.5, box_noise_max=200)
    for mask in sample["masks"]:
        c = instance_candidates(mask, sample["void"])
        for _ in range(200):
            b = sample_prompts([c], cfg, rng)["boxes"][0]
            assert 0 <= b[0] <= b[2] <= w - 1 and 0 <= b[1] <= b[3] <= h - 1


def test_the_seed_scheme_reproduces_the_seeds_own_nested_drops():
    """The oracle is the seed's code, transcribed: with both kinds on,
    if random() < 0.5: (if random() < 0.25: drop points  elif random() > 0.75: drop box)."""
    rng = np.random.default_rng(2)
    n = 40000
    counts = {(True, False): 0, (False, True): 0, (True, True): 0}
    for _ in range(n):
        points, box = True, True
        if rng.random() < 0.5:
            if rng.random() < 0.25:
                points = False
            elif rng.random() > 0.75:
                box = False
        counts[(points, box)] += 1
    cfg = PromptConfig.seed()
    draws = [choose_kinds(cfg, rng) for _ in range(n)]
    for kinds, expected in (
        (((True, False)), cfg.p_points),
        ((False, True), cfg.p_box),
        ((True, True), cfg.p_both),
    ):
        assert abs(counts[kinds] / n - expected) < 0.01, kinds
        assert abs(draws.count(kinds) / n - expected) < 0.01, kinds
    assert (cfg.p_points, cfg.p_box, cfg.p_both) == (0.09375, 0.125, 0.78125)
    assert (cfg.n_pos, cfg.n_neg, cfg.box_noise) == (1, 1, 0.0)


def test_the_course_default_is_the_papers_first_prompt():
    cfg = PromptConfig()
    assert (cfg.n_pos, cfg.n_neg, cfg.p_points, cfg.p_box, cfg.p_both) == (1, 0, 0.5, 0.5, 0.0)
    rng = np.random.default_rng(3)
    draws = [choose_kinds(cfg, rng) for _ in range(4000)]
    assert (
        set(draws) == {(True, False), (False, True)}
        and abs(draws.count((True, False)) / 4000 - 0.5) < 0.03
    )


def test_bad_probabilities_are_clear_errors():
    with pytest.raises(ValueError, match="sum to 1"):
        PromptConfig(p_points=0.5, p_box=0.4, p_both=0.0)
    with pytest.raises(ValueError, match="n_pos \\+ n_neg"):
        PromptConfig(n_pos=0, n_neg=0)


def test_tiny_instances_still_get_a_foreground_point():
    mask = np.zeros((10, 10), bool)
    mask[4, 7] = True
    c = instance_candidates(mask)
    p = sample_prompts([c], PromptConfig(p_points=1, p_box=0), np.random.default_rng(0))
    assert p["points"][0, 0].tolist() == [7.0, 4.0]


SCHEMES = {
    "sam": PromptConfig(),
    "seed": PromptConfig.seed(),
    "points": PromptConfig(n_pos=2, n_neg=2, p_points=1, p_box=0),
    "box": PromptConfig(p_points=0, p_box=1),
}


@FAST
@given(edge_scenes(), st.integers(0, 2**31), st.sampled_from(sorted(SCHEMES)))
def test_every_scheme_prompts_every_edge_instance_where_it_belongs(scene, seed, scheme):
    """One pixel, the whole image, bands on each border, rings, touching instances:
    every first prompt is a valid prompt of its own instance (a negative point only
    where background exists), with every scheme the course trains with."""
    masks, void = scene
    h, w = void.shape
    cands = [instance_candidates(m, void) for m in masks]
    p = sample_prompts(cands, SCHEMES[scheme], np.random.default_rng(seed))
    assert p["points"] is not None or p["boxes"] is not None
    if p["points"] is not None:
        assert p["points"].shape[:2] == p["labels"].shape and len(p["labels"]) == len(masks)
        for mask, points, labels in zip(masks, p["points"], p["labels"]):
            assert (labels == 1).sum() == SCHEMES[scheme].n_pos
            for (x, y), lab in zip(points, labels):
                assert 0 <= x < w and 0 <= y < h and x == int(x) and y == int(y)
                assert not void[int(y), int(x)]
                assert mask[int(y), int(x)] == (lab == 1)
    if p["boxes"] is not None:
        for mask, (x0, y0, x1, y1) in zip(masks, p["boxes"]):
            assert 0 <= x0 <= x1 <= w - 1 and 0 <= y0 <= y1 <= h - 1
            if SCHEMES[scheme].box_noise == 0:
                ys, xs = np.nonzero(mask)
                assert [x0, y0, x1, y1] == [xs.min(), ys.min(), xs.max(), ys.max()]
