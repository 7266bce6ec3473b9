"""Simulated clicks: the evaluation protocol's clicker and the training clicker (notebook 03),
in pixel indices ``(x, y)`` = (column, row).

**Evaluation** (:func:`next_click`, RITM's and SimpleClick's protocol, for NoC and
mIoU@k): the pixel farthest from the boundary of the missed or the spurious region,
whichever is deeper (positive if the missed one is strictly deeper); each region padded
by one pixel first (the image border is a boundary), clicked pixels excluded, void in
neither. Deterministic. **Training** (:func:`error_clicks`, the SAM paper's, appendix A):
a point drawn uniformly from the error region, positive in the missed part, negative in
the spurious part, in the low-res frame where the loss lives.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


def inner_distance(region: np.ndarray) -> np.ndarray:
    """Euclidean distance of each pixel of ``region`` (``H x W`` bool) to the nearest pixel
    outside it, the image border counting as outside: the region is padded by one pixel
    first, as RITM's clicker does. Computed as RITM computes it, with OpenCV's exact
    Euclidean transform (``cv2.distanceTransform``, ``DIST_L2``, ``DIST_MASK_PRECISE``).
    Returns ``H x W`` float32, 0 outside the region."""
    padded = np.pad(region.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def next_click(
    pred: np.ndarray,
    gt: np.ndarray,
    void: np.ndarray | None = None,
    clicked: np.ndarray | None = None,
) -> tuple[float, float, bool] | None:
    """The protocol's next click.

    Args:
        pred: ``H x W`` bool current prediction (all False before the first click).
        gt: ``H x W`` bool ground-truth instance.
        void: ``H x W`` bool pixels that are neither right nor wrong.
        clicked: ``H x W`` bool pixels already clicked (excluded).

    Returns:
        ``(x, y, positive)``, ``(x, y)`` the clicked pixel's index (column, row) as
        floats, or None when the prediction has no error left.
    """
    keep = np.ones_like(gt, dtype=bool)
    if void is not None:
        keep &= ~void
    fn = gt & ~pred & keep
    fp = pred & ~gt & keep
    fn_dist = inner_distance(fn)
    fp_dist = inner_distance(fp)
    if clicked is not None:
        fn_dist[clicked] = 0
        fp_dist[clicked] = 0
    fn_max, fp_max = fn_dist.max(), fp_dist.max()
    if fn_max == 0 and fp_max == 0:
        return None
    positive = bool(fn_max > fp_max)
    dist = fn_dist if positive else fp_dist
    row, col = np.unravel_index(np.argmax(dist), dist.shape)
    return float(col), float(row), positive


def error_clicks(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The training clicker: one cell per mask, uniform over its error region.

    Args:
        logits: ``N x h x w`` current predictions (logits; > 0 is inside).
        targets: ``N x h x w`` bool ground truth; valid: ``h x w`` bool cells that count.
        rng: the draws (a generator seeded per epoch keeps training resumable).

    Returns:
        ``(rows, cols, positive, has_error)``, each ``N``: the chosen cell, True where it
        lies in the missed part (a foreground click), and False in ``has_error`` where a
        mask has no error left (its row/col are 0 and must not be used as a click).
    """
    pred = (logits.detach() > 0).cpu().numpy()
    gt = targets.bool().cpu().numpy()
    ok = valid.bool().cpu().numpy()
    n, h, w = gt.shape
    rows, cols = np.zeros(n, np.int64), np.zeros(n, np.int64)
    positive, has = np.zeros(n, bool), np.zeros(n, bool)
    for i in range(n):
        fn = gt[i] & ~pred[i] & ok
        err = np.flatnonzero((fn | (pred[i] & ~gt[i] & ok)).ravel())
        if err.size == 0:
            continue
        k = int(rng.choice(err))
        rows[i], cols[i] = divmod(k, w)
        positive[i], has[i] = fn.ravel()[k], True
    return rows, cols, positive, has


def noc(ious: list[float] | np.ndarray, threshold: float, max_clicks: int = 20) -> int:
    """Number of clicks: the first click count ``k`` (1-based) whose IoU reaches
    ``threshold``; ``max_clicks`` if none does."""
    for k, iou in enumerate(ious[:max_clicks], start=1):
        if iou >= threshold:
            return k
    return max_clicks
