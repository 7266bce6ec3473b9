"""helpers.sam.clicks: the protocol's clicker against a brute-force one (tests/oracles.py)
and on hand-made cases, the training clicker, and NoC."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import FAST, distances_by_hand, next_click_by_hand, noc_by_hand, same_shape

from helpers.sam.clicks import error_clicks, next_click, noc


@settings(max_examples=120, deadline=None)
@given(same_shape(4, h_max=10, w_max=13))
def test_the_clicker_is_the_deepest_error_pixel_by_brute_force(arrs):
    pred, gt, void, clicked = arrs
    got = next_click(pred, gt, void, clicked)
    want = next_click_by_hand(pred, gt, void, clicked)
    if want is None:
        assert got is None
        return
    assert got is not None
    assert got[2] == want[2]
    # the same depth (ties: any pixel of the deepest; the package takes the first)
    region = (gt & ~pred if want[2] else pred & ~gt) & ~void
    depth = distances_by_hand(region)
    depth[clicked] = 0
    x, y = int(got[0]), int(got[1])
    assert depth[y, x] == pytest.approx(depth.max())
    assert got[:2] == want[:2]


def test_a_tie_between_missed_and_spurious_is_a_negative_click():
    gt = np.zeros((5, 9), bool)
    pred = np.zeros((5, 9), bool)
    gt[2, 1] = True  # a missed pixel, depth 1
    pred[2, 7] = True  # a spurious pixel, depth 1
    assert next_click(pred, gt)[2] is False


@FAST
@given(st.lists(st.floats(0, 1), min_size=1, max_size=25), st.integers(1, 25))
def test_noc_is_the_first_click_reaching_the_threshold(ious, max_clicks):
    for t in (0.85, 0.9):
        assert noc(ious, t, max_clicks) == noc_by_hand(ious + [0.0] * 25, t, max_clicks)
    assert noc(ious, 0.9, max_clicks) >= noc(ious, 0.85, max_clicks)


@FAST
@given(same_shape(3, h_max=9, w_max=14), st.integers(0, 2**31))
def test_training_clicks_fall_in_the_error_region_with_the_right_sign(abv, seed):
    pred, target, valid = abv
    logits = torch.from_numpy(np.where(pred, 2.0, -2.0))[None]
    rows, cols, positive, has = error_clicks(
        logits, torch.from_numpy(target)[None], torch.from_numpy(valid), np.random.default_rng(seed)
    )
    missed = target & ~pred & valid
    spurious = pred & ~target & valid
    assert bool(has[0]) == bool((missed | spurious).any())
    if has[0]:
        r, c = int(rows[0]), int(cols[0])
        assert missed[r, c] or spurious[r, c]
        assert bool(positive[0]) == bool(missed[r, c])


def test_first_click_is_the_most_interior_pixel_of_the_object():
    gt = np.zeros((21, 31), bool)
    gt[5:16, 4:27] = True  # 11 rows x 23 cols: the centre row 10 is farthest from the border
    x, y, positive = next_click(np.zeros_like(gt), gt)
    assert positive and y == 10 and 9 <= x <= 21
    # a ring-shaped object: the click is in the thick part, never in the hole
    ring = np.zeros((40, 40), bool)
    ring[5:35, 5:35] = True
    ring[10:30, 10:20] = False
    x, y, positive = next_click(np.zeros_like(ring), ring)
    assert positive and ring[int(y), int(x)] and x > 20


def test_false_positive_region_that_reaches_farther_gets_a_negative_click():
    gt = np.zeros((30, 30), bool)
    gt[10:20, 10:20] = True
    pred = gt.copy()
    pred[0:30, 22:30] = True  # big false positive band: 30 x 8
    pred[10:12, 10:12] = False  # small false negative
    x, y, positive = next_click(pred, gt)
    assert not positive and 22 <= x < 30 and pred[int(y), int(x)] and not gt[int(y), int(x)]


def test_a_tie_between_missed_and_spurious_regions_is_a_negative_click():
    gt = np.zeros((20, 30), bool)
    gt[5:10, 2:7] = True  # 5 x 5 object, all missed
    pred = np.zeros_like(gt)
    pred[5:10, 20:25] = True  # 5 x 5 spurious blob: the same depth
    x, y, positive = next_click(pred, gt)
    assert not positive and pred[int(y), int(x)]


def test_image_border_counts_as_boundary_thanks_to_padding():
    gt = np.zeros((20, 20), bool)
    gt[:, :6] = True  # touches the left, top and bottom borders
    x, y, positive = next_click(np.zeros_like(gt), gt)
    assert positive and x in (2, 3)  # middle of the 6-column band, not column 0


def test_void_pixels_are_neither_error():
    gt = np.zeros((20, 20), bool)
    gt[5:15, 5:15] = True
    void = np.zeros_like(gt)
    void[5:15, 5:15] = True  # the whole object is void
    assert next_click(np.zeros_like(gt), gt, void) is None


def test_a_prediction_on_void_is_no_spurious_region():
    """A prediction that spills over void (pixels that count nowhere) is not wrong there:
    the missed part of the object gets the click, though the spill reaches deeper."""
    gt = np.zeros((30, 30), bool)
    gt[2:8, 2:8] = True  # missed entirely: depth 3
    void = np.zeros_like(gt)
    void[10:30, 10:30] = True
    pred = void.copy()  # all of it on void: depth 10 if it counted
    x, y, positive = next_click(pred, gt, void)
    assert positive and gt[int(y), int(x)]


def test_clicked_pixels_are_excluded_from_both_regions():
    gt = np.zeros((9, 9), bool)
    gt[3:6, 3:6] = True
    clicked = np.zeros_like(gt)
    clicked[4, 4] = True  # the centre was clicked already
    x, y, _ = next_click(np.zeros_like(gt), gt, clicked=clicked)
    assert (int(y), int(x)) != (4, 4) and gt[int(y), int(x)]
    # a spurious region whose deepest pixel was clicked: the click moves within it
    pred = np.zeros((9, 9), bool)
    pred[3:6, 3:6] = True
    x, y, positive = next_click(pred, np.zeros_like(pred), clicked=clicked)
    assert not positive and (int(y), int(x)) != (4, 4) and pred[int(y), int(x)]


def test_perfect_prediction_needs_no_click_and_noc_counts_from_one():
    gt = np.zeros((5, 5), bool)
    gt[1:4, 1:4] = True
    assert next_click(gt, gt) is None
    assert noc([0.5, 0.86, 0.95], 0.85) == 2
    assert noc([0.5, 0.85, 0.95], 0.85) == 2  # exactly at the threshold: reached
    assert noc([0.5, 0.86, 0.95], 0.90) == 3
    assert noc([0.5, 0.6], 0.90, max_clicks=20) == 20


def test_training_clicks_are_uniform_over_the_error_region_and_labelled_by_it():
    h = w = 16
    targets = torch.zeros(2, h, w, dtype=torch.bool)
    targets[0, 2:8, 2:8] = True  # instance 0: 36 cells, half of them missed
    logits = torch.full((2, h, w), -5.0)
    logits[0, 2:5, 2:8] = 5.0  # 18 cells found, 18 missed ...
    logits[0, 10:13, 10:16] = 5.0  # ... and 18 spurious
    targets[1, 0:4, 0:4] = True
    logits[1, 0:4, 0:4] = 5.0  # instance 1: perfect
    valid = torch.ones(h, w, dtype=torch.bool)
    valid[11, :] = False  # 6 of the spurious cells count nowhere ...
    valid[6, :] = False  # ... nor 6 of the missed ones
    rng = np.random.default_rng(0)
    hits = np.zeros((h, w))
    for _ in range(3000):
        rows, cols, positive, has = error_clicks(logits, targets, valid, rng)
        assert has.tolist() == [True, False]
        r, c = rows[0], cols[0]
        missed = bool(targets[0, r, c]) and not bool(logits[0, r, c] > 0)
        spurious = bool(logits[0, r, c] > 0) and not bool(targets[0, r, c])
        assert (missed or spurious) and valid[r, c] and positive[0] == missed
        hits[r, c] += 1
    region = hits[hits > 0]
    assert len(region) == 12 + 12  # every valid error cell, none else
    assert region.min() > 0.5 * 3000 / 24 and region.max() < 1.5 * 3000 / 24  # uniform


def test_the_distance_transform_is_the_exact_euclidean_one():
    """OpenCV's precise transform, as RITM uses it, equals SciPy's exact Euclidean
    transform (the oracle) on random regions, image border counted as outside."""
    from scipy import ndimage

    from helpers.sam.clicks import inner_distance

    rng = np.random.default_rng(0)
    for t in range(60):
        h, w = rng.integers(5, 120, 2)
        region = rng.random((h, w)) < rng.uniform(0.3, 0.97)
        if t % 2:
            region = ndimage.binary_opening(region)
        oracle = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
        np.testing.assert_allclose(inner_distance(region), oracle, atol=1e-5)
