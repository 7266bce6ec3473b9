"""RoI Pool and RoI Align from scratch, in plain PyTorch, equal to torchvision's (notebook 02).

Same signatures, box formats and results as ``torchvision.ops.roi_align`` /
``roi_pool`` (the tests compare them over many random cases), differentiable with respect
to ``input`` by autograd; as in torchvision, no gradient flows to the boxes.

- ``input``: ``N x C x H x W`` feature map, float.
- ``boxes``: ``K x 5`` rows ``(batch_index, x1, y1, x2, y2)``, or a list of ``N``
  ``L_i x 4`` rows ``(x1, y1, x2, y2)`` for image ``i``; in image pixels, mapped onto the
  feature grid by ``spatial_scale`` (1 / stride).
- On the feature grid, ``input[..., r, c]`` sits at ``(x, y) = (c, r)`` for RoI Align
  without ``aligned``; ``aligned=True`` shifts the box by -0.5 so that its edges fall on
  pixel edges.
- Output: ``K x C x PH x PW``, ``input``'s dtype.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def _as_rois(boxes: Tensor | list[Tensor], dtype) -> Tensor:
    """``K x 5`` ``(batch_index, x1, y1, x2, y2)`` from either box format (detached)."""
    if isinstance(boxes, (list, tuple)):
        for b in boxes:
            if b.ndim != 2 or b.shape[1] != 4:
                raise ValueError(f"each box tensor in the list must be L x 4, got {tuple(b.shape)}")
        rois = (
            torch.cat(
                [torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)]
            )
            if len(boxes)
            else torch.zeros(0, 5)
        )
    else:
        rois = boxes
        if rois.ndim != 2 or rois.shape[1] != 5:
            raise ValueError(
                f"boxes must be K x 5 or a list of L x 4 tensors, got {tuple(rois.shape)}"
            )
    return rois.detach().to(dtype)


def _pair(output_size) -> tuple[int, int]:
    if isinstance(output_size, int):
        return output_size, output_size
    ph, pw = output_size
    return int(ph), int(pw)


def _axis_samples(start: Tensor, length: Tensor, bins: int, grid: Tensor, size: int):
    """Sample points of one axis for every RoI, with torchvision's edge rules applied.

    Args:
        start, length: ``K`` RoI start and length on this axis (feature-grid units).
        bins: pooled size on this axis (PH or PW).
        grid: ``K`` samples per bin (int64, >= 0).
        size: feature-map size on this axis (H or W).

    Returns:
        ``lo, hi`` (``K x bins x G`` int64 indices), ``w_lo, w_hi`` (``K x bins x G``
        weights; 0 for padding samples beyond a RoI's own ``grid`` and for samples
        outside ``[-1, size]``), where ``G = max(grid)``.
    """
    g_max = max(int(grid.max()), 1) if grid.numel() else 1
    k = start.shape[0]
    bin_size = (length / bins)[:, None, None]
    gridf = grid.clamp(min=1).to(start.dtype)[:, None, None]
    b = torch.arange(bins, dtype=start.dtype)[None, :, None]
    i = torch.arange(g_max, dtype=start.dtype)[None, None, :]
    # the centre of sub-cell i of bin b: start + b * bin + (i + 0.5) * bin / grid
    pos = start[:, None, None] + b * bin_size + (i + 0.5) * bin_size / gridf
    valid = (i < grid[:, None, None]) & (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0)
    lo = pos.floor().to(torch.int64)
    at_edge = lo >= size - 1
    lo = torch.where(at_edge, torch.full_like(lo, size - 1), lo)
    hi = torch.where(at_edge, lo, lo + 1)
    pos = torch.where(at_edge, lo.to(pos.dtype), pos)
    frac = pos - lo.to(pos.dtype)
    zero = torch.zeros((), dtype=pos.dtype)
    w_lo = torch.where(valid, 1 - frac, zero)
    w_hi = torch.where(valid, frac, zero)
    return lo.expand(k, bins, g_max), hi.expand(k, bins, g_max), w_lo, w_hi


def _axis_matrix(lo: Tensor, hi: Tensor, w_lo: Tensor, w_hi: Tensor, size: int):
    """One axis of the separable form: which feature rows (or columns) each RoI reads,
    and the ``P x M`` matrix that turns them into its ``P`` output rows.

    Each RoI reads either its contiguous window ``[min(lo), max(hi)]`` (small RoIs: every
    cell in it is used) or just the ``2 * P * G`` cells its samples touch (large RoIs:
    a window would read cells no sample uses), whichever is fewer.

    Args:
        lo, hi, w_lo, w_hi: ``K x P x G`` from :func:`_axis_samples`.
        size: the map's size on this axis.

    Returns:
        ``index`` ``K x M`` int64 cells to read (padding repeats a valid cell), and
        ``matrix`` ``K x P x M`` weights (0 at padding), ``M`` the largest need in the batch.
    """
    k, p, g = lo.shape
    used = (w_lo != 0) | (w_hi != 0)
    big = torch.iinfo(torch.int64).max
    start = torch.where(used, lo, big).flatten(1).amin(1).clamp(max=size - 1)  # K
    stop = torch.where(used, hi, -1).flatten(1).amax(1)
    span = (stop - start + 1).clamp(min=1)
    n_samples = 2 * p * g
    windowed = span <= n_samples
    m = int(torch.where(windowed, span, n_samples).max())
    # window: cell start + j sits at column j; sampled: sample t's lo at t, hi at p*g + t
    slots = torch.arange(m)
    win_index = (start[:, None] + slots).clamp(max=size - 1)
    samp_index = torch.cat([lo.flatten(1), hi.flatten(1)], 1)
    samp_index = torch.nn.functional.pad(samp_index, (0, max(m - n_samples, 0)), value=0)[:, :m]
    index = torch.where(windowed[:, None], win_index, samp_index)
    t = torch.arange(p * g).reshape(1, p, g)
    col_lo = torch.where(windowed[:, None, None], lo - start[:, None, None], t)
    col_hi = torch.where(windowed[:, None, None], hi - start[:, None, None], t + p * g)
    rows = torch.arange(p)[None, :, None].expand(k, p, g)
    width = max(m, 2 * p * g)
    matrix = torch.zeros(k, p, width, dtype=w_lo.dtype)
    kk = torch.arange(k)[:, None, None].expand(k, p, g)
    # unused samples (weight 0) may fall outside the window: clamp, they add nothing
    matrix.index_put_((kk, rows, col_lo.clamp(0, width - 1)), w_lo, accumulate=True)
    matrix.index_put_((kk, rows, col_hi.clamp(0, width - 1)), w_hi, accumulate=True)
    return index, matrix[:, :, :m]


def roi_align(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoI Align (Mask R-CNN): the mean of bilinear samples on a regular grid per bin.

    Each RoI is cut into ``PH x PW`` bins, each sampled at ``gh x gw`` points
    (``gh = sampling_ratio``, or ``ceil(roi_height / PH)`` per RoI when it is ``<= 0``);
    each sample interpolates its 4 neighbouring cells. Bilinear weights factor into row
    times column weights, so one RoI is two small matrix products,
    ``out[c] = A_y @ F[b, c] @ A_x^T`` (row ``p`` of ``A_y``: output row ``p``'s averaged
    row weights, at most ``2 * gh`` non-zeros); only the rows and columns touched are read.

    Args and result: see the module docstring. ``aligned``: boxes shifted by -0.5 pixel
    (and boxes smaller than a cell allowed), as torchvision's ``aligned=True``."""
    if input.ndim != 4:
        raise ValueError(f"input must be N x C x H x W, got {tuple(input.shape)}")
    ph, pw = _pair(output_size)
    rois = _as_rois(boxes, input.dtype)
    n, c, h, w = input.shape
    k = rois.shape[0]
    if k == 0:
        return input.new_zeros((0, c, ph, pw))

    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, j] * spatial_scale - offset for j in range(1, 5))
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:  # legacy: boxes at least one cell wide and high
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        gh = gw = torch.full((k,), sampling_ratio, dtype=torch.int64)
    else:
        gh = torch.ceil(roi_h / ph).to(torch.int64)
        gw = torch.ceil(roi_w / pw).to(torch.int64)
    count = (gh * gw).clamp(min=1).to(input.dtype)

    out = input.new_empty((k, c, ph, pw))
    # N*H*W x C: each cell's C channels are one contiguous row, so a gather is a row copy
    feat = input.permute(0, 2, 3, 1).reshape(n * h * w, c)
    batch = rois[:, 0].to(torch.int64)
    # RoIs of similar size together, so padding to a chunk's largest costs little
    order = torch.argsort(roi_h * roi_w)
    chunk = 64
    for s in range(0, k, chunk):
        sel = order[s : s + chunk]
        ylo, yhi, wylo, wyhi = _axis_samples(y1[sel], roi_h[sel], ph, gh[sel], h)
        xlo, xhi, wxlo, wxhi = _axis_samples(x1[sel], roi_w[sel], pw, gw[sel], w)
        rows, a_y = _axis_matrix(ylo, yhi, wylo, wyhi, h)  # kk x My, kk x PH x My
        cols, a_x = _axis_matrix(xlo, xhi, wxlo, wxhi, w)  # kk x Mx, kk x PW x Mx
        a_x = a_x / count[sel, None, None]
        kk, my, mx = len(sel), rows.shape[1], cols.shape[1]
        flat = (batch[sel, None, None] * h + rows[:, :, None]) * w + cols[:, None, :]
        patch = feat.index_select(0, flat.reshape(-1))  # (kk*My*Mx) x C, rows of C values
        t = torch.bmm(a_y, patch.reshape(kk, my, mx * c))  # kk x PH x (Mx*C)
        t = t.reshape(kk, ph, mx, c).transpose(1, 2).reshape(kk, mx, ph * c)
        o = torch.bmm(a_x, t)  # kk x PW x (PH*C)
        out[sel] = o.reshape(kk, pw, ph, c).permute(0, 3, 2, 1)
    return out


