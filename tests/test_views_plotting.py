"""helpers.views.plotting: the widget's mask drawing against a plain definition of an edge
over generated masks, and labels that never overlap."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from helpers.views.plotting import MASK_COLOUR, draw_mask_rgb, edge_band, overlay_masks


@st.composite
def drawn_masks(draw):
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["noise", "blobs", "empty", "full"]))
    if kind == "noise":
        return rng.random((h, w)) < draw(st.floats(0.05, 0.95))
    if kind == "empty":
        return np.zeros((h, w), bool)
    if kind == "full":
        return np.ones((h, w), bool)
    m = np.zeros((h, w), bool)
    for _ in range(draw(st.integers(1, 4))):  # rectangles, some with a hole
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = rng.integers(y0, h) + 1, rng.integers(x0, w) + 1
        m[y0:y1, x0:x1] = True
        if y1 - y0 > 4 and x1 - x0 > 4:
            m[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2] = False
    return m


def chessboard_distance_to(region: np.ndarray) -> np.ndarray:
    """Per pixel, the chessboard distance to the nearest pixel of ``region``, the area
    beyond the image counting as part of it (padded by a wide frame)."""
    pad = 50
    framed = np.pad(region, pad, constant_values=True)
    return ndimage.distance_transform_cdt(~framed, metric="chessboard")[pad:-pad, pad:-pad]


@settings(max_examples=300, deadline=None)
@given(drawn_masks(), st.integers(1, 8))
def test_the_band_holds_every_edge_pixel_and_nothing_far_from_an_edge(mask, width):
    band = edge_band(mask, width)
    assert band.shape == mask.shape and band.dtype == bool
    # a pixel is on the edge when a 4-neighbour is of the other kind (beyond the border:
    # background)
    padded = np.pad(mask, 1)
    neighbours = [padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
    differs = np.zeros_like(mask)
    for n in neighbours:
        differs |= n != mask
    if width >= 2:  # at least one pixel each side of the edge
        assert band[differs].all()
    else:  # width 1: inside only
        assert band[differs & mask].all()
    # nothing further from the other kind than its half of the band
    outer, inner = width // 2, width - width // 2
    to_background = chessboard_distance_to(~mask)  # from a mask pixel
    far_inside = mask & (to_background > inner)
    # background pixels: distance to the mask, the frame beyond the image not counting
    to_mask = (
        ndimage.distance_transform_cdt(~mask, metric="chessboard")
        if mask.any()
        else np.full(mask.shape, 10**6)
    )
    far_outside = ~mask & (to_mask > outer)
    assert not band[far_inside].any()
    assert not band[far_outside].any()
    if not mask.any():
        assert not band.any()


@settings(max_examples=100, deadline=None)
@given(drawn_masks())
def test_the_drawn_mask_is_the_overlay_then_the_rim_then_the_contour(mask):
    h, w = mask.shape
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    before = image.copy()
    out = draw_mask_rgb(image, mask)
    np.testing.assert_array_equal(image, before)  # drawn on a copy
    assert out.shape == image.shape and out.dtype == np.uint8
    expected = overlay_masks(image, mask[None], alpha=0.4, colours=[MASK_COLOUR])
    if mask.any():
        width = max(2, round(max(h, w) / 200))
        rim, contour = edge_band(mask, width + 2), edge_band(mask, width)
        expected[rim] = 0
        expected[contour] = MASK_COLOUR
        assert contour.any() and (out[contour] == MASK_COLOUR).all()
    np.testing.assert_array_equal(out, expected)


@settings(max_examples=100, deadline=None)
@given(st.lists(drawn_masks(), min_size=1, max_size=3), st.floats(0.0, 1.0), st.booleans())
def test_overlay_blends_each_mask_in_turn_to_the_nearest_value(stack, alpha, outlined):
    """A plain per-pixel blend, mask after mask (later over earlier), as the oracle."""
    from helpers.views.plotting import INSTANCE_COLOURS

    h, w = stack[0].shape
    stack = np.stack([np.resize(m, (h, w)) for m in stack])
    rng = np.random.default_rng(len(stack))
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    outline = rng.random((h, w)) < 0.1 if outlined else None
    out = overlay_masks(image, stack, alpha=alpha, outline=outline)
    expected = image.astype(np.float64)
    for k, m in enumerate(stack):
        colour = np.asarray(INSTANCE_COLOURS[k % len(INSTANCE_COLOURS)], np.float64)
        for y, x in zip(*np.nonzero(m)):
            # each step is rounded to uint8, as the image the next mask is painted on
            expected[y, x] = np.round(np.round(expected[y, x]) * (1 - alpha) + colour * alpha)
    if outlined:
        expected[outline] = (255, 255, 255)
    assert np.abs(out.astype(np.float64) - expected).max() <= 1.0
    untouched = ~stack.any(0) & (~outline if outlined else True)
    np.testing.assert_array_equal(out[untouched], image[untouched])


def test_labels_of_crowded_detections_never_overlap():
    from helpers.views.plotting import stack_labels

    anchors = [(100, 80), (104, 84), (100, 90), (300, 80), (98, 120)]
    sizes = [(40, 18)] * 5
    rects = stack_labels(anchors, sizes)
    for i, a in enumerate(rects):
        assert a[0] == anchors[i][0] and a[1] >= anchors[i][1]  # below its anchor, never left
        for b in rects[:i]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    assert rects[3] == (300, 80, 340, 98)  # a label with room stays at its anchor
    # a label pushed down moves by its height plus the gap: one pixel between labels
    assert rects[1][1] == 84 + 18 + 1 and rects[1][1] - rects[0][3] >= 1


def test_detection_labels_are_sized_for_display():
    from helpers.views.plotting import label_font

    assert label_font((1080, 1920)).size == round(1080 / 28)  # ~39 px on a LabPics photo
    assert label_font((200, 300)).size == 14  # never below 14 px
