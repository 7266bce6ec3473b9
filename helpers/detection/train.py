"""Fine-tune Mask R-CNN on LabPics Medical vessels from the command line: notebook 04's job,
on one device or under ``torchrun`` (notebook 06), with notebook 04's helpers, data and
:class:`~helpers.detection.training.MaskRCNNTrainConfig` (every field an option)::

    python -m helpers.detection.train --epochs 10                          # one process
    torchrun --nproc_per_node 8 -m helpers.detection.train --lr 0.04       # 8 GPUs
    SEGCOURSE_SMOKE=1 python -m helpers.detection.train                    # data_example

Under torchrun the model is wrapped in ``DistributedDataParallel``; ``--batch-size`` is
per process, so scale ``--lr`` with the processes as torchvision's references do (their
0.02 is for 8 GPUs x 2 images). Rank 0 fetches data and weights first, writes the
checkpoints and prints; a rerun resumes from ``last.pt``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from torch.utils.data import Subset

from ..command_line import (
    add_config_arguments,
    check_paths,
    config_from_args,
    entry_point_parser,
    positive_int,
)
from ..course.runtime import DATA_EXAMPLE, cache_dir, is_smoke, show_messages
from ..data.labpics import LabPicsDataset, download_labpics
from ..data.splits import hold_out
from ..distributed import cleanup, gather_to_main, setup
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
    p = entry_point_parser(
        "python -m helpers.detection.train",
        "Fine-tune Mask R-CNN on LabPics Medical vessels (notebook 04), on one device or "
        "under torchrun. --data: a LabPicsMedical folder. Smoke mode (SEGCOURSE_SMOKE=1): "
        "data_example, no weights.",
    )
    p.add_argument(
        "--min-size", type=positive_int, default=None, help="the model's resize (default 640)"
    )
    p.add_argument("--max-size", type=positive_int, default=None, help="(default 1024)")
    p.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start from COCO weights (default: yes; smoke: no)",
    )
    add_config_arguments(p, MaskRCNNTrainConfig)
    return p


def main(argv=None) -> dict:
    p = parser()
    args = p.parse_args(argv)
    check_paths(p, args)
    cfg = config_from_args(MaskRCNNTrainConfig, args, parser=p)
    rank = int(os.environ.get("RANK", "0"))
    show_messages(logging.INFO if rank == 0 else logging.WARNING)  # one voice: rank 0
    smoke = is_smoke()
    pretrained = (not smoke) if args.pretrained is None else args.pretrained
    kwargs = dict(SMOKE_MODEL_KWARGS) if smoke else dict(min_size=640, max_size=1024)
    kwargs.update(
        {k: v for k, v in (("min_size", args.min_size), ("max_size", args.max_size)) if v}
    )
    # Downloads before the process group exists: every process asks, a lock lets one
    # fetch each file while the others wait, and no collective times out meanwhile.
    root = args.data or (DATA_EXAMPLE / "LabPicsMedical" if smoke else download_labpics())
    if pretrained:
        ensure_coco_weights()
    place = setup(args.device, args.dist_timeout)
    train, val = hold_out(LabPicsDataset(root, "Train"))
    if args.train_images is not None:
        train = Subset(train, range(min(args.train_images, len(train))))
    torch.manual_seed(cfg.seed)  # the new heads start the same on every process
    model = build_maskrcnn(num_classes=2, pretrained=pretrained, **kwargs)
    # the run folder names what sets the training apart: the global batch (processes x
    # batch size); a run refuses to resume with another number of processes anyway
    name = f"maskrcnn{'_smoke' if smoke else ''}_cli/{place.world}x{cfg.batch_size}"
    out = Path(args.out or cache_dir() / "runs" / name)
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
