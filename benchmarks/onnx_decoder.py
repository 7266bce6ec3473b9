"""SAM's vit_b prompt encoder + mask decoder per click: PyTorch vs onnxruntime fp32 vs
onnxruntime int8 (dynamic quantisation), side by side in one run on this CPU.

The decoder is vit_b's (4,058,340 parameters; every variant has the same decoder) with
random weights, as built by segment-anything (timing does not depend on the values).
Embeddings: data_example's VOC test images through the tiny encoder (a cached embedding
is all a click needs); prompts: the first click of the course's protocol on each
instance (the deepest pixel of the instance), full-size masks as an app shows them.

- ``torch_ms``, ``onnx_ms``, ``onnx_int8_ms``: median ms per click over ``--clicks``
  clicks, the three interleaved click by click; the same threads for each (``--threads``,
  default torch's).
- ``int8_miou_vs_fp32``: mean IoU of the int8 mask against the fp32 mask (the best of
  three by the IoU head's score, as at click 1) over the test instances. Random weights
  give logits that hover near the threshold, so this is a harsher test than the trained
  decoder is expected to be; ``int8_max_low_res_diff`` says how far the logits moved.
- file sizes of both ``.onnx`` files.
- ``fp32_op_ms`` and ``int8_op_ms``: where each runtime's time goes, from onnxruntime's
  own profiler (kernel time per click by operator type, the largest 8), and
  ``int8_quantize_ms``: the int8 graph's time in ``DynamicQuantizeLinear``, which
  quantises activations on every call.

    python benchmarks/onnx_decoder.py [--clicks 50] [--threads N]
"""

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from _results import save

from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.voc import VOCInstanceDataset
from helpers.sam.clicks import next_click
from helpers.sam.model import build_sam, build_tiny_sam
from helpers.sam.onnx_comparison import click_latency, first_click_agreement
from helpers.sam.onnx_decoder import (
    OnnxDecoder,
    export_decoder,
    quantize_int8,
)
from helpers.sam.predict import embed_image, predict


def op_profile(path: Path, feeds: list[dict], threads: int, folder: str) -> dict[str, float]:
    """Milliseconds per click spent in each operator type, from onnxruntime's profiler."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(folder) / path.stem)
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for feed in feeds:
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / 1e3 / len(feeds)  # us -> ms per click
    return dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=50)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sam = build_sam("vit_b").eval()
    tiny = build_tiny_sam()
    reader = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "test")
    cases = []  # (embedding, point) per test instance
    for i in range(len(reader)):
        s = reader[i]
        emb = embed_image(tiny, s["image"])
        for m in s["masks"]:
            x, y, _ = next_click(np.zeros_like(m), m, s["void"])
            cases.append((emb, np.array([[x, y]], np.float32)))
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = export_decoder(sam, Path(tmp) / "decoder.onnx")
        int8_path = quantize_int8(fp32_path, Path(tmp) / "decoder.int8.onnx")
        # the embeddings come from another encoder: no fingerprint check here
        fp32 = OnnxDecoder(fp32_path, threads=args.threads)
        int8 = OnnxDecoder(int8_path, threads=args.threads)
        sizes = {
            "onnx_mb": fp32_path.stat().st_size / 1e6,
            "int8_mb": int8_path.stat().st_size / 1e6,
        }

        def run_torch(emb, point):
            with torch.no_grad():
                return predict(sam, emb, points=point[None], labels=np.ones((1, 1)))

        def run_onnx(decoder):
            return lambda emb, point: decoder.predict(emb, points=point, labels=np.ones(1))

        ms = click_latency(
            {"torch": run_torch, "onnx": run_onnx(fp32), "onnx_int8": run_onnx(int8)},
            cases,
            args.clicks,
        )
        agreement = first_click_agreement(fp32, int8, cases)
        feeds = [fp32.inputs(emb, points=point, labels=np.ones(1)) for emb, point in cases]
        feeds = (feeds * (1 + args.clicks // len(feeds)))[: args.clicks]
        profiles = {
            name: op_profile(path, feeds, args.threads, tmp)
            for name, path in (("fp32", fp32_path), ("int8", int8_path))
        }
    save(
        "onnx_decoder",
        {
            "torch_ms": round(ms["torch"], 2),
            "onnx_ms": round(ms["onnx"], 2),
            "onnx_int8_ms": round(ms["onnx_int8"], 2),
            "onnx_vs_torch": round(ms["torch"] / ms["onnx"], 2),
            "int8_miou_vs_fp32": round(agreement["miou"], 4),
            "int8_min_iou_vs_fp32": round(agreement["min_iou"], 4),
            "int8_max_low_res_diff": round(agreement["max_low_res_diff"], 3),
            "instances": len(cases),
            "clicks": args.clicks,
            "threads": args.threads,
            **{k: round(v, 2) for k, v in sizes.items()},
            **{
                f"{name}_op_ms": {op: round(v, 2) for op, v in list(prof.items())[:8]}
                for name, prof in profiles.items()
            },
            "int8_quantize_ms": round(profiles["int8"].get("DynamicQuantizeLinear", 0.0), 2),
            "fp32_kernel_ms": round(sum(profiles["fp32"].values()), 2),
            "int8_kernel_ms": round(sum(profiles["int8"].values()), 2),
        },
    )


if __name__ == "__main__":
    main()
