"""SAM's per-image data for decoder training and evaluation: embedding, instances, and
their copies in SAM's 256 x 256 low-res frame.

Introduced in notebook 03. Kept apart from the training loop (:mod:`helpers.sam.training`)
and the evaluation (:mod:`helpers.sam.evaluation`), which both read it, as torchvision's
detection references keep data, loop and evaluation apart.

Frames, all ``(x, y)`` = (column, row):

- **original pixels**: the image as read from disk, ``H x W``. Prompts are pixel
  *indices* here, SamPredictor's convention: the centre of pixel ``(col, row)`` is
  ``(col, row)`` (SAM's prompt encoder adds the half pixel itself);
- **input frame**: the longest side resized to 1024 (``input_size = (h, w)``), padded
  at the bottom/right to 1024 x 1024;
- **low-res frame**: the decoder's 256 x 256 output, one cell per 4 x 4 input pixels.
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

LOW_RES = 256  # SAM's low-res mask side
FRAME = 1024  # SAM's input frame side


@dataclass
class SamItem:
    """One image ready for decoder training or evaluation.

    Attributes:
        image_id: the reader's id.
        emb: its cached embedding.
        masks: ``N x H x W`` bool instances (original size); labels: ``N`` int64.
        void: ``H x W`` bool pixels that count nowhere.
        cands: per instance, where prompts may be drawn.
        targets: ``N x 256 x 256`` bool instances in the low-res frame.
        valid: ``256 x 256`` bool low-res pixels that count (not void, not padding).
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
    masks: np.ndarray, void: np.ndarray, input_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks moved into SAM's low-res frame: resized like the image (longest side to
    1024), padded to 1024 x 1024, averaged over 4 x 4 cells, thresholded at 0.5.

    Returns:
        ``targets`` ``N x 256 x 256`` bool and ``valid`` ``256 x 256`` bool (mostly
        non-void cells inside the unpadded image).
    """
    h, w = input_size
    stack = np.concatenate([masks, void[None], np.ones_like(void)[None]]).astype(np.float32)
    resized = F.interpolate(
        torch.from_numpy(stack)[None], size=(h, w), mode="bilinear", align_corners=False
    )
    padded = F.pad(resized, (0, FRAME - w, 0, FRAME - h))
    low = F.avg_pool2d(padded, FRAME // LOW_RES)[0]
    targets, void_low, inside = low[:-2] > 0.5, low[-2], low[-1]
    return targets, (void_low < 0.5) & (inside > 0.5)


def lowres_cell_to_pixel(rows: np.ndarray, cols: np.ndarray, emb: ImageEmbedding) -> np.ndarray:
    """Low-res cells ``(row, col)`` -> the original-image pixel index ``(x, y)`` that SAM
    encodes at the cell's centre.

    A cell covers input-frame pixels ``4c .. 4c + 3``, centre ``4c + 2`` on the continuous
    axis. SAM maps a pixel index ``x`` to ``x * s + 0.5`` there (``s = w / W``, then its
    half-pixel shift), so the index is ``(4c + 1.5) / s``: fractional in general (SAM
    takes any real index), clipped to the image. Returns ``K x 2`` float32 ``(x, y)``.
    """
    (h_orig, w_orig), (h_in, w_in) = emb.original_size, emb.input_size
    x = np.clip((4 * np.asarray(cols, np.float64) + 1.5) * w_orig / w_in, 0, w_orig - 1)
    y = np.clip((4 * np.asarray(rows, np.float64) + 1.5) * h_orig / h_in, 0, h_orig - 1)
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
            targets, valid = lowres_targets(masks, void, emb.input_size)
            cands = [instance_candidates(m, void) for m in masks]
            items.append(SamItem(s["image_id"], emb, masks, labels, void, cands, targets, valid))
        bar.update(len(samples))
    bar.close()
    if skipped:
        log.warning(
            "prepare_items: skipped %d of %d images without instances", skipped, len(dataset)
        )
    return items, skipped
