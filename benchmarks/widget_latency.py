"""Click-to-masks latency of the SAM before/after widget.

Two SAM models share one image encoder (decoder-only fine-tuning: "before" and "after"),
the image embedding is computed once (the cache's job) before timing. Each of the
scripted clicks goes through the same handler the browser calls
(``SamCompare.on_pointer``), then both panels are rendered and JPEG-encoded, i.e. ready
to be sent to the browser. The browser's own decode and paint are not included.
Clicks: 10 rounds of 5 (positive points inside ground-truth instances, every third one
negative outside), reset between rounds, so prompts hold 1 to 5 points as in real use.

Prints one JSON object with ``median_ms`` and ``p95_ms`` (goal: median under 150 ms).

    python benchmarks/widget_latency.py [--model vit_b] [--clicks 50]
"""

import argparse
import copy
import time

import numpy as np
import torch
from _results import save

from helpers import DATA_EXAMPLE, VOCInstanceDataset
from helpers.sam.model import build_sam
from helpers.views.compare import SamCompare
from helpers.views.widget import image_data_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h", "tiny"])
    parser.add_argument("--clicks", type=int, default=50)
    parser.add_argument("--fp32", action="store_true", help="no bf16/fp16 autocast in the decoder")
    args = parser.parse_args()
    torch.manual_seed(0)
    before = build_sam(args.model)
    after_sam = copy.deepcopy(before)
    after_sam.image_encoder = before.image_encoder  # one encoder, one embedding
    ds = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")
    t0 = time.perf_counter()
    ctl = SamCompare({"before": before, "after": after_sam}, ds, fast=not args.fp32)
    embed_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    sample = ds[0]
    h, w = sample["image"].shape[:2]
    inside = np.argwhere(sample["masks"].any(0))
    latencies = []
    for k in range(args.clicks):
        if k % 5 == 0:
            ctl.reset()
        if k % 5 == 2:
            x, y, button = rng.uniform(0, w), rng.uniform(0, h), 2
        else:
            r, c = inside[rng.integers(len(inside))]
            x, y, button = c + 0.5, r + 0.5, 0
        t = time.perf_counter()
        ctl.on_pointer({"x0": x, "y0": y, "x1": x, "y1": y, "button": button, "shift": False})
        for name in ctl.models:
            image_data_url(ctl.render(name))
        latencies.append((time.perf_counter() - t) * 1000)
    lat = np.array(latencies)
    save(
        f"widget_latency_{args.model}" + ("_fp32" if args.fp32 else ""),
        {
            "model": args.model,
            "clicks": len(lat),
            "models_compared": 2,
            "image": list(sample["image"].shape[:2]),
            "median_ms": round(float(np.median(lat)), 1),
            "p95_ms": round(float(np.percentile(lat, 95)), 1),
            "embedding_once_s": round(embed_s, 1),
            "threads": torch.get_num_threads(),
            "fast": not args.fp32,
        },
    )


if __name__ == "__main__":
    main()
