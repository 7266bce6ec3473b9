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

3. Throughput of the training data path at LabPics' real size: synthetic samples of
   1920 x 1080 (a JPEG photo, 3-8 vessel PNGs, an Ignore.png) written to a temporary
   folder. Today's path as it was before (flip, RandomAffine and ColorJitter on the full
   photo, boxes by ``torchvision.ops.masks_to_boxes``, loading in the main process) vs
   the course's (``ZoomForModel`` to the working size of notebook 04's model, 640/1024,
   then flip and jitter; worker processes by CPU count, persistent). Samples per second
   of one epoch through a DataLoader each, side by side: ``data_speedup`` = new / old
   for the epochs after the first, when the persistent workers are running (goal: at
   least 4); ``data_speedup_first_epoch`` includes starting them. And each path on one
   core (one thread, no workers):
   ``one_core_s_per_sample`` (goal: under 0.2 s, the estimated T4 step time for one
   image) and ``one_core_speedup``; and the colour jitter alone at the working size, with
   and without its hue part (median ms on one core: ``jitter_with_hue_ms``,
   ``jitter_without_hue_ms``).

Prints one JSON object.

    python benchmarks/maskrcnn_data.py [--sizes 50 400] [--batches 6] [--photos 24]
"""

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from _results import save
from PIL import Image, ImageDraw
from torchvision import tv_tensors
from torchvision.transforms import v2

from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.labpics import LabPicsDataset
from helpers.detection.data import (
    LabPicsDetection,
    SeededShuffle,
    collate,
    default_num_workers,
    ignored_instances,
    train_transforms,
)
from helpers.detection.targets import detection_target

#: notebook 04's model in full mode (its own resize)
MIN_SIZE, MAX_SIZE = 640, 1024


class EagerLabPics(torch.utils.data.Dataset):
    """The seed's way: every image and mask read into memory when the data set is made."""

    def __init__(self, root):
        reader = LabPicsDataset(root, "Train")
        self.samples = [reader[i] for i in range(len(reader))]
        self.transforms = train_transforms(MIN_SIZE, MAX_SIZE)

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
        else LabPicsDetection(LabPicsDataset(root, "Train"), train_transforms(MIN_SIZE, MAX_SIZE))
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
    from helpers.detection.model import SMOKE_MODEL_KWARGS, build_maskrcnn
    from helpers.detection.training import MaskRCNNTrainConfig, train_one_epoch
    from helpers.schedules import warmup_cosine

    torch.manual_seed(0)
    ds = LabPicsDetection(
        LabPicsDataset(DATA_EXAMPLE / "LabPicsMedical", "Train"),
        train_transforms(MIN_SIZE, MAX_SIZE),
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


def make_photos(root: Path, n: int, seed: int = 0) -> None:
    """``n`` samples in LabPics' layout at its real size: a 1920 x 1080 JPEG (gradients
    and noise, so that it compresses like a photo: ~0.7 MB), 3-8 vessel PNGs (rounded
    rectangles, each darkening the photo where it lies) and an Ignore.png."""
    rng = np.random.default_rng(seed)
    h, w = 1080, 1920
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w * 200 + 30, yy / h * 180 + 40, (xx + yy) / (w + h) * 150 + 60], -1)
    for i in range(n):
        folder = root / "Train" / f"photo_{i:03d}"
        (folder / "Vessels").mkdir(parents=True)
        image = base + rng.normal(0, 12, (h, w, 3))
        for j in range(int(rng.integers(3, 9))):
            mask = Image.new("L", (w, h), 0)
            cx, cy = rng.integers(200, w - 200), rng.integers(200, h - 200)
            rx, ry = rng.integers(60, 220), rng.integers(100, 300)
            ImageDraw.Draw(mask).rounded_rectangle(
                [cx - rx, cy - ry, cx + rx, cy + ry], radius=int(rx * 0.6), fill=255
            )
            mask.save(folder / "Vessels" / f"{j}.png")
            inside = np.asarray(mask) > 0
            image[inside] = image[inside] * 0.6 + rng.uniform(40, 200, 3) * 0.4
        ignore = Image.new("L", (w, h), 0)
        ImageDraw.Draw(ignore).rectangle([0, 0, 300, 200], fill=255)
        ignore.save(folder / "Ignore.png")
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
            folder / "Image.jpg", quality=92
        )
    (root / "Test").mkdir(exist_ok=True)


