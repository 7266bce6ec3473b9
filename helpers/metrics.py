"""Segmentation metrics: mask IoU (notebook 02; notebooks 03 and 04 build on it)."""

from __future__ import annotations

import numpy as np
import torch


def mask_iou(pred, target, ignore=None) -> float:
    """Intersection over union of two binary masks.

    Args:
        pred, target: ``H x W`` bool (numpy or torch).
        ignore: optional ``H x W`` bool of pixels left out (VOC void, LabPics ignore).

    Returns:
        IoU in [0, 1]; 1.0 when both masks are empty (nothing to find, nothing found).
    """
    pred, target = _np_bool(pred), _np_bool(target)
    if pred.shape != target.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {target.shape}")
    if ignore is not None:
        keep = ~_np_bool(ignore)
        pred, target = pred & keep, target & keep
    union = np.logical_or(pred, target).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, target).sum() / union)


def _np_bool(mask) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    return np.asarray(mask).astype(bool)
