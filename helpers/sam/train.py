"""Fine-tune SAM's mask decoder on VOC2007 from the command line: notebook 03's job, on one
device or under ``torchrun`` (notebook 06), with notebook 03's helpers and
:class:`~helpers.sam.training.SamTrainConfig` (every field an option: ``--help``)::

    python -m helpers.sam.train --epochs 20                     # one process
    torchrun --nproc_per_node 8 -m helpers.sam.train --batch-images 8
    SEGCOURSE_SMOKE=1 python -m helpers.sam.train               # data_example, tiny

Under torchrun, rank 0 fetches the SAM checkpoint while the others wait; the embedding
cache is filled in parallel (each process encodes its share of what is missing; entries
are written whole), then every process reads all embeddings and trains
(:func:`helpers.sam.training.train_decoder`). Rank 0 writes and prints; a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from torch.utils.data import Subset

from ..command_line import (
    add_config_arguments,
    check_paths,
    config_from_args,
    entry_point_parser,
    positive_int,
)
from ..course.runtime import DATA_EXAMPLE, cache_dir, is_smoke, show_messages
from ..data.splits import hold_out
from ..data.voc import VOCInstanceDataset, download_voc2007
from ..distributed import Place, barrier, cleanup, setup, shard
from .embeddings import EmbeddingCache
from .items import prepare_items
from .model import download_checkpoint, load_sam
from .training import SamTrainConfig, run_folder, train_decoder

SKIP = ("prompts",)  # the first-prompt settings keep the recipe's default


def voc_splits(
    data: str | Path | None = None,
    train_images: int | None = None,
    val_images: int | None = None,
) -> tuple[Subset, Subset]:
    """Notebook 03's data: VOC2007's trainval (from ``data``, a VOCdevkit folder; default:
    ``data_example``'s in smoke mode, else downloaded) with every tenth image held out for
    validation (:func:`helpers.data.splits.hold_out`); the first ``train_images`` and
    ``val_images`` of each when given."""
    root = data or (DATA_EXAMPLE / "VOCdevkit" if is_smoke() else download_voc2007())
    train, val = hold_out(VOCInstanceDataset(root, "trainval"))
    if train_images is not None:
        train = Subset(train, range(min(train_images, len(train))))
    if val_images is not None:
        val = Subset(val, range(min(val_images, len(val))))
    return train, val


def fill_cache(datasets, cache: EmbeddingCache, place: Place) -> int:
    """Encode, on this process, the images of its share that the cache lacks; wait for
    all processes. Returns how many this process encoded."""
    before = cache.misses
    for ds in datasets:
        for i in shard(len(ds), place):
            cache.get(ds[i]["image"])
    barrier()
    return cache.misses - before


def parser() -> argparse.ArgumentParser:
    p = entry_point_parser(
        "python -m helpers.sam.train",
        "Fine-tune SAM's mask decoder on VOC2007 (notebook 03), on one device or under "
        "torchrun. --data: a VOCdevkit folder. Smoke mode (SEGCOURSE_SMOKE=1): "
        "data_example and a tiny model.",
    )
    p.add_argument(
        "--variant", default=None, help="vit_b, vit_l, vit_h (default: vit_b; smoke: tiny)"
    )
    p.add_argument(
        "--checkpoint", default=None, help="SAM weights file (default: the official one)"
    )
    p.add_argument("--embeddings", default=None, help="embedding cache folder")
    p.add_argument("--val-images", type=positive_int, default=None, help="the first N only")
    add_config_arguments(p, SamTrainConfig, SKIP)
    return p


def main(argv=None) -> dict:
    p = parser()
    args = p.parse_args(argv)
    check_paths(p, args)
    cfg = config_from_args(SamTrainConfig, args, SKIP, p)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.batch_images % world:  # before any download or encoding
        p.error(f"--batch-images {cfg.batch_images} is not divisible by the {world} processes")
    rank = int(os.environ.get("RANK", "0"))
    show_messages(logging.INFO if rank == 0 else logging.WARNING)  # one voice: rank 0
    smoke = is_smoke()
    variant = args.variant or ("tiny" if smoke else "vit_b")
    # Downloads before the process group exists: every process asks, a lock lets one
    # fetch each file while the others wait, and no collective times out meanwhile.
    if variant != "tiny" and args.checkpoint is None:
        download_checkpoint(variant)
    train, val = voc_splits(args.data, args.train_images, args.val_images)
    place = setup(args.device, args.dist_timeout)
    sam = load_sam(variant, args.checkpoint, device=place.device)
    # the run folder names what sets the training apart: recipe and global batch
    out = Path(args.out or run_folder(variant, f"{cfg.recipe}_batch{cfg.batch_images}", "_cli"))
    cache = EmbeddingCache(args.embeddings or cache_dir() / "embeddings", sam)
    encoded = fill_cache([train, val], cache, place)
    train_items, _ = prepare_items(train, cache, show_progress=False)
    val_items, _ = prepare_items(val, cache, show_progress=False)
    history = train_decoder(
        sam,
        train_items,
        val_items,
        cfg,
        out,
        resume=not args.no_resume,
        until_epoch=args.until_epoch,
        show_progress=place.main,
        place=place,
    )
    summary = {
        "rank": place.rank,
        "world": place.world,
        "encoded_here": encoded,
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