def roi_pool(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size,
    spatial_scale: float = 1.0,
) -> Tensor:
    """RoI Pool (Fast R-CNN): max over integer cells, with two quantisations.

    1. The box is rounded to whole cells: ``round(x1 * spatial_scale)`` .. ``round(x2 *
       spatial_scale)`` (inclusive, at least one cell).
    2. Bin ``p`` covers cells ``floor(p * size / P)`` .. ``ceil((p + 1) * size / P)``
       (exclusive), clipped to the map; an empty bin outputs 0.

    Args and result: see the module docstring. Matches ``torchvision.ops.roi_pool``.
    """
    if input.ndim != 4:
        raise ValueError(f"input must be N x C x H x W, got {tuple(input.shape)}")
    ph, pw = _pair(output_size)
    rois = _as_rois(boxes, input.dtype)
    n, c, h, w = input.shape
    out = input.new_zeros((rois.shape[0], c, ph, pw))
    # torchvision computes in the input's precision; float32 rounding can move a bin edge
    # across an integer (7 * float32(3 / 7) > 3), so do the same arithmetic in that type.
    t = np.float32 if input.dtype in (torch.float32, torch.float16, torch.bfloat16) else np.float64
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        sx, sy, ex, ey = (round_half_away(t(v) * t(spatial_scale)) for v in (x1, y1, x2, y2))
        roi_h, roi_w = max(ey - sy + 1, 1), max(ex - sx + 1, 1)
        bin_h, bin_w = t(roi_h) / t(ph), t(roi_w) / t(pw)
        for p in range(ph):
            r0 = min(max(math.floor(t(p) * bin_h) + sy, 0), h)
            r1 = min(max(math.ceil(t(p + 1) * bin_h) + sy, 0), h)
            for q in range(pw):
                c0 = min(max(math.floor(t(q) * bin_w) + sx, 0), w)
                c1 = min(max(math.ceil(t(q + 1) * bin_w) + sx, 0), w)
                if r1 > r0 and c1 > c0:  # an empty bin stays 0
                    out[k, :, p, q] = input[int(b), :, r0:r1, c0:c1].amax(dim=(1, 2))
    return out


