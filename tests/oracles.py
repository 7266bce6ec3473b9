"""Plain second implementations of what the course computes, for the tests to compare the
package against: loops over pixels, no vectorisation, none of the package's helpers. And
the hypothesis strategies that generate their inputs: non-square images in either
orientation, from one pixel up."""

import math

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def masks(h_max=12, w_max=15):
    """Boolean H x W masks, H and W drawn separately (non-square, either orientation)."""
    shapes = st.tuples(st.integers(1, h_max), st.integers(1, w_max))
    return shapes.flatmap(lambda s: arrays(bool, s))


def same_shape(n, h_max=12, w_max=15):
    """``n`` boolean masks of one H x W, H and W drawn separately."""
    shapes = st.tuples(st.integers(1, h_max), st.integers(1, w_max))
    return shapes.flatmap(lambda s: st.tuples(*[arrays(bool, s) for _ in range(n)]))


def iou_by_hand(a, b, ignore=None):
    """IoU counted pixel by pixel, ``ignore`` pixels on neither side; 1 for two empties."""
    inter = union = 0
    for r in range(a.shape[0]):
        for c in range(a.shape[1]):
            if ignore is not None and ignore[r, c]:
                continue
            inter += bool(a[r, c]) and bool(b[r, c])
            union += bool(a[r, c]) or bool(b[r, c])
    return 1.0 if union == 0 else inter / union


def distances_by_hand(region):
    """Distance of each pixel of ``region`` to the nearest pixel outside it, the image
    border counting as outside (a one-pixel frame of outside around the image)."""
    h, w = region.shape
    outside = [(r, c) for r in range(-1, h + 1) for c in range(-1, w + 1)]
    outside = [(r, c) for r, c in outside if not (0 <= r < h and 0 <= c < w and region[r, c])]
    dist = np.zeros((h, w))
    for r in range(h):
        for c in range(w):
            if region[r, c]:
                dist[r, c] = min(math.hypot(r - orr, c - oc) for orr, oc in outside)
    return dist


def next_click_by_hand(pred, gt, void, clicked):
    """The protocol's next click: the deepest pixel of the missed or the spurious region
    (the first in reading order among ties), positive when the missed one is deeper."""
    fn = gt & ~pred & ~void
    fp = pred & ~gt & ~void
    dfn, dfp = distances_by_hand(fn), distances_by_hand(fp)
    dfn[clicked], dfp[clicked] = 0, 0
    if dfn.max() == 0 and dfp.max() == 0:
        return None
    positive = dfn.max() > dfp.max()
    d = dfn if positive else dfp
    best = None
    for r in range(d.shape[0]):
        for c in range(d.shape[1]):
            if best is None or d[r, c] > d[best]:
                best = (r, c)
    return float(best[1]), float(best[0]), bool(positive)


def noc_by_hand(row, threshold, max_clicks):
    """The first click count whose IoU reaches ``threshold``, ``max_clicks`` if none."""
    for k in range(max_clicks):
        if row[k] >= threshold:
            return k + 1
    return max_clicks


EDGE_KINDS = ("pixel", "whole", "top", "bottom", "left", "right", "ring", "touching", "box")


@st.composite
def edge_scenes(draw, h_max=24, w_max=24):
    """``(masks N x H x W bool, void H x W bool)``: instances of the kinds that break code
    (one pixel, the whole image, a band along each border, a ring around a hole, two
    instances that touch, a random box), 1 to 3 per scene, on non-square images from one
    pixel up, with or without void (never all of an instance)."""
    h, w = draw(st.integers(1, h_max)), draw(st.integers(1, w_max))
    masks = []
    for kind in draw(st.lists(st.sampled_from(EDGE_KINDS), min_size=1, max_size=3)):
        m = np.zeros((h, w), bool)
        t = draw(st.integers(1, max(1, min(h, w) // 2)))
        if kind == "pixel":
            m[draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))] = True
        elif kind == "whole":
            m[:] = True
        elif kind == "top":
            m[:t] = True
        elif kind == "bottom":
            m[h - t :] = True
        elif kind == "left":
            m[:, :t] = True
        elif kind == "right":
            m[:, w - t :] = True
        elif kind == "ring":
            m[:] = True
            m[t : h - t, t : w - t] = False  # a hole when the image is big enough
        elif kind == "touching":  # two instances sharing an edge
            cut = draw(st.integers(1, w)) if w > 1 else 1
            other = np.zeros_like(m)
            m[:, :cut], other[:, cut:] = True, True
            if other.any():
                masks.append(other)
        else:
            y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
            m[y0 : draw(st.integers(y0 + 1, h)), x0 : draw(st.integers(x0 + 1, w))] = True
        masks.append(m)
    void = draw(arrays(bool, (h, w))) & draw(st.booleans())
    void &= ~np.logical_or.reduce(masks)  # void around the objects, as VOC's border
    return np.stack(masks), void
