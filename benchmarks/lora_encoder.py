"""What LoRA on SAM's image encoder costs against decoder-only training, side by side.

Three arms of notebook 07, each in a fresh process with random weights (time and memory
do not depend on their values), on photos of LabPics' size (random pixels, the masks of
``data_example``'s LabPics photos resized to them), with the SAM recipe of
``SamTrainConfig()`` (1 + 8 + 2 decoder rounds per photo):

- ``decoder_only``: embeddings cached first (timed apart, ``cache_fill_s_per_image``),
  then one epoch of ``train_decoder``;
- ``lora``: LoRA (rank 4, ``qkv``) + decoder, every photo encoded forward and backward;
- ``lora_checkpointing``: the same with each ViT block recomputed in the backward pass.

Each reports trainable parameters, seconds per training photo (one epoch after a warm-up
photo), the rise of peak host memory over the built model (``VmHWM``, on this CPU; with
CUDA ``torch.cuda.max_memory_allocated``) and the bytes of the tensors autograd saves for
the backward pass of one encoder forward (``saved_mib``, counted by
``torch.autograd.graph.saved_tensors_hooks``, each storage once). The parent also writes
the adapter and the merged checkpoint and reports their sizes, and counts the encoder's
forward FLOPs at 1024 x 1024 (``FlopCounterMode``).

``t4_estimate`` turns these into a T4 (16 GB, 65 fp16 TFLOP/s peak): LoRA's encoder
cost per photo, measured here in forward passes (its extra seconds over decoder-only,
divided by one forward pass), times the counted FLOPs at an assumed effective 30 % of
peak; memory as fp32 weights, gradients and AdamW moments of what trains, the saved
activations at fp16 (half of fp32; with checkpointing, plus one block's recomputation),
0.5 GiB of workspace, and 15 GiB usable. An **estimate**, not a measurement. Prints one JSON object:

    python benchmarks/lora_encoder.py                       # vit_b, 2 photos
    python benchmarks/lora_encoder.py --model tiny --images 2   # a quick run
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import save

CHILD = r"""
import json, sys, tempfile, time
import numpy as np, torch
from torch.utils.data import Subset
from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.labpics import LabPicsDataset
from helpers.sam.embeddings import EmbeddingCache
from helpers.sam.items import prepare_items
from helpers.sam.lora import trained_parts, with_lora, _encode
from helpers.sam.model import build_sam, build_tiny_sam
from helpers.sam.predict import preprocess
from helpers.sam.training import SamTrainConfig, train_decoder

def peak_mib():
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

class Photos(list):  # the data_example masks on random photos of LabPics' size
    def __init__(self, n, hw):
        import torch.nn.functional as F
        ds = LabPicsDataset(DATA_EXAMPLE / "LabPicsMedical", "Train")
        rng = np.random.default_rng(0)
        for i in range(n):
            s = ds[i % len(ds)]
            up = lambda m: F.interpolate(torch.from_numpy(m[None] * 1.0).float(), size=hw)[0] > 0.5
            self.append({"image": rng.integers(0, 256, (*hw, 3), dtype=np.uint8),
                         "masks": up(s["masks"]).numpy(), "labels": s["labels"],
                         "ignore": up(s["ignore"][None])[0].numpy(), "image_id": f"p{i}"})

arm, model, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
device = "cuda" if torch.cuda.is_available() else "cpu"
sam = (build_tiny_sam() if model == "tiny" else build_sam(model)).to(device).eval()
if arm != "decoder_only":
    sam = with_lora(sam)
photos = Photos(n + 1, (1080, 1920) if model != "tiny" else (480, 640))
base = peak_mib()
cfg = SamTrainConfig(epochs=1, checkpointing=arm == "lora_checkpointing")
with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    items, _ = prepare_items(photos, EmbeddingCache(tmp + "/emb", sam), show_progress=False)
    fill = (time.perf_counter() - t0) / len(photos)
    images = None if arm == "decoder_only" else {p["image_id"]: p["image"] for p in photos}
    quiet = dict(resume=False, show_progress=False, images=images)
    train_decoder(sam, items[:1], [], cfg, tmp + "/warm", **quiet)
    t0 = time.perf_counter()
    train_decoder(sam, items[1:], [], cfg, tmp + "/run", **quiet)
    per_image = (time.perf_counter() - t0) / n
