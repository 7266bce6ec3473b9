"""Measuring the ONNX decoder against PyTorch and against its int8 copy (notebook 05):
milliseconds per click (:func:`click_latency`) and how far two files agree on a first
click (:func:`first_click_agreement`)."""

from __future__ import annotations

import statistics
import time

import numpy as np

from ..metrics import mask_iou
from .onnx_decoder import OnnxDecoder


def click_latency(runners: dict, cases: list, clicks: int = 50) -> dict[str, float]:
    """Median milliseconds per click of each ``runners[name](emb, point)``, interleaved
    click by click (so that drift of a shared machine hits all alike), after one warm-up
    call each. ``cases``: ``(ImageEmbedding, 1 x 2 point)`` pairs, used in turn."""
    for run in runners.values():
        run(*cases[0])
    times: dict[str, list[float]] = {name: [] for name in runners}
    for c in range(clicks):
        emb, point = cases[c % len(cases)]
        for name, run in runners.items():
            t0 = time.perf_counter()
            run(emb, point)
            times[name].append(time.perf_counter() - t0)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def first_click_agreement(a: OnnxDecoder, b: OnnxDecoder, cases: list) -> dict:
    """How far ``b`` (e.g. the int8 file) answers a first click like ``a`` (fp32): the
    mask that ``a``'s IoU head ranks best of three, from each file. Returns ``miou``,
    ``min_iou`` and ``max_low_res_diff`` (largest change of a low-res logit)."""
    ious, diff = [], 0.0
    for emb, point in cases:
        x = a.predict(emb, points=point, labels=np.ones(len(point)))
        y = b.predict(emb, points=point, labels=np.ones(len(point)))
        best = int(x["iou"][0].argmax())
        ious.append(mask_iou(x["masks"][0, best], y["masks"][0, best]))
        diff = max(diff, float(np.abs(x["low_res"] - y["low_res"]).max()))
    return {"miou": float(np.mean(ious)), "min_iou": float(np.min(ious)), "max_low_res_diff": diff}