class BeforeLabPics(LabPicsDetection):
    """The course's data path before this benchmark's change, kept here to compare with:
    the transforms on the full photo, boxes listed pixel by pixel."""

    def __init__(self, reader):
        super().__init__(
            reader,
            v2.Compose(
                [
                    v2.RandomHorizontalFlip(0.5),
                    v2.RandomAffine(degrees=0, scale=(0.8, 1.25)),
                    v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
                    v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
                    v2.SanitizeBoundingBoxes(min_size=1),
                ]
            ),
        )

    def __getitem__(self, index):
        s = self.reader[index]
        keep = ~ignored_instances(s["masks"], s["ignore"], self.ignore_overlap)
        masks = torch.from_numpy(s["masks"][keep])
        h, w = s["image"].shape[:2]
        image = tv_tensors.Image(torch.from_numpy(s["image"]).permute(2, 0, 1).contiguous())
        boxes = torchvision.ops.masks_to_boxes(masks).float() + torch.tensor([0, 0, 1.0, 1.0])
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
            "masks": tv_tensors.Mask(masks.to(torch.uint8)),
            "labels": torch.ones(len(masks), dtype=torch.int64),
            "image_id": index,
        }
        image, target = self.transforms(image, target)
        target["area"] = target["masks"].flatten(1).sum(1).to(torch.float32)
        target["iscrowd"] = torch.zeros(len(target["labels"]), dtype=torch.int64)
        return image, target


def epoch_seconds(loader) -> float:
    t0 = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - t0


def throughput(n_photos: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        make_photos(Path(tmp), n_photos)
        reader = LabPicsDataset(tmp, "Train")
        before = BeforeLabPics(reader)
        after = LabPicsDetection(reader, train_transforms(MIN_SIZE, MAX_SIZE))
        workers = default_num_workers()
        torch.manual_seed(0)
        old_loader = torch.utils.data.DataLoader(
            before, batch_size=2, shuffle=True, collate_fn=collate, num_workers=0
        )
        new_loader = torch.utils.data.DataLoader(
            after,
            batch_size=2,
            sampler=SeededShuffle(len(after)),
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator(),
        )
        old_s = epoch_seconds(old_loader)
        new_s = epoch_seconds(new_loader)  # worker start-up included
        new_s_warm = epoch_seconds(new_loader)  # the next epochs: workers already there
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        one = {}
        for name, ds in (("old", before), ("new", after)):
            ds[0]  # first-call costs
            t0 = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            one[name] = (time.perf_counter() - t0) / len(ds)
        working_size = list(after[0][0].shape[1:])
        # what dropping hue from the colour jitter saves, at the working size, one core
        image = torch.rand(3, *working_size)
        jitter = {
            "with_hue": v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
            "without_hue": v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        }
        jitter_ms = {k: [] for k in jitter}
        for _ in range(20):  # interleaved, so both see the same machine
            for name, fn in jitter.items():
                t0 = time.perf_counter()
                fn(image)
                jitter_ms[name].append(1e3 * (time.perf_counter() - t0))
        torch.set_num_threads(threads)
    return {
        "photos": n_photos,
        "photo_size": [1080, 1920],
        "working_size": working_size,
        "workers": workers,
        "old_samples_per_s": round(n_photos / old_s, 2),
        "new_samples_per_s": round(n_photos / new_s, 2),
        "new_samples_per_s_warm": round(n_photos / new_s_warm, 2),
        "data_speedup": round(old_s / new_s_warm, 2),  # epochs after the first
        "data_speedup_first_epoch": round(old_s / new_s, 2),  # worker start-up included
        "one_core_s_per_sample_old": round(one["old"], 3),
        "one_core_s_per_sample": round(one["new"], 3),
        "one_core_speedup": round(one["old"] / one["new"], 2),
        "jitter_with_hue_ms": round(float(np.median(jitter_ms["with_hue"])), 1),
        "jitter_without_hue_ms": round(float(np.median(jitter_ms["without_hue"])), 1),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[50, 400])
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--photos", type=int, default=24)
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
    result.update(throughput(args.photos))  # last: its photos would inflate the RSS children
    result["threads"] = torch.get_num_threads()
    save("maskrcnn_data", result)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
