"""Fine-tuning SAM's mask decoder: the seed recipe, done right.

Introduced in notebook 03. What is trained and why:

- the **image encoder** is frozen and its embeddings come from the cache
  (:mod:`helpers.embeddings`): computed once, not every epoch;
- the **prompt encoder** is frozen (6,220 parameters that already know where a point is);
- the **mask decoder** (4.06 M parameters) is trained, with **all instances of an image
  in one decoder batch** instead of one call per instance;
- optional **two-pass refinement** (the recipe's): pass 1 gives 3 masks, the best by
  predicted IoU goes back in as ``mask_input``, pass 2 gives 1 mask, which is scored;
- loss at SAM's 256 x 256 low-res output: BCE + soft Dice from logits, void and padding
  excluded, plus an optional MSE between the IoU head and the actual IoU;
- AdamW + linear warm-up then cosine decay, gradient clipping, mixed precision on CUDA,
  a stop on a non-finite loss, train and validation loss per epoch (a true mean: the
  seed divided by one too many);
- ``best.pt``: decoder-only weights of the best validation epoch; ``last.pt``: everything
  needed to resume (decoder, optimizer, scheduler, scaler, epoch, history, RNG). Both
  written atomically. Prompts and the order of images are drawn from a generator seeded
  by ``(seed, epoch)``, so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

from .checkpoints import atomic_save
from .embeddings import EmbeddingCache
from .losses import bce_dice_loss, soft_iou
from .runtime import progress
from .schedules import warmup_cosine
from .prompts import InstanceCandidates, PromptConfig, instance_candidates, sample_prompts
from .sam_model import load_decoder, save_decoder
from .sam_predict import ImageEmbedding, predict

log = logging.getLogger(__name__)

LOW_RES = 256  # SAM's low-res mask side
FRAME = 1024  # SAM's input frame side


@dataclass
class SamItem:
    """One image ready for decoder training or evaluation.

    Attributes:
        image_id: the reader's id.
        emb: its cached embedding.
        masks: ``N x H x W`` bool instances (original size); labels: ``N`` int64.
        void: ``H x W`` bool pixels that count nowhere.
        cands: per instance, where prompts may be drawn.
        targets: ``N x 256 x 256`` bool instances in the low-res frame.
        valid: ``256 x 256`` bool low-res pixels that count (not void, not padding).
    """

    image_id: str
    emb: ImageEmbedding
    masks: np.ndarray
    labels: np.ndarray
    void: np.ndarray
    cands: list[InstanceCandidates]
    targets: torch.Tensor
    valid: torch.Tensor


def lowres_targets(masks: np.ndarray, void: np.ndarray, input_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks moved into SAM's low-res frame: resized like the image (longest side to
    1024), padded to 1024 x 1024, averaged over 4 x 4 cells, thresholded at 0.5.

    Returns:
        ``targets`` ``N x 256 x 256`` bool and ``valid`` ``256 x 256`` bool (mostly
        non-void cells inside the unpadded image).
    """
    h, w = input_size
    stack = torch.from_numpy(np.concatenate([masks, void[None], np.ones_like(void)[None]]).astype(np.float32))
    resized = F.interpolate(stack[None], size=(h, w), mode="bilinear", align_corners=False)
    padded = F.pad(resized, (0, FRAME - w, 0, FRAME - h))
    low = F.avg_pool2d(padded, FRAME // LOW_RES)[0]
    targets, void_low, inside = low[:-2] > 0.5, low[-2], low[-1]
    return targets, (void_low < 0.5) & (inside > 0.5)


def prepare_items(dataset, cache: EmbeddingCache, show_progress: bool = True) -> tuple[list[SamItem], int]:
    """Embeddings (from the cache, computed where missing) and targets for every image of
    a :class:`~helpers.VOCInstanceDataset`-like reader.

    Returns:
        ``(items, skipped)``: images without any instance are skipped and counted.
    """
    items, skipped, batch = [], 0, 4  # encode misses 4 at a time; read each sample once
    for start in progress(range(0, len(dataset), batch), show=show_progress, desc="preparing images", leave=False):
        samples = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
        embeddings = cache.get_many([s["image"] for s in samples], batch_size=batch, show_progress=False)
        for s, emb in zip(samples, embeddings):
            keep = s["masks"].reshape(len(s["masks"]), -1).any(1)
            if not keep.any():
                skipped += 1
                continue
            masks, labels = s["masks"][keep], s["labels"][keep]
            void = s.get("void", s.get("ignore"))
            targets, valid = lowres_targets(masks, void, emb.input_size)
            cands = [instance_candidates(m, void) for m in masks]
            items.append(SamItem(s["image_id"], emb, masks, labels, void, cands, targets, valid))
    if skipped:
        log.warning("prepare_items: skipped %d of %d images without instances", skipped, len(dataset))
    return items, skipped


@dataclass
class TrainConfig:
    """Decoder fine-tuning settings; defaults follow the seed recipe where it had one."""

    epochs: int = 10
    lr: float = 1e-4
    weight_decay: float = 5e-4
    warmup_frac: float = 0.05  # of all steps; linear from 0 to lr
    min_lr_frac: float = 0.0  # cosine decays to lr * min_lr_frac
    grad_clip: float = 1.0
    two_pass: bool = True
    dice_weight: float = 1.0
    iou_loss_weight: float = 1.0  # 0 turns the IoU-head term off
    prompts: PromptConfig = field(default_factory=PromptConfig)
    seed: int = 0
    amp: bool = True  # mixed precision, CUDA only


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """The multiplier of ``cfg.lr`` at ``step``: :func:`helpers.schedules.warmup_cosine`."""
    return warmup_cosine(step, total, cfg.warmup_frac, cfg.min_lr_frac)


def decoder_step(sam: Sam, item: SamItem, cfg: TrainConfig, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
    """Loss of one image's instances, as one decoder batch (prompts drawn from ``rng``)."""
    prompts = sample_prompts(item.cands, cfg.prompts, rng)
    device = sam.device
    if cfg.two_pass:
        # pass 1 only chooses the mask prompt (detached, as in the recipe): no graph needed
        with torch.no_grad():
            first = predict(sam, item.emb, prompts["points"], prompts["labels"], prompts["boxes"], multimask=True, full_size=False)
        best = first["iou"].argmax(dim=1)
        mask_input = first["low_res"][torch.arange(len(best)), best][:, None]
        out = predict(sam, item.emb, prompts["points"], prompts["labels"], prompts["boxes"], mask_input=mask_input, multimask=False, full_size=False)
    else:
        out = predict(sam, item.emb, prompts["points"], prompts["labels"], prompts["boxes"], multimask=False, full_size=False)
    logits = out["low_res"][:, 0].float()
    targets, valid = item.targets.to(device), item.valid.to(device)
    loss, parts = bce_dice_loss(logits, targets, valid, cfg.dice_weight)
    if cfg.iou_loss_weight:
        iou_loss = F.mse_loss(out["iou"][:, 0].float(), soft_iou(logits.detach(), targets, valid))
        loss = loss + cfg.iou_loss_weight * iou_loss
        parts["iou_mse"] = float(iou_loss.detach())
    return loss, parts


def _freeze_all_but_decoder(sam: Sam) -> list[torch.nn.Parameter]:
    for p in sam.parameters():
        p.requires_grad_(False)
    params = list(sam.mask_decoder.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def train_decoder(
    sam: Sam,
    train_items: list[SamItem],
    val_items: list[SamItem],
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = True,
    until_epoch: int | None = None,
    show_progress: bool = True,
) -> list[dict]:
    """Fine-tune ``sam.mask_decoder`` in place; return the history (one dict per epoch:
    ``epoch``, ``train_loss``, ``val_loss``, ``lr``, ``seconds``).

    Args:
        out_dir: where ``best.pt`` (decoder only, best validation loss) and ``last.pt``
            (resumable state) are written.
        resume: continue from ``out_dir/last.pt`` when it exists (settings must match).
        until_epoch: stop after this epoch (1-based) even if ``cfg.epochs`` is larger,
            as an interruption would; a later call with ``resume`` finishes the run.

    Raises:
        FloatingPointError: a non-finite loss; ``last.pt`` holds the last good epoch.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = sam.device
    params = _freeze_all_but_decoder(sam)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * len(train_items)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, cfg))
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict] = []
    start_epoch, best_val = 1, math.inf
    last_path = out_dir / "last.pt"
    if resume and last_path.is_file():
        state = torch.load(last_path, map_location="cpu", weights_only=True)
        if state["config"] != asdict(cfg):
            raise ValueError(f"{last_path}: written with other settings; delete it or pass resume=False")
        sam.mask_decoder.load_state_dict(state["mask_decoder"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        history, best_val, start_epoch = state["history"], state["best_val"], state["epoch"] + 1
        log.info("resumed from %s after epoch %d", last_path, state["epoch"])

    autocast = torch.autocast("cuda", dtype=torch.float16, enabled=use_amp)
    last_epoch = min(cfg.epochs, until_epoch or cfg.epochs)
    for epoch in range(start_epoch, last_epoch + 1):
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])
        sam.mask_decoder.train()
        running, n = 0.0, 0
        bar = progress(rng.permutation(len(train_items)), show=show_progress, desc=f"epoch {epoch}/{cfg.epochs}", leave=False)
        for i in bar:
            item = train_items[i]
            with autocast:
                loss, parts = decoder_step(sam, item, cfg, rng)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss ({loss.item()}) at epoch {epoch}, image {item.image_id}; "
                    f"stopped. {last_path} holds the last finished epoch."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            running += loss.item()
            n += 1
            bar.set_postfix(loss=f"{running / n:.4f}", **{k: f"{v:.3f}" for k, v in parts.items()})
        val_loss = validation_loss(sam, val_items, cfg)
        record = {"epoch": epoch, "train_loss": running / max(n, 1), "val_loss": val_loss,
                  "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}  # fmt: skip
        history.append(record)
        log.info("epoch %d: %s", epoch, record)
        if val_loss < best_val:
            best_val = val_loss
            save_decoder(sam, out_dir / "best.pt", {"epoch": epoch, "val_loss": val_loss})
        atomic_save(
            {
                "epoch": epoch, "config": asdict(cfg), "history": history, "best_val": best_val,
                "mask_decoder": sam.mask_decoder.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "torch_rng": torch.get_rng_state(),
            },
            last_path,
        )  # fmt: skip
    sam.mask_decoder.eval()
    return history


@torch.no_grad()
def validation_loss(sam: Sam, items: list[SamItem], cfg: TrainConfig) -> float:
    """Mean loss over ``items`` with prompts from a fixed generator (the same prompts
    every epoch, so epochs compare)."""
    if not items:
        return float("nan")
    sam.mask_decoder.eval()
    rng = np.random.default_rng([cfg.seed, 1_000_003])
    total = sum(decoder_step(sam, item, cfg, rng)[0].item() for item in items)
    return total / len(items)


def load_best(sam: Sam, out_dir: str | Path) -> dict:
    """Merge ``out_dir/best.pt`` into ``sam``; return its meta (epoch, val_loss)."""
    return load_decoder(sam, Path(out_dir) / "best.pt")
