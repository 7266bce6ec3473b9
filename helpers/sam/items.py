"""SAM's per-image data for decoder training and evaluation (notebook 03): embedding,
instances, and their copies in the low-res frame. Frames, all ``(x, y)`` = (column, row):

- **original pixels**: the image as read, ``H x W``; prompts are pixel indices here;
- **input frame**: the longest side resized to the encoder's input side (1024 for the
  official models, :func:`frame_side`), padded at the bottom/right to a square;
- **low-res frame**: the decoder's output, four cells per embedding cell (256 x 256 for
  the official models, :func:`low_res_side`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..course.runtime import progress
from .embeddings import EmbeddingCache
from .predict import ImageEmbedding
from .prompts import InstanceCandidates, instance_candidates

log = logging.getLogger(__name__)


def frame_side(emb: ImageEmbedding) -> int:
    """The side of the square input frame ``emb`` was encoded in: the resized image's
    longest side (ResizeLongestSide resizes it to exactly the encoder's ``img_size``)."""
    return max(emb.input_size)


def low_res_side(emb: ImageEmbedding) -> int:
    """The side of the decoder's low-res masks for ``emb``: four cells per embedding cell
    (SAM's mask decoder upsamples its grid twice by two)."""
    return 4 * emb.embedding.shape[-1]


@dataclass
class SamItem:
    """One image ready for decoder training or evaluation.

    Attributes:
        image_id: the reader's id.
        emb: its cached embedding.
        masks: ``N x H x W`` bool instances (original size); labels: ``N`` int64.
        void: ``H x W`` bool pixels that count nowhere.
        cands: per instance, where prompts may be drawn.
        targets: ``N x h x w`` bool instances in the low-res frame (:func:`low_res_side`).
        valid: ``h x w`` bool low-res pixels that count (not void, not padding).
    """

    image_id: str
    emb: ImageEmbedding
    masks: np.ndarray
    labels: np.ndarray
    void: np.ndarray
    cands: list[InstanceCandidates]
    targets: torch.Tensor
    valid: torch.Tensor


def lowres_targets(
    masks: np.ndarray, void: np.ndarray, emb: ImageEmbedding
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks moved into ``emb``'s low-res frame: resized like the image (longest side to
    the frame's), padded to the square frame, averaged over the cells, thresholded at 0.5.

    Args:
        masks: ``N x H x W`` bool; void: ``H x W`` bool, both in original pixels.

    Returns:
        ``targets`` ``N x s x s`` bool and ``valid`` ``s x s`` bool (mostly non-void cells
        inside the unpadded image), ``s`` = :func:`low_res_side`.
    """
    (h, w), frame, side = emb.input_size, frame_side(emb), low_res_side(emb)
    stack = np.concatenate([masks, void[None], np.ones_like(void)[None]]).astype(np.float32)
    resized = F.interpolate(
        torch.from_numpy(stack)[None], size=(h, w), mode="bilinear", align_corners=False
    )
    padded = F.pad(resized, (0, frame - w, 0, frame - h))
    low = F.avg_pool2d(padded, frame // side)[0]
    targets, void_low, inside = low[:-2] > 0.5, low[-2], low[-1]
    return targets, (void_low < 0.5) & (inside > 0.5)


def lowres_cell_to_pixel(rows: np.ndarray, cols: np.ndarray, emb: ImageEmbedding) -> np.ndarray:
    """Low-res cells ``(row, col)`` -> the original-image pixel index ``(x, y)`` that SAM
    encodes at the cell's centre.

    A cell covers input-frame pixels ``k c .. k c + k - 1`` (``k`` = frame / low-res
    side, 4 for SAM), centre ``k c + k / 2`` on the continuous axis. SAM maps a pixel
    index ``x`` to ``x * s + 0.5`` there (``s = w / W``, then its half-pixel shift), so the
    index is ``(k c + k / 2 - 0.5) / s``: fractional in general (SAM takes any real index),
    clipped to the image. Returns ``K x 2`` float32 ``(x, y)``.
    """
    (h_orig, w_orig), (h_in, w_in) = emb.original_size, emb.input_size
    k = frame_side(emb) / low_res_side(emb)
    x = np.clip((k * np.asarray(cols, np.float64) + k / 2 - 0.5) * w_orig / w_in, 0, w_orig - 1)
    y = np.clip((k * np.asarray(rows, np.float64) + k / 2 - 0.5) * h_orig / h_in, 0, h_orig - 1)
    return np.stack([x, y], axis=-1).astype(np.float32)


def prepare_items(
    dataset, cache: EmbeddingCache, show_progress: bool = True
) -> tuple[list[SamItem], int]:
    """Embeddings (from the cache, computed where missing) and targets for every image of
    a :class:`~helpers.VOCInstanceDataset`-like reader.

    Returns:
        ``(items, skipped)``: images without any instance are skipped and counted.
    """
    items, skipped, batch = [], 0, 4  # read 4 samples at a time, each once
    bar = progress(
        total=len(dataset), show=show_progress, desc="preparing images", unit="img", leave=False
    )
    for start in range(0, len(dataset), batch):
        samples = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
        images = [s["image"] for s in samples]
        embeddings = cache.get_many(images, show_progress=False)  # the cache sizes batches
        for s, emb in zip(samples, embeddings):
            keep = s["masks"].reshape(len(s["masks"]), -1).any(1)
            if not keep.any():
                skipped += 1
                continue
            masks, labels = s["masks"][keep], s["labels"][keep]
            void = s.get("void", s.get("ignore"))
            targets, valid = lowres_targets(masks, void, emb)
            cands = [instance_candidates(m, void) for m in masks]
            items.append(SamItem(s["image_id"], emb, masks, labels, void, cands, targets, valid))
        bar.update(len(samples))
    bar.close()
    if skipped:
        log.warning(
            "prepare_items: skipped %d of %d images without instances", skipped, len(dataset)
        )
    return items, skipped
