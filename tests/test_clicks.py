"""The click simulator on masks whose answer is known."""

import numpy as np

from helpers.clicks import next_click, noc


def test_first_click_is_the_most_interior_point_of_the_object():
    gt = np.zeros((21, 31), bool)
    gt[5:16, 4:27] = True  # 11 rows x 23 cols: the centre row 10 is farthest from the border
    x, y, positive = next_click(np.zeros_like(gt), gt)
    assert positive and y == 10.5 and 9.5 <= x <= 20.5
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


def test_image_border_counts_as_boundary_thanks_to_padding():
    gt = np.zeros((20, 20), bool)
    gt[:, :6] = True  # touches the left, top and bottom borders
    x, y, positive = next_click(np.zeros_like(gt), gt)
    assert positive and x in (2.5, 3.5)  # middle of the 6-column band, not column 0


def test_void_pixels_are_neither_error():
    gt = np.zeros((20, 20), bool)
    gt[5:15, 5:15] = True
    void = np.zeros_like(gt)
    void[5:15, 5:15] = True  # the whole object is void
    assert next_click(np.zeros_like(gt), gt, void) is None


def test_clicked_pixels_are_excluded():
    gt = np.zeros((9, 9), bool)
    gt[3:6, 3:6] = True
    clicked = np.zeros_like(gt)
    clicked[4, 4] = True  # the centre was clicked already
    x, y, _ = next_click(np.zeros_like(gt), gt, clicked=clicked)
    assert (int(y), int(x)) != (4, 4) and gt[int(y), int(x)]


def test_perfect_prediction_needs_no_click_and_noc_counts_from_one():
    gt = np.zeros((5, 5), bool)
    gt[1:4, 1:4] = True
    assert next_click(gt, gt) is None
    assert noc([0.5, 0.86, 0.95], 0.85) == 2
    assert noc([0.5, 0.86, 0.95], 0.90) == 3
    assert noc([0.5, 0.6], 0.90, max_clicks=20) == 20