saved = 0
if arm != "decoder_only":
    storages = set()
    def pack(t):
        global saved
        key = t.untyped_storage().data_ptr()
        if key not in storages:
            storages.add(key)
            saved += t.untyped_storage().nbytes()
        return t
    x, _ = preprocess(sam, photos[0]["image"])
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = _encode(sam.image_encoder, x.to(device), arm == "lora_checkpointing")
    del out
trained = trained_parts(sam) if images else sam.mask_decoder
trainable = sum(p.numel() for p in trained.parameters())
print(json.dumps({
    "trainable_parameters": trainable,
    "s_per_image": round(per_image, 2),
    "cache_fill_s_per_image": round(fill, 2) if arm == "decoder_only" else None,
    "peak_rise_mib": round(peak_mib() - base),
    "saved_mib": round(saved / 2**20),
    "memory_counted": "cuda max_memory_allocated" if device == "cuda" else "host VmHWM",
}))
"""


def measure(arm: str, model: str, n: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, arm, model, str(n)], capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"{arm}: the child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def files_and_flops(model: str) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from helpers.checkpoints import atomic_save
    from helpers.sam.lora import merged_state_dict, save_adapter, with_lora
    from helpers.sam.model import build_sam, build_tiny_sam

    sam = with_lora(build_tiny_sam() if model == "tiny" else build_sam(model))
    with tempfile.TemporaryDirectory() as tmp:
        adapter = save_adapter(sam, Path(tmp) / "adapter.pt").stat().st_size
        merged = atomic_save(merged_state_dict(sam), Path(tmp) / "merged.pth").stat().st_size
    side = sam.image_encoder.img_size
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        sam.image_encoder(torch.zeros(1, 3, side, side))
    return {
        "adapter_mib": round(adapter / 2**20, 1),
        "merged_mib": round(merged / 2**20, 1),
        "encoder_forward_gflop": round(counter.get_total_flops() / 1e9),
        "frame": side,
        "parameters": sum(p.numel() for p in sam.parameters()),
        "blocks": len(sam.image_encoder.blocks),
    }


def t4_estimate(arms: dict, extra: dict, train_photos: int) -> dict:
    """A T4's encoder time per photo and peak memory: the measured cost of LoRA's encoder
    passes in forward passes (CPU), times the counted forward FLOPs, at the assumed
    effective speed; memory from the counted parameters and saved bytes (see the module)."""
    effective = 0.30 * 65e12  # FLOP/s, assumed
    forward_s = extra["encoder_forward_gflop"] * 1e9 / effective
    decoder, fill = (
        arms["decoder_only"]["s_per_image"],
        arms["decoder_only"]["cache_fill_s_per_image"],
    )
    whole = arms["lora"]["saved_mib"]
    out = {}
    for name in ("lora", "lora_checkpointing"):
        passes = (arms[name]["s_per_image"] - decoder) / fill  # measured here, in forward passes
        trained = arms[name]["trainable_parameters"]
        fixed = (
            4 * extra["parameters"] + 12 * trained
        ) / 2**30 + 0.5  # fp32 weights, grads + AdamW, workspace
        saved = arms[name]["saved_mib"] + (
            whole / extra["blocks"] if "checkpointing" in name else 0
        )
        activations = saved / 1024 / 2  # GiB at fp16 autocast: about half of fp32
        out[name] = {
            "encoder_passes_per_image": round(passes, 2),
            "encoder_s_per_image": round(passes * forward_s, 2),
            "epoch_encoder_min": round(train_photos * passes * forward_s / 60, 1),
            "peak_gib_batch_1": round(fixed + activations, 1),
            "photos_per_step_in_15_gib": int((15 - fixed) // activations) if activations else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h", "tiny"])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument(
        "--train-photos", type=int, default=100, help="photos per epoch in the T4 estimate"
    )
    args = parser.parse_args()
    arms = {}
    for arm in ("decoder_only", "lora", "lora_checkpointing"):
        arms[arm] = measure(arm, args.model, args.images)
        print(arm, json.dumps(arms[arm]), file=sys.stderr, flush=True)
    extra = files_and_flops(args.model)
    save(
        "lora_encoder" if args.model == "vit_b" else f"lora_encoder_{args.model}",
        {
            "model": args.model,
            "images": args.images,
            "arms": arms,
            **extra,
            "t4_estimate": {
                "assumed": "30 % of 65 fp16 TFLOP/s; fp16 activations half of fp32; 15 GiB usable",
                "train_photos": args.train_photos,
                **t4_estimate(arms, extra, args.train_photos),
            },
        },
    )


if __name__ == "__main__":
    main()
