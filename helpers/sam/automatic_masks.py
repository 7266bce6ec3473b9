"""Automatic masks measured against ground truth (notebook 05).

``segment_anything.SamAutomaticMaskGenerator`` prompts SAM with a grid of points, keeps
the masks whose predicted IoU and stability pass two thresholds and removes duplicates.
It knows no classes, so it is measured by what its user needs: per ground-truth instance,
the ``best IoU`` of any generated mask (void on neither side); their mean and
``recall@t`` (the share with a best IoU of at least ``t``: 0.5, 0.75); masks and seconds
per image (the whole ``generate`` call).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..course.runtime import progress
from ..remembered import fingerprint, reader_identity, remembered

THRESHOLDS = (0.5, 0.75)


def best_ious(gt: np.ndarray, generated, void: np.ndarray | None = None) -> np.ndarray:
    """``N`` float: for each of ``N x H x W`` bool ground-truth instances the best IoU
    with any of ``generated`` (a list or ``G x H x W`` array of ``H x W`` bool masks).
    Pixels of ``void`` (``H x W`` bool) are left out of every intersection and union. As
    :func:`helpers.metrics.mask_iou`, an empty mask against an empty one is 1; with
    nothing generated an instance scores 0 (1 if it is empty outside ``void``)."""
    gt = np.asarray(gt, dtype=bool)
    n = len(gt)
    if n == 0:
        return np.zeros(0)
    keep = np.ones(gt.shape[1:], bool) if void is None else ~np.asarray(void, bool)
    generated = np.asarray(generated, dtype=bool).reshape(-1, *gt.shape[1:])
    if len(generated) == 0:
        return (~gt[:, keep].any(axis=1)).astype(float)
    if generated.shape[1:] != gt.shape[1:]:
        raise ValueError(
            f"generated masks of size {generated.shape[1:]}, ground truth {gt.shape[1:]}"
        )
    g = gt[:, keep].astype(np.float32)  # N x V
    p = generated[:, keep].astype(np.float32)  # G x V
    inter = g @ p.T  # N x G
    union = g.sum(1)[:, None] + p.sum(1)[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return iou.max(axis=1)


def measure_automatic_masks(
    generator,
    reader,
    indices=None,
    keep_examples: int = 0,
    show_progress: bool = True,
    desc: str = "automatic masks",
    cache: str | Path | None = None,
) -> dict:
    """Run ``generator.generate(image)`` (a ``SamAutomaticMaskGenerator``) on the reader's
    images ``indices`` (default all) and measure the masks against the ground truth (``masks``
    and ``void`` or ``ignore``); keep the masks of the first ``keep_examples`` images. With
    ``cache`` (a folder), a result computed before for the same model, settings and images is
    read back (``seconds_per_image`` then the first run's).

    Returns:
        ``mean_best_iou``, ``recall@0.5``, ``recall@0.75``, ``instances``, ``images``,
        ``masks_per_image``, ``seconds_per_image``, ``best_ious`` (per instance, in reading
        order) and ``examples`` (``(index, [mask, ...])``)."""
    indices = list(range(len(reader)) if indices is None else indices)
    if cache is None:
        return _measure(generator, reader, indices, keep_examples, show_progress, desc)
    settings = {k: v for k, v in vars(generator).items() if k != "predictor"}
    key = fingerprint(
        "automatic-masks",
        generator.predictor.model,
        settings,
        reader_identity(reader),
        indices,
        keep_examples,
    )
    return remembered(
        cache,
        "automatic-masks",
        key,
        lambda: _measure(generator, reader, indices, keep_examples, show_progress, desc),
    )


def _measure(generator, reader, indices, keep_examples, show_progress, desc) -> dict:
    ious, counts, seconds, examples = [], [], [], []
    for k, i in enumerate(progress(indices, show=show_progress, desc=desc, unit="img")):
        s = reader[i]
        t0 = time.perf_counter()
        anns = generator.generate(s["image"])
        seconds.append(time.perf_counter() - t0)
        masks = [a["segmentation"] for a in anns]
        counts.append(len(masks))
        void = s.get("void", s.get("ignore"))
        ious.append(best_ious(s["masks"], masks, void))
        if k < keep_examples:
            examples.append((i, masks))
    all_ious = np.concatenate(ious) if ious else np.zeros(0)
    out = {
        "mean_best_iou": float(all_ious.mean()) if len(all_ious) else float("nan"),
        **{
            f"recall@{t}": float((all_ious >= t).mean()) if len(all_ious) else float("nan")
            for t in THRESHOLDS
        },
        "instances": int(len(all_ious)),
        "images": len(indices),
        "masks_per_image": float(np.mean(counts)) if counts else float("nan"),
        "seconds_per_image": float(np.mean(seconds)) if seconds else float("nan"),
        "best_ious": all_ious,
        "examples": examples,
    }
    return out


def automatic_table(results: dict[str, dict]) -> str:
    """A text table, one row per model: mean best IoU, recalls, masks and seconds."""
    head = f"{'model':14s} {'mean best IoU':>13s} {'recall@0.5':>10s} {'recall@0.75':>11s}"
    head += f" {'masks/img':>9s} {'s/img':>7s}"
    rows = [head]
    for name, r in results.items():
        rows.append(
            f"{name:14s} {r['mean_best_iou']:13.3f} {r['recall@0.5']:10.3f} "
            f"{r['recall@0.75']:11.3f} {r['masks_per_image']:9.1f} {r['seconds_per_image']:7.2f}"
        )
    return "\n".join(rows)
