"""Fine-tuning SAM's mask decoder: two recipes, one loop (notebook 03, which writes each
piece out and checks it equal to this module).

Read top to bottom: the settings (:class:`SamTrainConfig`), one image's loss
(:func:`sam_image_loss`, :func:`seed_image_loss`), one optimizer step
(:func:`optimizer_step`), the epoch loop (:func:`train_decoder`) and the validation that
chooses ``best.pt`` (:func:`validation`). Only the mask decoder trains (notebook 07 adds
LoRA on the encoder), an image's instances in one decoder batch, every decoder call one
round of :func:`helpers.sam.predict.predict_round`.

- ``"sam"`` (the default), the SAM paper's interactive recipe (appendix A): the first
  prompt, then ``click_rounds`` rounds that each add a click drawn from the previous
  mask's error region and ``refine_rounds`` that add none, the previous low-res logits
  (detached) as the mask prompt from round 2 on. A single point gets three masks and only
  the lowest loss counts; the IoU head regresses the IoU of every mask it scores (SAM 2's
  ``supervise_all_iou: true``). Each round is back-propagated as it is computed.
- ``"seed"``: pass 1 (three masks, no gradient) feeds the mask its IoU head ranks best
  back as the mask prompt of pass 2 (one mask), the only loss; the IoU head gets none.

Both: BCE + soft Dice on the low-res logits, void and padding left out; AdamW, warm-up
then cosine, clipping, fp16 autocast on CUDA, a stop on a non-finite loss. The order
comes from ``(seed, epoch)``, an image's draws from ``(seed, epoch, step, slot)``: a
resumed run, or one on several processes, ends with one uninterrupted process's weights.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

from ..course.runtime import cache_dir, progress
from ..distributed import Place, any_rank, shard, sum_gradients, sum_over_ranks
from ..schedules import warmup_cosine
from ..training_run import TrainingRun
from .clicks import error_clicks
from .evaluation import box_ious, click_ious
from .items import SamItem, lowres_cell_to_pixel
from .losses import bce_dice_per_mask, iou_of_logits
from .model import load_decoder, save_decoder
from .predict import predict, predict_round
from .prompts import PromptConfig, sample_prompts

log = logging.getLogger(__name__)

RECIPES = ("sam", "seed")


@dataclass
class SamTrainConfig:
    """Decoder fine-tuning settings.

    Attributes:
        recipe: ``"sam"`` (interactive, the default) or ``"seed"`` (see the module).
        lr, weight_decay: AdamW's (the seed's repository's values, 1e-4 and 5e-4).
        dice_weight: loss = BCE + ``dice_weight`` x Dice.
        iou_loss_weight: the IoU head's MSE weight (the SAM paper: 1); ``"seed"`` ignores it.
        click_rounds, refine_rounds: ``"sam"`` only; the paper uses 8 and 2.
        prompts: the first prompt's scheme, or None (the default) for the recipe's own:
            :class:`PromptConfig` for ``"sam"``, :meth:`PromptConfig.seed` for ``"seed"``
            (see :meth:`first_prompts`).
        batch_images: images per optimizer step (the loss is their mean); under
            ``torchrun`` the step's images are dealt to the processes, so a run on ``N``
            processes takes the same steps as one process (divisible by ``N``).
    """

    recipe: str = "sam"
    epochs: int = 20
    lr: float = 1e-4
    weight_decay: float = 5e-4
    warmup_frac: float = 0.05  # of all steps; linear from 0 to lr
    min_lr_frac: float = 0.0  # cosine decays to lr * min_lr_frac
    grad_clip: float = 1.0
    dice_weight: float = 1.0
    iou_loss_weight: float = 1.0
    click_rounds: int = 8
    refine_rounds: int = 2
    prompts: PromptConfig | None = None
    seed: int = 0
    amp: bool = True  # fp16 autocast, CUDA only
    batch_images: int = 1  # images per optimizer step, over all processes (notebook 06)
    #: LoRA only (notebook 07): the encoder's blocks recomputed in the backward pass; the
    #: same gradients for less memory, so a run may resume with the other value
    checkpointing: bool = field(default=False, metadata={"compared": False})

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise ValueError(f"SamTrainConfig.recipe must be one of {RECIPES}, got {self.recipe!r}")
        if self.epochs < 1:
            raise ValueError(f"SamTrainConfig: epochs must be at least 1, got {self.epochs}")
        if self.batch_images < 1:
            raise ValueError(
                f"SamTrainConfig: batch_images must be at least 1, got {self.batch_images}"
            )
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(
                f"SamTrainConfig: lr must be > 0 and weight_decay >= 0, got {self.lr}, "
                f"{self.weight_decay}"
            )
        if self.click_rounds < 0 or self.refine_rounds < 0:
            raise ValueError("SamTrainConfig: click_rounds and refine_rounds must be >= 0")
        if isinstance(self.prompts, dict):  # from a checkpoint's asdict()
            self.prompts = PromptConfig(**self.prompts)

    def first_prompts(self) -> PromptConfig:
        """How the first prompt of an image is drawn: ``prompts`` when given, else the
        recipe's own (derived each time, so a config changed with
        ``dataclasses.replace(cfg, recipe=...)`` follows its new recipe)."""
        if self.prompts is not None:
            return self.prompts
        return PromptConfig() if self.recipe == "sam" else PromptConfig.seed()


def lr_factor(step: int, total: int, cfg: SamTrainConfig) -> float:
    """The multiplier of ``cfg.lr`` at ``step``: :func:`helpers.schedules.warmup_cosine`."""
    return warmup_cosine(step, total, cfg.warmup_frac, cfg.min_lr_frac)


def round_schedule(cfg: SamTrainConfig, rng: np.random.Generator) -> list[bool]:
    """The rounds after the first prompt: True adds a click, False only feeds back the
    mask. ``click_rounds`` Trues; of the ``refine_rounds`` Falses the last is at the end
    and the others at random places among the clicks (the paper's 2: one inserted at
    random, one at the end)."""
    rounds = [True] * cfg.click_rounds
    for _ in range(max(0, cfg.refine_rounds - 1)):
        rounds.insert(int(rng.integers(0, len(rounds) + 1)), False)
    return rounds + [False] * min(1, cfg.refine_rounds)


def _backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
    (loss if scaler is None else scaler.scale(loss)).backward()


def sam_image_loss(
    sam: Sam,
    item: SamItem,
    cfg: SamTrainConfig,
    rng: np.random.Generator,
    step_images: int | None = None,
    scaler: torch.amp.GradScaler | None = None,
    amp: bool = False,
) -> tuple[float, dict]:
    """One image's loss under the SAM paper's interactive recipe (see the module).

    Args:
        rng: every random draw of this image (its first prompt, rounds and clicks).
        step_images: back-propagate this image's part of a step's mean loss over that many
            images: each round's loss, divided by the rounds and by ``step_images``, as
            soon as it is computed (through ``scaler`` when given). None: no backward.
        amp: fp16 autocast (CUDA).

    Returns:
        The image's loss (the mean over its rounds, float) and its parts (``mask``,
        ``iou_mse``, ``rounds``, ``multimask_rounds``).
    """
    device = sam.device
    targets, valid = item.targets.to(device), item.valid.to(device)
    p = sample_prompts(item.cands, cfg.first_prompts(), rng)
    points, labels, boxes = p["points"], p["labels"], p["boxes"]
    schedule = [True] + round_schedule(cfg, rng)  # round 1: the first prompt itself
    total, mask_total, iou_total, multimask_rounds = 0.0, 0.0, 0.0, 0
    prev = None
    for r, add_click in enumerate(schedule):
        if r > 0 and add_click:
            rows, cols, positive, has = error_clicks(prev, targets, valid, rng)
            new = lowres_cell_to_pixel(rows, cols, item.emb)[:, None]
            lab = np.where(has, positive.astype(np.int64), -1)[:, None]  # -1: SAM's "no point"
            points = new if points is None else np.concatenate([points, new], axis=1)
            labels = lab if labels is None else np.concatenate([labels, lab], axis=1)
        mask_input = None if prev is None else prev[:, None]
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            out = predict_round(sam, item.emb, points, labels, boxes, mask_input, full_size=False)
        logits = out["low_res"].float()  # N x M x h x w low-res, M = 3 or 1
        per_mask, _, _ = bce_dice_per_mask(logits, targets[:, None], valid, cfg.dice_weight)
        mask_loss = per_mask.min(dim=1).values.mean()  # M = 1: the single mask's loss
        iou_mse = F.mse_loss(
            out["iou"].float(), iou_of_logits(logits.detach(), targets[:, None], valid)
        )
        loss = mask_loss + cfg.iou_loss_weight * iou_mse
        if step_images is not None:
            _backward(loss / len(schedule) / step_images, scaler)
        prev = out["chosen_low_res"][:, 0].detach().float()
        total += float(loss.detach())
        mask_total += float(mask_loss.detach())
        iou_total += float(iou_mse.detach())
        multimask_rounds += int(out["multimask"])
    n = len(schedule)
    parts = {
        "mask": mask_total / n,
        "iou_mse": iou_total / n,
        "rounds": n,
        "multimask_rounds": multimask_rounds,
    }
    return total / n, parts


def seed_image_loss(
    sam: Sam,
    item: SamItem,
    cfg: SamTrainConfig,
    rng: np.random.Generator,
    step_images: int | None = None,
    scaler: torch.amp.GradScaler | None = None,
    amp: bool = False,
) -> tuple[float, dict]:
    """One image's loss under the seed's two-pass recipe (see the module); arguments as
    :func:`sam_image_loss` (the one loss is back-propagated once). Returns the loss
    (float) and its parts (``bce``, ``dice``)."""
    p = sample_prompts(item.cands, cfg.first_prompts(), rng)
    targets, valid = item.targets.to(sam.device), item.valid.to(sam.device)
    with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
        with torch.no_grad():
            first = predict(
                sam, item.emb, p["points"], p["labels"], p["boxes"], multimask=True, full_size=False
            )
            rows = torch.arange(len(first["iou"]), device=sam.device)
            mask_input = first["low_res"][rows, first["iou"].argmax(dim=1)][:, None]
        out = predict(
            sam,
            item.emb,
            p["points"],
            p["labels"],
            p["boxes"],
            mask_input=mask_input,
            multimask=False,
            full_size=False,
        )
    per_mask, bce, dice = bce_dice_per_mask(
        out["low_res"][:, 0].float(), targets, valid, cfg.dice_weight
    )
    loss = per_mask.mean()
    if step_images is not None:
        _backward(loss / step_images, scaler)
    return float(loss.detach()), {
        "bce": float(bce.detach().mean()),
        "dice": float(dice.detach().mean()),
    }


IMAGE_LOSSES = {"sam": sam_image_loss, "seed": seed_image_loss}


def decoder_parameters(sam: Sam) -> list[torch.nn.Parameter]:
    """Freeze everything but the mask decoder; return the decoder's parameters."""
    for p in sam.parameters():
        p.requires_grad_(False)
    params = list(sam.mask_decoder.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def optimizer_step(
    sam: Sam,
    images: list[tuple[SamItem, np.random.Generator]],
    cfg: SamTrainConfig,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler,
    place: Place,
    amp: bool = False,
    image_loss=None,
) -> list[float]:
    """One optimizer step on the mean loss of a step's images, ``images`` (each with its
    random draws; every process holds all of them). Returns this process's image losses.
    ``image_loss``: the recipe's (:data:`IMAGE_LOSSES`) unless given (notebook 07's encodes
    each image first).

    Raises:
        FloatingPointError: a non-finite loss on any process (every process raises).
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.zero_grad(set_to_none=True)
    image_loss = image_loss or IMAGE_LOSSES[cfg.recipe]
    losses, bad = [], None
    for slot in shard(len(images), place):  # this process's share of the step's images
        item, rng = images[slot]
        losses.append(image_loss(sam, item, cfg, rng, len(images), scaler, amp)[0])
        if not math.isfinite(losses[-1]) and bad is None:
            bad = f"non-finite loss ({losses[-1]}) on image {item.image_id}"
    # Multi-process agreement: each line runs on every process, in the same order.
    if any_rank(bad is not None, sam.device):  # all stop together; none waits forever
        raise FloatingPointError(bad or "non-finite loss on another process")
    sum_gradients(params)  # the step's gradient: the sum of the processes' shares
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return losses


def train_decoder(
    sam: Sam,
    train_items: list[SamItem],
    val_items: list[SamItem],
    cfg: SamTrainConfig,
    out_dir: str | Path,
    resume: bool = True,
    until_epoch: int | None = None,
    show_progress: bool = True,
    place: Place | None = None,
    images: dict | None = None,
) -> list[dict]:
    """Fine-tune ``sam.mask_decoder`` in place; return the history (one dict per epoch:
    ``epoch``, ``train_loss``, the entries of :func:`validation`, ``lr``, ``seconds``).

    Args:
        out_dir: ``best.pt`` (the best validation epoch) and ``last.pt`` (resumable) go here.
        resume: continue from ``out_dir/last.pt`` when it exists (settings must match);
            until_epoch: stop after this epoch (1-based), as an interruption would.
        place: this process under ``torchrun`` (:func:`helpers.distributed.setup`): each
            computes its share of each step's images and of the validation; rank 0 writes.
        images: ``{image_id: H x W x 3 uint8}``: train the encoder's LoRA layers too
            (:mod:`helpers.sam.lora`, notebook 07), each image encoded anew in every step and
            validation; ``best.pt`` is then a :func:`helpers.sam.lora.save_adapter` file.

    Raises:
        FloatingPointError: a non-finite loss on any process (all stop); ``last.pt`` holds
            the last good epoch."""
    place = place or Place()
    if cfg.batch_images % place.world:
        raise ValueError(
            f"batch_images {cfg.batch_images} is not divisible by the {place.world} processes"
        )
    device = sam.device
    parts, image_loss, save_best = sam.mask_decoder, IMAGE_LOSSES[cfg.recipe], save_decoder
    if images is not None:  # notebook 07: the encoder's LoRA layers train too
        from .lora import encoding_loss, reembedded, save_adapter, trained_parts

        parts, save_best = trained_parts(sam), save_adapter
        image_loss = encoding_loss(image_loss, images, cfg.checkpointing)
    decoder_parameters(sam)  # everything frozen but the decoder ...
    params = [p.requires_grad_(True) for p in parts.parameters()]  # ... and what trains
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_items) / cfg.batch_images)
    total = cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, cfg)
    )
    amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    run = TrainingRun(
        out_dir,
        cfg,
        model=parts,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        scaler=scaler,
        what=f"the {cfg.recipe} recipe",
        resume=resume,
        until_epoch=until_epoch,
        place=place,
        show_progress=show_progress,
    )
    for epoch in run.epochs(f"{cfg.recipe} recipe, epochs"):
        t0 = time.perf_counter()
        parts.train()
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_items))
        losses: list[float] = []
        bar = progress(
            range(steps_per_epoch),
            show=run.show,
            desc=f"epoch {epoch}/{cfg.epochs}",
            unit="step" if cfg.batch_images > 1 else "img",
            leave=False,
        )
        for k in bar:
            batch = order[k * cfg.batch_images : (k + 1) * cfg.batch_images]
            step = [
                (train_items[i], np.random.default_rng([cfg.seed, epoch, k, slot]))
                for slot, i in enumerate(batch)
            ]
            try:
                losses += optimizer_step(
                    sam, step, cfg, optimizer, scheduler, scaler, place, amp, image_loss
                )
            except FloatingPointError as err:
                raise FloatingPointError(
                    f"{err} at epoch {epoch}; stopped. {run.last_path} holds the last "
                    "finished epoch."
                ) from None
            bar.set_postfix(loss=f"{sum(losses) / max(len(losses), 1):.4f}")
        loss_sum, n = sum_over_ranks([sum(losses), len(losses)], device)  # every process's
        parts.eval()
        val = validation(
            sam, val_items if images is None else reembedded(sam, val_items, images), cfg, place
        )
        record = {
            "epoch": epoch,
            "train_loss": loss_sum / max(n, 1),
            **val,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
        }
        line = (
            f"epoch {epoch}/{cfg.epochs}: train loss {record['train_loss']:.4f}, "
            f"val loss {val['val_loss']:.4f}, val mIoU@1 {val['val_miou@1']:.3f}, "
            f"val box mIoU {val['val_box_miou']:.3f}, lr {record['lr']:.2e}, "
            f"{record['seconds']:.1f} s"
        )
        meta = {"recipe": cfg.recipe, **{k: record[k] for k in ("epoch", *val)}}
        run.end_epoch(record, val["val_score"], lambda path: save_best(sam, path, meta), line)
    return run.history


@torch.no_grad()
def validation(
    sam: Sam, items: list[SamItem], cfg: SamTrainConfig, place: Place | None = None
) -> dict:
    """The numbers that choose ``best.pt``, on the validation images.

    Returns:
        ``val_loss``: the recipe's mean loss, prompts and clicks from fixed generators
        (the same draws every epoch, so epochs compare, one per image, so processes
        split the images without changing the numbers); ``val_miou@1`` and
        ``val_box_miou``: the evaluation's first click and box prompt
        (:mod:`helpers.sam.evaluation`, one click, no early stop); ``val_score``: their mean,
        what the best epoch maximises: the checkpoint is chosen by what is measured.
        Without validation images all are NaN and the last epoch counts as the best.
    """
    if not items:
        nan = float("nan")
        return {"val_loss": nan, "val_miou@1": nan, "val_box_miou": nan, "val_score": nan}
    place = place or Place()
    sam.mask_decoder.eval()
    loss, one_click, box = 0.0, [], []
    for i in shard(len(items), place):  # this process's share
        rng = np.random.default_rng([cfg.seed, 1_000_003, i])  # the same draws every epoch
        loss += IMAGE_LOSSES[cfg.recipe](sam, items[i], cfg, rng)[0]
        one_click.append(click_ious(sam, items[i], max_clicks=1)[:, 0])
        box.append(box_ious(sam, items[i]))
    one_click = np.concatenate(one_click) if one_click else np.zeros(0)
    box = np.concatenate(box) if box else np.zeros(0)
    loss, click_sum, clicks, box_sum, boxes = sum_over_ranks(
        [loss, one_click.sum(), len(one_click), box.sum(), len(box)], sam.device
    )
    miou, box_miou = click_sum / clicks, box_sum / boxes
    return {
        "val_loss": loss / len(items),
        "val_miou@1": miou,
        "val_box_miou": box_miou,
        "val_score": (miou + box_miou) / 2,
    }


def run_folder(variant: str, recipe: str = "sam", tag: str = "") -> Path:
    """Where a run of ``recipe`` on SAM ``variant`` keeps ``best.pt`` and ``last.pt``:
    ``<cache>/runs/sam_decoder_<variant><tag>/<recipe>``. Notebook 03 trains there (no
    ``tag``), notebook 05 reads its ``best.pt`` from there, and the command line keeps
    its runs apart (``tag="_cli"``, the recipe with its global batch)."""
    return cache_dir() / "runs" / f"sam_decoder_{variant}{tag}" / recipe


def load_best(sam: Sam, out_dir: str | Path) -> dict:
    """Merge ``out_dir/best.pt`` into ``sam``; return its meta (recipe, epoch, validation
    numbers)."""
    return load_decoder(sam, Path(out_dir) / "best.pt")
