"""The simulated clicker of the standard interactive-segmentation protocol (RITM,
SimpleClick), used to measure NoC@85/90 and mIoU at k clicks.

Introduced in notebook 03. The next click goes where the current mask is most wrong:
at the pixel farthest from the boundary of the false-negative region or of the
false-positive region, whichever reaches farther; it is positive (foreground) if the
false-negative distance is strictly larger, else negative. Each region is padded by one
pixel before the distance transform (so the image border counts as a boundary), pixels
already clicked are excluded, void pixels are in neither region. With an empty
prediction the first click lands at the object's most interior point.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _inner_distance(region: np.ndarray) -> np.ndarray:
    """Euclidean distance of each region pixel to the nearest pixel outside it, the image
    border counting as outside (the 1-pixel padding)."""
    return ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]


def next_click(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None,
               clicked: np.ndarray | None = None) -> tuple[float, float, bool] | None:  # fmt: skip
    """The next simulated click.

    Args:
        pred: ``H x W`` bool current prediction (all False before the first click).
        gt: ``H x W`` bool ground-truth instance.
        void: ``H x W`` bool pixels that are neither right nor wrong.
        clicked: ``H x W`` bool pixels already clicked (excluded).

    Returns:
        ``(x, y, positive)`` with ``(x, y)`` the clicked pixel's centre in pixels
        (``col + 0.5``, ``row + 0.5``), or None when the prediction has no error left.
    """
    keep = np.ones_like(gt, dtype=bool)
    if void is not None:
        keep &= ~void
    fn = gt & ~pred & keep
    fp = pred & ~gt & keep
    fn_dist = _inner_distance(fn)
    fp_dist = _inner_distance(fp)
    if clicked is not None:
        fn_dist[clicked] = 0
        fp_dist[clicked] = 0
    fn_max, fp_max = fn_dist.max(), fp_dist.max()
    if fn_max == 0 and fp_max == 0:
        return None
    positive = bool(fn_max > fp_max)
    dist = fn_dist if positive else fp_dist
    row, col = np.unravel_index(np.argmax(dist), dist.shape)
    return float(col) + 0.5, float(row) + 0.5, positive


def noc(ious: list[float] | np.ndarray, threshold: float, max_clicks: int = 20) -> int:
    """Number of clicks: the first click count ``k`` (1-based) whose IoU reaches
    ``threshold``; ``max_clicks`` if none does."""
    for k, iou in enumerate(ious[:max_clicks], start=1):
        if iou >= threshold:
            return k
    return max_clicks
