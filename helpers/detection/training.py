"""The Mask R-CNN training loop, in the shape of torchvision's detection references
(notebook 04): ``train_one_epoch`` (warm-up then schedule per iteration, AMP on CUDA,
gradient clipping, a stop on a non-finite loss) and ``train_maskrcnn`` around it (the
training state after every epoch, resume, ``best.pt`` by validation mask AP).

Randomness is seeded per epoch from ``(seed, epoch)``: the order and one augmentation seed
per sample by :class:`helpers.detection.data.SeededShuffle`, the model's own sampling by
the global RNG, so a resumed run sees the batches of an uninterrupted one, whatever the
number of data-loading workers.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoints import load_weights, save_weights
from ..course.runtime import progress
from ..distributed import Place, any_rank, collective, sum_over_ranks
from ..schedules import warmup_cosine
from ..training_run import TrainingRun
from .coco_eval import evaluate_detector
from .data import SeededShuffle, collate, default_num_workers

log = logging.getLogger(__name__)


@dataclass
class MaskRCNNTrainConfig:
    """Settings. SGD with lr 0.005 and momentum 0.9 at batch size 2, as in torchvision's
    object-detection fine-tuning tutorial (which uses weight decay 5e-4); weight decay 1e-4
    as in torchvision's detection references (whose lr, 0.02, is for 16 images a step)."""

    epochs: int = 10
    batch_size: int = 2
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.01
    grad_clip: float = 10.0
    amp: bool = True  # CUDA only
    seed: int = 0
    #: data-loading processes; None: one per CPU, at most 4 (default_num_workers). The
    #: batches do not depend on it (SeededShuffle), so a run may resume with another.
    num_workers: int | None = field(default=None, metadata={"compared": False})

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"MaskRCNNTrainConfig: {name} must be at least 1, got {getattr(self, name)}"
                )
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(
                f"MaskRCNNTrainConfig: lr must be > 0 and weight_decay >= 0, got {self.lr}, "
                f"{self.weight_decay}"
            )
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(
                f"MaskRCNNTrainConfig: num_workers must be >= 0, got {self.num_workers}"
            )


