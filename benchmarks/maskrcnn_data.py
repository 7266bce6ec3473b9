"""Mask R-CNN data path and training loop: memory and overhead, side by side.

1. Peak resident memory (RSS) of one training epoch's data path (dataset + transforms +
   DataLoader, batch size 2) for N = 50 and N = 400 LabPics-layout samples (copies of
   data_example's, written to a temporary folder), this project's lazy dataset vs an
   eager one that loads every image and mask at start-up like the seed's. Each
   configuration runs in a fresh process, so each peak is its own.
   ``rss_growth`` = lazy peak at 400 / lazy peak at 50 - 1 (goal: under 0.10).
2. The training loop's overhead: ``train_one_epoch`` (scheduler, clipping, finite-loss
   check, running losses, progress bar) vs a bare loop (sum of losses, backward, step)
   on the same batches and the same starting weights. ``loop_overhead`` = ours / bare - 1
   (goal: under 0.05).

Prints one JSON object.

    python benchmarks/maskrcnn_data.py [--sizes 50 400] [--batches 6]
"""

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from helpers import DATA_EXAMPLE, LabPicsDataset
from helpers.detection_data import LabPicsDetection, collate, train_transforms
from helpers.targets import detection_target


class EagerLabPics(torch.utils.data.Dataset):
    """The seed's way: every image and mask read into memory when the data set is made."""

    def __init__(self, root):
        reader = LabPicsDataset(root, "Train")
        self.samples = [reader[i] for i in range(len(reader))]
        self.transforms = train_transforms()

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        from torchvision import tv_tensors

        s = self.samples[i]
        t = detection_target(s, i)
        h, w = s["image"].shape[:2]
        image = tv_tensors.Image(torch.from_numpy(s["image"]).permute(2, 0, 1).contiguous())
        t["boxes"] = tv_tensors.BoundingBoxes(t["boxes"], format="XYXY", canvas_size=(h, w))
        t["masks"] = tv_tensors.Mask(t["masks"])
        return self.transforms(image, t)


def make_samples(root: Path, n: int) -> None:
    """``n`` samples in LabPics' layout, copies of data_example's Train samples."""
    source = sorted((DATA_EXAMPLE / "LabPicsMedical" / "Train").iterdir())
    for k in range(n):
        shutil.copytree(source[k % len(source)], root / "Train" / f"sample_{k:04d}")
    (root / "Test").mkdir(exist_ok=True)


def child(kind: str, root: str) -> None:
    torch.manual_seed(0)
    ds = (
        EagerLabPics(root)
        if kind == "eager"
        else LabPicsDetection(LabPicsDataset(root, "Train"), train_transforms())
    )
    for _images, _targets in torch.utils.data.DataLoader(
        ds, batch_size=2, shuffle=True, collate_fn=collate
    ):
        pass
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # MiB (Linux reports KiB)


def peak_rss(kind: str, root: Path) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(root)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def loop_overhead(n_batches: int) -> dict:
    from helpers.maskrcnn import SMOKE_MODEL_KWARGS, build_maskrcnn
    from helpers.maskrcnn_training import MaskRCNNTrainConfig, train_one_epoch
    from helpers.schedules import warmup_cosine

    torch.manual_seed(0)
    ds = LabPicsDetection(
        LabPicsDataset(DATA_EXAMPLE / "LabPicsMedical", "Train"), train_transforms()
    )
    batches = [
        collate([ds[(2 * b) % len(ds)], ds[(2 * b + 1) % len(ds)]]) for b in range(n_batches)
    ]
    torch.manual_seed(1)
    start = build_maskrcnn(pretrained=False, **SMOKE_MODEL_KWARGS).state_dict()
    cfg = MaskRCNNTrainConfig(epochs=1, lr=0.002)

    def fresh():
        model = build_maskrcnn(pretrained=False, **SMOKE_MODEL_KWARGS)
        model.load_state_dict(start)
        model.train()
        opt = torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad],
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
        return model, opt

    def bare():
        model, opt = fresh()
        t0 = time.perf_counter()
        for images, targets in batches:
            loss = sum(model(list(images), list(targets)).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - t0

    def ours():
        model, opt = fresh()
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, n_batches, cfg.warmup_frac, cfg.min_lr_frac)
        )
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        t0 = time.perf_counter()
        train_one_epoch(model, opt, sched, batches, "cpu", 1, scaler, cfg, show_progress=True)
        return time.perf_counter() - t0

    bare()  # warm-up (allocator, first-call costs)
    times = {"bare": [], "ours": []}
    for _ in range(2):  # interleaved, so drift hits both
        times["bare"].append(bare())
        times["ours"].append(ours())
    b, o = min(times["bare"]), min(times["ours"])
    return {
        "bare_loop_s": round(b, 2),
        "train_one_epoch_s": round(o, 2),
        "loop_overhead": round(o / b - 1, 4),
        "batches": n_batches,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[50, 400])
    parser.add_argument("--batches", type=int, default=6)
    args = parser.parse_args()
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            root = Path(tmp) / f"n{n}"
            make_samples(root, n)
            for kind in ("lazy", "eager"):
                result[f"{kind}_peak_mib_{n}"] = round(peak_rss(kind, root), 1)
    small, large = args.sizes
    result["rss_growth"] = round(
        result[f"lazy_peak_mib_{large}"] / result[f"lazy_peak_mib_{small}"] - 1, 4
    )
    result["eager_rss_growth"] = round(
        result[f"eager_peak_mib_{large}"] / result[f"eager_peak_mib_{small}"] - 1, 4
    )
    result.update(loop_overhead(args.batches))
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
