"""The Mask R-CNN training loop, in the shape of torchvision's detection references.

Introduced in notebook 04. ``train_one_epoch`` (warm-up then schedule per iteration,
mixed precision on CUDA, gradient clipping, a stop on a non-finite loss, a progress bar
with running losses) and ``train_maskrcnn`` around it: a checkpoint dict (model,
optimizer, lr_scheduler, scaler, epoch, settings, history) written atomically after
every epoch, resume, and ``best.pt`` chosen by validation mask AP.

Randomness (shuffling, augmentation) is seeded per epoch from ``(seed, epoch)``, so a
resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .checkpoints import atomic_save
from .coco_eval import evaluate_detector
from .detection_data import collate
from .runtime import progress
from .schedules import warmup_cosine

log = logging.getLogger(__name__)


@dataclass
class DetTrainConfig:
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
    num_workers: int = 0


def train_one_epoch(
    model,
    optimizer,
    scheduler,
    loader,
    device,
    epoch: int,
    scaler,
    cfg: DetTrainConfig,
    show_progress: bool = True,
) -> dict:
    """One pass over ``loader``; the scheduler steps every iteration. Returns the mean of
    each loss term and of their sum (``loss``)."""
    model.train()
    use_amp = cfg.amp and torch.device(device).type == "cuda"
    sums: dict[str, float] = {}
    n = 0
    bar = progress(loader, show=show_progress, desc=f"epoch {epoch}/{cfg.epochs}", leave=False)
    for images, targets in bar:
        images = [img.to(device) for img in images]
        targets = [
            {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets
        ]
        with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
            losses = model(images, targets)
            loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss at epoch {epoch}: "
                f"{ {k: float(v) for k, v in losses.items()} }; stopped"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.requires_grad], cfg.grad_clip
        )
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        n += 1
        for k, v in [("loss", loss), *losses.items()]:
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        bar.set_postfix({k: f"{v / n:.3f}" for k, v in sums.items()})
    return {k: v / max(n, 1) for k, v in sums.items()}


def train_maskrcnn(
    model,
    train_dataset,
    val_reader,
    cfg: DetTrainConfig,
    out_dir,
    device="cpu",
    resume: bool = True,
    until_epoch: int | None = None,
    show_progress: bool = True,
) -> list[dict]:
    """Fine-tune ``model`` in place; return the history (one dict per epoch with the
    mean losses, ``val_segm_ap``, ``val_bbox_ap``, ``lr``, ``seconds``).

    Args:
        train_dataset: a :class:`helpers.detection_data.LabPicsDetection` with training
            transforms.
        val_reader: a reader (``LabPicsDataset``) for the validation mask AP.
        out_dir: ``last.pt`` (resumable) and ``best.pt`` (model weights of the best
            validation mask AP) go here.
        until_epoch: stop after this epoch as an interruption would.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    steps_per_epoch = math.ceil(len(train_dataset) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total, cfg.warmup_frac, cfg.min_lr_frac)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and torch.device(device).type == "cuda")
    history, best_ap, start = [], -1.0, 1
    last = out_dir / "last.pt"
    if resume and last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=True)
        if state["settings"] != asdict(cfg):
            raise ValueError(f"{last}: written with other settings; delete it or pass resume=False")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["lr_scheduler"])
        scaler.load_state_dict(state["scaler"])
        history, best_ap, start = state["history"], state["best_ap"], state["epoch"] + 1
        log.info("resumed from %s after epoch %d", last, state["epoch"])
    for epoch in range(start, min(cfg.epochs, until_epoch or cfg.epochs) + 1):
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # augmentations draw from the global RNG
        loader = torch.utils.data.DataLoader(
            train_dataset,
            batch_size=cfg.batch_size,
            shuffle=True,
            collate_fn=collate,
            num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch),
        )
        losses = train_one_epoch(
            model, optimizer, scheduler, loader, device, epoch, scaler, cfg, show_progress
        )
        ap = (
            evaluate_detector(model, val_reader, device, show_progress=False)
            if val_reader is not None
            else None
        )
        record = {
            "epoch": epoch,
            **losses,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
            "val_segm_ap": ap["segm"]["AP"] if ap else float("nan"),
            "val_bbox_ap": ap["bbox"]["AP"] if ap else float("nan"),
        }
        history.append(record)
        log.info("epoch %d: %s", epoch, record)
        if ap is not None and ap["segm"]["AP"] > best_ap:
            best_ap = ap["segm"]["AP"]
            atomic_save(
                {"model": model.state_dict(), "epoch": epoch, "val_segm_ap": best_ap},
                out_dir / "best.pt",
            )
        atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "settings": asdict(cfg),
                "history": history,
                "best_ap": best_ap,
            },
            last,
        )
    model.eval()
    return history


def load_best(model, out_dir) -> dict:
    """Load ``out_dir/best.pt`` into ``model``; return its epoch and validation mask AP."""
    state = torch.load(Path(out_dir) / "best.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    return {"epoch": state["epoch"], "val_segm_ap": state["val_segm_ap"]}