def optimizer_and_schedule(model, cfg: MaskRCNNTrainConfig, total_steps: int):
    """``(optimizer, scheduler)``: SGD with momentum and weight decay over the parameters
    that train (the optimizer holds the run's one list of them), and the warm-up then
    cosine multiplier of the learning rate (:func:`helpers.schedules.warmup_cosine`),
    stepped once per iteration over ``total_steps``."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total_steps, cfg.warmup_frac, cfg.min_lr_frac)
    )
    return optimizer, scheduler


def _to(v, device):
    return v.to(device, non_blocking=True) if torch.is_tensor(v) else v


def train_one_epoch(
    model,
    optimizer,
    scheduler,
    loader,
    device,
    epoch: int,
    scaler,
    cfg: MaskRCNNTrainConfig,
    show_progress: bool = True,
) -> dict:
    """One pass over ``loader``; the scheduler steps every iteration. Returns the mean of
    each loss term and of their sum (``loss``)."""
    model.train()
    params = [p for group in optimizer.param_groups for p in group["params"]]  # what trains
    use_amp = cfg.amp and torch.device(device).type == "cuda"
    sums: dict[str, float] = {}
    n = 0
    bar = progress(
        loader, show=show_progress, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False
    )
    for images, targets in bar:
        images = [img.to(device, non_blocking=True) for img in images]
        targets = [{k: _to(v, device) for k, v in t.items()} for t in targets]
        with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
            losses = model(images, targets)
            loss = sum(losses.values())
        bad = not bool(torch.isfinite(loss))
        if any_rank(bad, loss.device):  # under torchrun: every process stops, none waits
            raise FloatingPointError(
                f"non-finite loss at epoch {epoch}: "
                + (f"{ {k: float(v) for k, v in losses.items()} }" if bad else "on another process")
                + "; stopped"
            )
        optimizer.zero_grad(set_to_none=True)
        with collective("the gradient all-reduce of DDP's backward pass"):
            scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        n += 1
        for k, v in [("loss", loss), *losses.items()]:
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        bar.set_postfix(loss=f"{sums['loss'] / n:.3f}")  # one number: the bar fits its line
    return {k: v / max(n, 1) for k, v in sums.items()}


def train_maskrcnn(
    model,
    train_dataset,
    val_reader,
    cfg: MaskRCNNTrainConfig,
    out_dir,
    device="cpu",
    resume: bool = True,
    until_epoch: int | None = None,
    show_progress: bool = True,
    place: Place | None = None,
) -> list[dict]:
    """Fine-tune ``model`` in place; return the history (one dict per epoch: the mean losses,
    ``val_segm_ap``, ``val_bbox_ap``, ``lr``, ``seconds``).

    Args:
        train_dataset: a :class:`helpers.detection.data.LabPicsDetection` with training
            transforms; val_reader: a reader for the validation mask AP (or None).
        out_dir: ``last.pt`` (resumable) and ``best.pt`` (the weights of the best validation
            mask AP; without ``val_reader``, of the last epoch) go here.
        until_epoch: stop after this epoch as an interruption would.
        place: under ``torchrun``: the model in ``DistributedDataParallel`` (gradients averaged
            in the backward pass), each process reading its share of every epoch's order,
            ``cfg.batch_size`` per process (the references' global batch), the validation
            gathered on rank 0 for pycocotools; rank 0 writes and prints. No SyncBatchNorm:
            with COCO weights the backbone's batch norms are frozen."""
    place = place or Place()
    model.to(device)
    sampler = SeededShuffle(len(train_dataset), cfg.seed, place.rank, place.world)
    steps_per_epoch = math.ceil(len(sampler) / cfg.batch_size)
    optimizer, scheduler = optimizer_and_schedule(model, cfg, cfg.epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and torch.device(device).type == "cuda")
    run = TrainingRun(
        out_dir,
        cfg,
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        scaler=scaler,
        what="Mask R-CNN",
        resume=resume,
        until_epoch=until_epoch,
        place=place,
        show_progress=show_progress,
        same_processes=True,  # its global batch is batch_size x processes
    )
    show = run.show
    trained = model  # what the loop calls: the model, or its DDP wrapper
    if place.world > 1:
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[place.local_rank] if torch.device(device).type == "cuda" else None
        )
    workers = default_num_workers() if cfg.num_workers is None else cfg.num_workers
    loader = torch.utils.data.DataLoader(
        train_dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        persistent_workers=workers > 0,  # started once, not every epoch
        pin_memory=torch.device(device).type == "cuda",  # faster, asynchronous copies
        generator=torch.Generator(),  # the loader's own draws leave the global RNG alone
    )
    for epoch in run.epochs("Mask R-CNN, epochs"):
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # the model's own sampling (RPN, heads)
        sampler.set_epoch(epoch)  # the order and the augmentations: SeededShuffle
        losses = train_one_epoch(
            trained, optimizer, scheduler, loader, device, epoch, scaler, cfg, show
        )
        if place.world > 1:  # every process's mean losses, averaged
            keys = sorted(losses)
            summed = sum_over_ranks([losses[k] for k in keys], device)
            losses = {k: v / place.world for k, v in zip(keys, summed)}
        ap = None
        if val_reader is not None:
            ap = evaluate_detector(
                model, val_reader, device, show_progress=show, desc="validation", place=place
            )
        record = {
            "epoch": epoch,
            **losses,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
            "val_segm_ap": ap["segm"]["AP"] if ap else float("nan"),
            "val_bbox_ap": ap["bbox"]["AP"] if ap else float("nan"),
        }
        line = (
            f"epoch {epoch}/{cfg.epochs}: loss {record['loss']:.3f} "
            f"(mask {record['loss_mask']:.3f}), val mask AP {record['val_segm_ap']:.3f}, "
            f"val box AP {record['val_bbox_ap']:.3f}, lr {record['lr']:.2e}, "
            f"{record['seconds']:.0f} s"
        )
        meta = {"epoch": epoch, "val_segm_ap": record["val_segm_ap"]}
        run.end_epoch(
            record, record["val_segm_ap"], lambda path: save_weights(model, path, meta), line
        )
    model.eval()
    return run.history


def load_best(model, out_dir) -> dict:
    """Load ``out_dir/best.pt`` into ``model`` (every key and shape checked first); return
    its meta: the epoch and its validation mask AP.

    Raises:
        helpers.checkpoints.CheckpointError: missing, unreadable, or weights that do not
            fit ``model``.
    """
    return load_weights(model, Path(out_dir) / "best.pt", "this Mask R-CNN")
