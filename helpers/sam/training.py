"""Fine-tuning SAM's mask decoder: two recipes, one loop.

Introduced in notebook 03 (which writes one step of each recipe out in cells and checks
it equal to :func:`sam_step` and :func:`seed_step`). The image encoder and the prompt
encoder are frozen (embeddings come from :mod:`helpers.sam.embeddings`); only the mask
decoder (4,058,340 parameters for vit_b) trains, all instances of an image in one
decoder batch. Every decoder call is one round of :func:`helpers.sam.predict.predict_round`,
the same path as evaluation and the widget.

Recipes (``SamTrainConfig.recipe``):

- ``"sam"`` (the default), after the SAM paper's interactive training (appendix A).
  Round 1 is the first prompt (:mod:`helpers.sam.prompts`); each of ``click_rounds``
  rounds adds one click per instance drawn uniformly from the previous mask's error
  region (:func:`helpers.sam.clicks.error_clicks`), and ``refine_rounds`` rounds add
  none (the last at the end, others at random among the clicks); from round 2 on the
  previous round's low-res logits, detached, are the mask prompt. A single point alone
  gets three masks and only the lowest of their three losses counts, per instance;
  every other prompt, a box alone included, the single mask. The IoU head regresses,
  with MSE weighted ``iou_loss_weight``, the IoU of every mask it scores (training all
  three is this course's choice). An image's loss is the mean over its rounds; each
  round is back-propagated as soon as it is computed, so memory is that of one round.
- ``"seed"``: two passes; pass 1 (three masks, under ``no_grad``) picks the mask of the
  highest predicted IoU as the mask prompt of pass 2 (one mask), whose BCE + Dice is the
  loss; the IoU head gets none.

Both: BCE + soft Dice on the 256 x 256 low-res logits, void and padding excluded
(:mod:`helpers.sam.losses`); AdamW with linear warm-up then cosine decay; gradient
clipping; fp16 autocast on CUDA; a stop on a non-finite loss; ``best.pt`` (the decoder)
at the best validation mIoU@1 + box mIoU, ``last.pt`` to resume
(:class:`helpers.training_run.TrainingRun`). The image order is drawn from ``(seed,
epoch)`` and each image's prompts and clicks from ``(seed, epoch, step, slot)``, so a
resumed run, and a run on several processes (:mod:`helpers.distributed`), end with the
weights of one uninterrupted process.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

from ..course.runtime import progress
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
        prompts: the first prompt; default: :class:`PromptConfig` for ``"sam"``,
            :meth:`PromptConfig.seed` for ``"seed"``.
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
        if self.prompts is None:
            self.prompts = PromptConfig() if self.recipe == "sam" else PromptConfig.seed()
        elif isinstance(self.prompts, dict):  # from a checkpoint's asdict()
            self.prompts = PromptConfig(**self.prompts)


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


Backward = Callable[[torch.Tensor], None]


def seed_step(
    sam: Sam,
    item: SamItem,
    cfg: SamTrainConfig,
    rng: np.random.Generator,
    backward: Backward | None = None,
    autocast=contextlib.nullcontext,
) -> tuple[float, dict]:
    """The seed recipe's step on one image (see the module). ``backward(loss)`` is called once
    when given. Returns the loss (float) and its parts."""
    p = sample_prompts(item.cands, cfg.prompts, rng)
    targets, valid = item.targets.to(sam.device), item.valid.to(sam.device)
    with autocast():
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
    if backward is not None:
        backward(loss)
    return float(loss.detach()), {
        "bce": float(bce.detach().mean()),
        "dice": float(dice.detach().mean()),
    }


def sam_step(
    sam: Sam,
    item: SamItem,
    cfg: SamTrainConfig,
    rng: np.random.Generator,
    backward: Backward | None = None,
    autocast=contextlib.nullcontext,
) -> tuple[float, dict]:
    """The SAM paper's interactive step on one image (see the module). ``backward`` is
    called once per round with that round's share of the loss. Returns the image's loss
    (mean over rounds, float) and its parts (``mask``, ``iou_mse``, ``rounds``,
    ``multimask_rounds``)."""
    device = sam.device
    targets, valid = item.targets.to(device), item.valid.to(device)
    p = sample_prompts(item.cands, cfg.prompts, rng)
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
        with autocast():
            out = predict_round(sam, item.emb, points, labels, boxes, mask_input, full_size=False)
        logits = out["low_res"].float()  # N x M x 256 x 256, M = 3 or 1
        per_mask, _, _ = bce_dice_per_mask(logits, targets[:, None], valid, cfg.dice_weight)
        mask_loss = per_mask.min(dim=1).values.mean()  # M = 1: the single mask's loss
        iou_mse = F.mse_loss(
            out["iou"].float(), iou_of_logits(logits.detach(), targets[:, None], valid)
        )
        loss = mask_loss + cfg.iou_loss_weight * iou_mse
        if backward is not None:
            backward(loss / len(schedule))
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


STEPS = {"sam": sam_step, "seed": seed_step}


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
    cfg: SamTrainConfig,
    out_dir: str | Path,
    resume: bool = True,
    until_epoch: int | None = None,
    show_progress: bool = True,
    place: Place | None = None,
) -> list[dict]:
    """Fine-tune ``sam.mask_decoder`` in place; return the history (one dict per epoch:
    ``epoch``, ``train_loss``, the entries of :func:`validation`, ``lr``, ``seconds``).

    Args:
        out_dir: where ``best.pt`` (decoder only, the epoch with the best validation
            score, see :func:`validation`) and ``last.pt`` (resumable state) are written.
        resume: continue from ``out_dir/last.pt`` when it exists (settings must match).
        until_epoch: stop after this epoch (1-based) even if ``cfg.epochs`` is larger,
            as an interruption would; a later call with ``resume`` finishes the run.
        place: this process's place under ``torchrun`` (:func:`helpers.distributed.setup`);
            default: one process. Every process holds all items; each computes its share
            of a step's images, the gradients are summed over processes (one all-reduce
            per step, see below), validation is split and its sums reduced, and only
            rank 0 writes files and prints.

    Gradients are summed explicitly, once per step, after all of its rounds
    (:func:`helpers.distributed.sum_gradients`), each image's loss divided by the step's
    image count: exact however unevenly the step's images are shared out. DDP with
    ``no_sync()`` on all rounds but the last gives the same gradients when the shares are
    even (notebook 06 shows both); with uneven shares it averages per process, and needs
    ``join()`` for a process without an image.

    Raises:
        FloatingPointError: a non-finite loss on any process (all stop); ``last.pt``
            holds the last good epoch.
    """
    place = place or Place()
    if cfg.batch_images % place.world:
        raise ValueError(
            f"batch_images {cfg.batch_images} is not divisible by the {place.world} processes"
        )
    device = sam.device
    params = _freeze_all_but_decoder(sam)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_items) / cfg.batch_images)
    total = cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, cfg)
    )
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    run = TrainingRun(
        out_dir,
        cfg,
        model=sam.mask_decoder,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        scaler=scaler,
        what=f"the {cfg.recipe} recipe",
        resume=resume,
        until_epoch=until_epoch,
        place=place,
        show_progress=show_progress,
    )
    show = run.show
    step = STEPS[cfg.recipe]

    def autocast():
        return torch.autocast("cuda", dtype=torch.float16, enabled=use_amp)

    for epoch in run.epochs(f"{cfg.recipe} recipe, epochs"):
        t0 = time.perf_counter()
        sam.mask_decoder.train()
        running, n = 0.0, 0
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_items))
        bar = progress(
            range(steps_per_epoch),
            show=show,
            desc=f"epoch {epoch}/{cfg.epochs}",
            unit="step" if cfg.batch_images > 1 else "img",
            leave=False,
        )
        for k in bar:
            batch = order[k * cfg.batch_images : (k + 1) * cfg.batch_images]
            optimizer.zero_grad(set_to_none=True)

            share = len(batch)

            def backward(loss):
                scaler.scale(loss / share).backward()  # the mean over the step

            bad = None
            for slot in shard(len(batch), place):  # this process's share
                item = train_items[batch[slot]]
                rng = np.random.default_rng([cfg.seed, epoch, k, slot])
                loss, parts = step(sam, item, cfg, rng, backward, autocast)
                running += loss
                n += 1
                if not math.isfinite(loss) and bad is None:
                    bad = f"non-finite loss ({loss}) at epoch {epoch}, image {item.image_id}"
            if any_rank(bad is not None, device):
                raise FloatingPointError(
                    (bad or f"non-finite loss on another process at epoch {epoch}")
                    + f"; stopped. {run.last_path} holds the last finished epoch."
                )
            sum_gradients(params)
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            bar.set_postfix(loss=f"{running / max(n, 1):.4f}")
        running, n = sum_over_ranks([running, n], device)
        val = validation(sam, val_items, cfg, place)
        record = {
            "epoch": epoch,
            "train_loss": running / max(n, 1),
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
        run.end_epoch(record, val["val_score"], lambda path: save_decoder(sam, path, meta), line)
    sam.mask_decoder.eval()
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
        loss += STEPS[cfg.recipe](sam, items[i], cfg, rng)[0]
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


def load_best(sam: Sam, out_dir: str | Path) -> dict:
    """Merge ``out_dir/best.pt`` into ``sam``; return its meta (recipe, epoch, validation
    numbers)."""
    return load_decoder(sam, Path(out_dir) / "best.pt")


def decoder_groups(decoder: torch.nn.Module) -> dict[str, list[tuple[str, slice | int | None]]]:
    """The mask decoder's parameters by the output they serve: ``{group: [(parameter
    name, row or None for all of it)]}``.

    Mask token ``k`` and its hypernetwork MLP make output ``k``; the IoU head's last
    layer has one row per output (row ``k`` scores mask ``k``). Output 0 is the
    single-mask answer, outputs 1-3 the multimask answers (``MaskDecoder.forward`` slices
    ``1:`` for ``multimask_output=True``, ``0:1`` otherwise).
    """
    names = [n for n, _ in decoder.named_parameters()]
    last = f"iou_prediction_head.layers.{len(decoder.iou_prediction_head.layers) - 1}"
    groups: dict[str, list] = {
        "transformer": [(n, None) for n in names if n.startswith("transformer.")],
        "upscaling": [(n, None) for n in names if n.startswith("output_upscaling.")],
        "IoU token": [("iou_token.weight", None)],
        "IoU head, shared layers": [
            (n, None)
            for n in names
            if n.startswith("iou_prediction_head.") and not n.startswith(last)
        ],
    }
    for k in range(decoder.num_mask_tokens):
        which = "single mask" if k == 0 else f"multimask {k}"
        groups[f"mask token {k} ({which})"] = [("mask_tokens.weight", k)]
        groups[f"mask MLP {k} ({which})"] = [
            (n, None) for n in names if n.startswith(f"output_hypernetworks_mlps.{k}.")
        ]
        groups[f"IoU head row {k} ({which})"] = [(f"{last}.weight", k), (f"{last}.bias", k)]
    return groups


def decoder_changes(before: dict, after: dict, decoder: torch.nn.Module) -> dict[str, float]:
    """Relative change ``||after - before|| / ||before||`` of each group of
    :func:`decoder_groups`, from two ``mask_decoder`` state dicts (keys without the
    ``mask_decoder.`` prefix)."""
    changes = {}
    for group, entries in decoder_groups(decoder).items():
        diff = ref = 0.0
        for name, row in entries:
            a, b = before[name].double(), after[name].double()
            if row is not None:
                a, b = a[row], b[row]
            diff += float(((b - a) ** 2).sum())
            ref += float((a**2).sum())
        changes[group] = math.sqrt(diff) / max(math.sqrt(ref), 1e-12)
    return changes


def weight_decay_only_change(cfg: SamTrainConfig, steps: int) -> float:
    """The relative change of a parameter whose gradient was zero at each of ``steps``
    AdamW steps (the first ``steps`` of a run of ``steps`` in all): Adam's update is then
    0 and only the decoupled weight decay moves it, ``p <- p (1 - lr_t wd)``, so the change
    is ``1 - prod_t (1 - lr_t wd)``. (A parameter that gets no gradient at all, ``None``,
    is skipped by AdamW and does not move.)"""
    keep = 1.0
    for t in range(steps):
        keep *= 1 - cfg.lr * lr_factor(t, steps, cfg) * cfg.weight_decay
    return 1 - keep