def round_half_away(v) -> int:
    """C's ``round``: half away from zero (Python's ``round`` goes to even)."""
    v = float(v)
    return int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))


def fpn_levels(
    boxes: Tensor,
    k_min: int = 2,
    k_max: int = 5,
    canonical_size: float = 224.0,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> Tensor:
    """The FPN level each box is pooled from, as Mask R-CNN assigns it (FPN paper, eq. 1).

    ``level = floor(canonical_level + log2(sqrt(w * h) / canonical_size) + eps)``,
    clamped to ``[k_min, k_max]``: a 224 x 224 box goes to P4, a box half as wide and
    high to P3, and so on.

    Args:
        boxes: ``K x 4`` xyxy in image pixels.

    Returns:
        ``K`` int64 levels in ``k_min..k_max`` (P2 = 2 has stride 4, P5 stride 32).
    """
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    level = torch.floor(canonical_level + torch.log2(area.sqrt() / canonical_size) + eps)
    return level.clamp(k_min, k_max).to(torch.int64)


def sample_points(
    box, output_size, sampling_ratio: int = 2, spatial_scale: float = 1.0, aligned: bool = False
) -> Tensor:
    """Where :func:`roi_align` samples one box, for drawing and checking by hand.

    Args:
        box: ``(x1, y1, x2, y2)`` in image pixels.

    Returns:
        ``PH x PW x gh x gw x 2`` float64 ``(x, y)`` on the feature grid (cell ``(r, c)``'s
        value sits at ``(c, r)``), before the clamping at the map's edges.
    """
    ph, pw = _pair(output_size)
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (float(v) * spatial_scale - offset for v in box)
    rw, rh = x2 - x1, y2 - y1
    if not aligned:
        rw, rh = max(rw, 1.0), max(rh, 1.0)
    gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / ph)
    gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / pw)
    ys = (
        y1
        + torch.arange(ph, dtype=torch.float64)[:, None] * (rh / ph)
        + (torch.arange(gh) + 0.5) * (rh / ph) / gh
    )
    xs = (
        x1
        + torch.arange(pw, dtype=torch.float64)[:, None] * (rw / pw)
        + (torch.arange(gw) + 0.5) * (rw / pw) / gw
    )
    yy = ys[:, None, :, None].expand(ph, pw, gh, gw)
    xx = xs[None, :, None, :].expand(ph, pw, gh, gw)
    return torch.stack([xx, yy], dim=-1)
