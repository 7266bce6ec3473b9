"""Click-to-masks latency of the SAM before/after widget.

Two SAM models share one image encoder (decoder-only fine-tuning: "before" and "after"),
the image embedding is computed once (the cache's job) before timing. Each of the
scripted clicks goes through the same handler the browser calls
(``SamCompare.on_pointer``), then both panels are rendered and JPEG-encoded, i.e. ready
to be sent to the browser. The browser's own decode and paint are not included.
Clicks: 10 rounds of 5 (positive points inside ground-truth instances, every third one
negative outside), reset between rounds, so prompts hold 1 to 5 points as in real use.

The widget's onnxruntime backend (each decoder exported once) and its PyTorch backend
(bf16 autocast where the CPU does bf16 natively) answer the same clicks, interleaved,
in one run: ``median_ms``/``p95_ms`` (onnxruntime, goal: median under 100 ms) beside
``torch_median_ms``/``torch_p95_ms``, and where onnxruntime's time goes
(``parts_median_ms``: the decoders, side by side; drawing and JPEG-encoding both panels,
side by side, as the widget's ``panel_urls`` does).

    python benchmarks/widget_latency.py [--model vit_b] [--clicks 50]
"""

import argparse
import copy
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from _results import save

from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.voc import VOCInstanceDataset
from helpers.sam.model import build_sam
from helpers.views.compare import SamCompare
from helpers.views.widget import panel_urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h", "tiny"])
    parser.add_argument("--clicks", type=int, default=50)
    args = parser.parse_args()
    torch.manual_seed(0)
    before = build_sam(args.model)
    after_sam = copy.deepcopy(before)
    after_sam.image_encoder = before.image_encoder  # one encoder, one embedding
    models = {"before": before, "after": after_sam}
    ds = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        onnx = SamCompare(models, ds, backend="onnx", onnx_folder=tmp)  # exports both
        setup_s = time.perf_counter() - t0
        torch_ctl = SamCompare(models, ds, backend="torch")  # bf16 where the CPU does it
        rng = np.random.default_rng(0)
        sample = ds[0]
        h, w = sample["image"].shape[:2]
        inside = np.argwhere(sample["masks"].any(0))
        times = {"onnx": [], "torch": []}
        parts = {"predict": [], "draw_and_encode": []}
        pool = ThreadPoolExecutor(len(models))  # the widget's: one thread per panel
        for k in range(args.clicks):
            if k % 5 == 0:
                onnx.reset()
                torch_ctl.reset()
            if k % 5 == 2:
                x, y, button = rng.uniform(0, w), rng.uniform(0, h), 2
            else:
                r, c = inside[rng.integers(len(inside))]
                x, y, button = c + 0.5, r + 0.5, 0
            event = {"x0": x, "y0": y, "x1": x, "y1": y, "button": button, "shift": False}
            order = [("onnx", onnx), ("torch", torch_ctl)]
            for name, ctl in order if k % 2 else order[::-1]:  # interleaved, either first
                t = time.perf_counter()
                ctl.on_pointer(event)
                t_predicted = time.perf_counter()
                panel_urls(ctl, list(ctl.models), pool)  # what the widget's refresh sends
                t_done = time.perf_counter()
                times[name].append((t_done - t) * 1000)
                if name == "onnx":
                    parts["predict"].append((t_predicted - t) * 1000)
                    parts["draw_and_encode"].append((t_done - t_predicted) * 1000)
    onnx_ms, torch_ms = np.array(times["onnx"]), np.array(times["torch"])
    save(
        f"widget_latency_{args.model}",
        {
            "model": args.model,
            "backend": "onnxruntime",
            "clicks": len(onnx_ms),
            "models_compared": len(models),
            "image": list(sample["image"].shape[:2]),
            "median_ms": round(float(np.median(onnx_ms)), 1),
            "p95_ms": round(float(np.percentile(onnx_ms, 95)), 1),
            "torch_median_ms": round(float(np.median(torch_ms)), 1),
            "torch_p95_ms": round(float(np.percentile(torch_ms, 95)), 1),
            "parts_median_ms": {k: round(float(np.median(v)), 1) for k, v in parts.items()},
            "export_and_embedding_s": round(setup_s, 1),
            "threads": torch.get_num_threads(),
        },
    )


if __name__ == "__main__":
    main()
