"""How much of a small object's mask survives a mask head's RoI features, each way of
pooling measured apart (notebook 02): RoI Pool's box rounding and RoI Align's half-cell
shift (``aligned=False``, torchvision's Mask R-CNN) against the exact ``aligned=True``.
Geometry only: the "features" are the object's own mask, averaged over cells."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import paste_masks_in_image

from ..metrics import mask_iou
from .roi_align import roi_align, roi_pool, round_half_away


def mask_roundtrip_iou(
    mask: Tensor, box, stride: int, pool: str = "align", output_size: int = 14
) -> float:
    """How much of an object's shape survives a mask head's RoI features, geometry only.
    The "feature map" is the mask averaged over ``stride x stride`` blocks (a perfect
    backbone's); the RoI's ``output_size``-square features are taken one of four ways,
    pasted into the box as torchvision's ``paste_masks_in_image`` does, thresholded at 0.5.

    Args:
        mask: ``H x W`` bool, ``H`` and ``W`` multiples of ``stride``.
        box: ``(x1, y1, x2, y2)`` the object's box in pixels (pixel-edge convention).
        pool: ``"pool"``, RoI Pool (box and bins rounded to cells, max); ``"align_false"``,
            RoI Align ``aligned=False`` as torchvision's Mask R-CNN (each cell read half a
            cell off); ``"align_rounded"``, ``aligned=True`` on the box rounded as RoI Pool
            rounds it, pasted into the exact box; ``"align"``, ``aligned=True`` exactly.

    Returns:
        IoU of the recovered mask with ``mask``."""
    feat = torch.nn.functional.avg_pool2d(mask[None, None].double(), stride)
    rois = torch.tensor([[0.0, *map(float, box)]], dtype=torch.float64)
    if pool in ("align", "align_false"):
        crop = roi_align(feat, rois, output_size, 1 / stride, 2, aligned=pool == "align")
    elif pool == "align_rounded":
        x1, y1, x2, y2 = (round_half_away(v / stride) for v in map(float, box))
        cells = torch.tensor([[0.0, x1, y1, x2 + 1, y2 + 1]], dtype=torch.float64) * stride
        cells[0, 0] = 0
        crop = roi_align(feat, cells, output_size, 1 / stride, 2, aligned=True)
    elif pool == "pool":
        crop = roi_pool(feat, rois, output_size, 1 / stride)
    else:
        raise ValueError(
            f"pool must be 'pool', 'align_false', 'align_rounded' or 'align', got {pool!r}"
        )
    pasted = paste_masks_in_image(crop.float(), rois[:, 1:].float(), tuple(mask.shape), padding=1)
    return mask_iou(pasted[0, 0] > 0.5, mask)


def roundtrip_experiment(
    radii=(6, 12, 24, 48), n_objects: int = 20, stride: int = 8, size: int = 256, seed: int = 0
) -> dict:
    """Mean :func:`mask_roundtrip_iou` of each way of pooling (``pool``, ``align_false``,
    ``align_rounded``, ``align``) for ellipses of each half-height in ``radii`` (width
    1.3x), at random sub-pixel positions. Against the exact ``align``, ``align_false``
    isolates the half-cell shift and ``align_rounded`` the box rounding.

    Returns:
        ``{radius: {pool: mean IoU}}``.
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    table = {}
    for r in radii:
        ious = {"pool": [], "align_false": [], "align_rounded": [], "align": []}
        for _ in range(n_objects):
            cx, cy = (torch.rand(2, generator=g) * (size - 4 * r) + 2 * r).tolist()
            mask = ((xx - cx) / (1.3 * r)) ** 2 + ((yy - cy) / r) ** 2 <= 1
            ys, xs = torch.nonzero(mask, as_tuple=True)
            box = (xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1)
            for pool in ious:
                ious[pool].append(mask_roundtrip_iou(mask, box, stride, pool))
        table[r] = {pool: sum(v) / len(v) for pool, v in ious.items()}
    return table
