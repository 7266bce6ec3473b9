"""Fine-tune torchvision's Mask R-CNN on LabPics Medical vessels from the command line:
notebook 04's job as a script, on one device or on many under ``torchrun`` (notebook 06).

    python -m helpers.detection.train --epochs 10                          # one process
    torchrun --nproc_per_node 8 -m helpers.detection.train --lr 0.04       # 8 GPUs
    SEGCOURSE_SMOKE=1 python -m helpers.detection.train                    # data_example

The same helpers and :class:`~helpers.detection.training.MaskRCNNTrainConfig` as notebook
04 (every field is an option: ``--help``), the same data (every tenth Train sample held
out for validation). Under torchrun :func:`helpers.detection.training.train_maskrcnn`
wraps the model in ``DistributedDataParallel``; ``--batch-size`` is per process, so the
global batch is ``batch_size x processes``: scale ``--lr`` with it, as torchvision's
references do (their 0.02 is for 8 GPUs x 2 images). Rank 0 fetches data and weights
first, writes the checkpoints and prints; a rerun resumes from ``last.pt``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

import torch
from torch.utils.data import Subset

from ..command_line import add_config_arguments, config_from_args
from ..course.runtime import DATA_EXAMPLE, cache_dir, is_smoke, show_messages
from ..data.labpics import LabPicsDataset, download_labpics
from ..distributed import barrier, cleanup, gather_to_main, setup
from .data import LabPicsDetection, train_transforms
from .model import SMOKE_MODEL_KWARGS, build_maskrcnn, ensure_coco_weights
from .training import MaskRCNNTrainConfig, train_maskrcnn


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-1 over a model's parameters: equal digests, equal weights. (Buffers are left
    out: without COCO weights, as in smoke mode, torchvision builds the backbone with
    ordinary BatchNorm, whose running statistics each process keeps from its own images;
    DDP sends rank 0's at every forward. With COCO weights they are frozen.)"""
    h = hashlib.sha1()
    for name, t in model.named_parameters():
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m helpers.detection.train",
        description="Fine-tune Mask R-CNN on LabPics Medical vessels (notebook 04), on one "
        "device or under torchrun. Smoke mode (SEGCOURSE_SMOKE=1): data_example, no weights.",
    )
    p.add_argument("--out", default=None, help="run folder (default: the cache's runs/)")
    p.add_argument("--train-images", type=int, default=None, help="use only the first N")
    p.add_argument("--until-epoch", type=int, default=None, help="stop after this epoch")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing last.pt")
    p.add_argument("--device", default=None, help="cpu to stay on the CPU (default: the GPU)")
    p.add_argument("--min-size", type=int, default=None, help="the model's resize (default 640)")
    p.add_argument("--max-size", type=int, default=None, help="(default 1024)")
    p.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start from COCO weights (default: yes; smoke: no)",
    )
    add_config_arguments(p, MaskRCNNTrainConfig)
    return p


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    place = setup(args.device)
    show_messages(logging.INFO if place.main else logging.WARNING)  # one voice: rank 0
    smoke = is_smoke()
    pretrained = (not smoke) if args.pretrained is None else args.pretrained
    kwargs = dict(SMOKE_MODEL_KWARGS) if smoke else dict(min_size=640, max_size=1024)
    kwargs.update(
        {k: v for k, v in (("min_size", args.min_size), ("max_size", args.max_size)) if v}
    )
    if place.main:  # downloads once, before the others read them
        if not smoke:
            download_labpics()
        if pretrained:
            ensure_coco_weights()
    barrier()
    root = DATA_EXAMPLE / "LabPicsMedical" if smoke else download_labpics()
    train_all = LabPicsDataset(root, "Train")
    val = Subset(train_all, range(0, len(train_all), 10))
    train = Subset(train_all, [i for i in range(len(train_all)) if i % 10][: args.train_images])
    cfg = config_from_args(MaskRCNNTrainConfig, args)
    torch.manual_seed(cfg.seed)  # the new heads start the same on every process
    model = build_maskrcnn(num_classes=2, pretrained=pretrained, **kwargs)
    out = Path(
        args.out or cache_dir() / "runs" / ("maskrcnn_smoke_cli" if smoke else "maskrcnn_cli")
    )
    history = train_maskrcnn(
        model,
        LabPicsDetection(train, train_transforms(kwargs["min_size"], kwargs["max_size"])),
        val,
        cfg,
        out,
        device=place.device,
        resume=not args.no_resume,
        until_epoch=args.until_epoch,
        show_progress=place.main,
        place=place,
    )
    digests = gather_to_main(weights_digest(model), place)
    summary = {
        "world": place.world,
        "ranks_in_sync": None if digests is None else len(set(digests)) == 1,
        "epochs": len(history),
        "last": history[-1] if history else None,
        "out": str(out),
    }
    if place.main:
        print(json.dumps(summary))
    cleanup()
    return summary


if __name__ == "__main__":
    main()
