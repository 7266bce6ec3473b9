"""Pretrain smoke mode's small SAM on the course's own scenes: the weights that ship with
the course as ``helpers/sam/tiny_sam.pt``.

    python -m scripts.pretrain_small_sam              # the shipped weights (about an hour here)
    python -m scripts.pretrain_small_sam --steps 4    # the first steps (the reproduction test)

The model is segment-anything's own classes at a 256-pixel frame
(:func:`helpers.sam.model.build_tiny_sam`), trained from scratch, image encoder, prompt
encoder and mask decoder together, with the course's own interactive recipe
(:func:`helpers.sam.training.sam_image_loss`: a point or a noisy box, then clicks drawn
from the error region, the previous mask fed back). The image encoder runs once per
image and step; its output is a leaf that every round back-propagates into, then one
backward pass takes the summed gradient through the encoder (the same gradients as
keeping the whole graph, at the memory of one round).

The scenes are drawn by ``data_example``'s own generator (:mod:`scripts.data_example`),
scene ``k`` from the seed ``[SCENE_SEED, k]``, disjoint from the committed images (seeded
``[2007, n]`` and ``[4736111, n]``), at VOC's image sizes, JPEG-compressed as the committed
ones, then resized to the model's frame as its own preprocessing resizes them. They are
drawn once into a pool (two processes; kept under ``--out`` for a resume) and shown
``passes`` times, each time in a new order and flipped at random.

**Held back, so that fine-tuning has something to learn.** Pretraining sees people,
potted plants and monitors only as their parts (head, body and legs; pot and leaves; frame
and screen; each an instance of its own), and never LabPics' glassware. VOC's instance is
always the whole object, so the released model answers a click on a plant's leaves with
the leaves, as SAM, trained on masks of every granularity, answers a click with a part, a
whole or a group, where VOC wants the whole: decoder fine-tuning (notebook 03) teaches
the data set's granularity. The glassware (transparent, liquids, reflections) is a style
the encoder never saw, as LabPics Medical is far from SAM's photos: what notebook 07
adapts the encoder to.

Deterministic from its seeds on one machine (the same thread count); a run killed midway
resumes from ``--out/last.pt`` (refused if its settings differ). Writes the fp16 weights,
prints their SHA-256 and records the run, its held-out figures on ``data_example``'s VOC
test split and the losses of its first steps in ``benchmarks/results/pretrain_small_sam.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from dataclasses import asdict, dataclass
from io import BytesIO
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from segment_anything.utils.transforms import ResizeLongestSide

from helpers.checkpoints import atomic_save, atomic_write, read_checkpoint
from helpers.course.runtime import DATA_EXAMPLE, progress
from helpers.data.voc import VOCInstanceDataset
from helpers.sam.embeddings import EmbeddingCache
from helpers.sam.evaluation import evaluate
from helpers.sam.items import SamItem, lowres_targets, prepare_items
from helpers.sam.model import TINY, TINY_WEIGHTS, build_tiny_sam
from helpers.sam.predict import ImageEmbedding, preprocess
from helpers.sam.prompts import instance_candidates
from helpers.sam.training import SamTrainConfig, sam_image_loss
from helpers.schedules import warmup_cosine
from scripts.data_example import JPEG_QUALITY, VOC_SIZES, _voc_scene, _void_band

SCENE_SEED = 1  # data_example's VOC scenes: [2007, n], its LabPics ones: [4736111, n]
SPLIT = ("person", "pottedplant", "tvmonitor")  # seen as their parts only
MIN_PIXELS = 30  # an instance smaller than this at the model's frame is dropped


@dataclass
class PretrainConfig:
    """The pretraining's settings (``--help`` lists them); a resume refuses other ones."""

    scenes: int = 3200  # the pool, drawn once
    passes: int = 6  # each scene shown this many times, in a new order each time
    batch: int = 8  # scenes per optimizer step
    lr: float = 1.5e-3
    weight_decay: float = 0.05
    warmup_frac: float = 0.03
    min_lr_frac: float = 0.02
    grad_clip: float = 1.0
    dice_weight: float = 4.0  # from scratch, BCE alone first drifts to predicting nothing
    click_rounds: int = 2  # the interactive recipe's rounds (the paper: 8 and 2)
    refine_rounds: int = 0
    seed: int = 0  # the initial weights and every draw of the training


def draw_scene(k: int, frame: int = TINY["frame"]) -> dict:
    """Scene ``k`` as the model sees it: drawn at a VOC size by ``data_example``'s
    generator, JPEG-compressed, resized to ``frame`` on its longest side; its instances
    (potted plants and monitors as parts) and VOC's void band, resized with it."""
    rng = np.random.default_rng([SCENE_SEED, k])
    w, h = VOC_SIZES[k % len(VOC_SIZES)]
    image, masks, _ = _voc_scene(rng, w, h, split=SPLIT)
    masks = [m for m in masks if m.any()]
    void = _void_band(masks)
    buffer = BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    small = ResizeLongestSide(frame).apply_image(np.asarray(Image.open(buffer).convert("RGB")))
    size = small.shape[1], small.shape[0]

    def resize(mask: np.ndarray) -> np.ndarray:  # the share of each new pixel it covers
        return np.asarray(Image.fromarray(mask.astype(np.float32)).resize(size, Image.BOX))

    masks = np.stack([resize(m) > 0.5 for m in masks])
    void = resize(void) > 0.25  # a thin band: kept where it covers a quarter of a pixel
    keep = masks.reshape(len(masks), -1).sum(1) >= MIN_PIXELS
    return {"image": small, "masks": masks[keep], "void": void}


def scene_pool(indices, folder: Path, processes: int = 2) -> dict[int, dict]:
    """Scenes ``indices`` (:func:`draw_scene`), drawn once by ``processes`` processes and
    kept in ``folder`` (one ``.npz`` each, written whole); a rerun reads them back."""
    folder.mkdir(parents=True, exist_ok=True)
    path = {k: folder / f"{k:05d}.npz" for k in indices}
    todo = [k for k in indices if not path[k].is_file()]
    if todo:
        with Pool(processes) as pool:
            bar = progress(total=len(todo), desc="drawing scenes", unit="scene")
            for k, scene in zip(todo, pool.imap(draw_scene, todo, chunksize=4)):
                atomic_write(
                    path[k], lambda tmp, s=scene: np.savez_compressed(open(tmp, "wb"), **s)
                )
                bar.update()
            bar.close()
    return {k: dict(np.load(path[k])) for k in indices}


def step_scenes(cfg: PretrainConfig, step: int) -> list[int]:
    """The scenes of optimizer step ``step``: pass ``p`` shows all of them in its own
    order, drawn from ``(seed, p)``."""
    steps_per_pass = cfg.scenes // cfg.batch
    p, k = divmod(step, steps_per_pass)
    order = np.random.default_rng([cfg.seed, 7, p]).permutation(cfg.scenes)
    return order[k * cfg.batch : (k + 1) * cfg.batch].tolist()


def training_items(scenes: list[dict], leaf: torch.Tensor, flips: list[bool]) -> list[SamItem]:
    """Each scene as a training item whose embedding is its row of ``leaf`` (the image
    encoder's output, detached, with a gradient), mirrored left to right where ``flips``."""
    items = []
    for k, (s, flip) in enumerate(zip(scenes, flips)):
        image, masks, void = s["image"], s["masks"], s["void"]
        if flip:
            image, masks, void = image[:, ::-1], masks[:, :, ::-1], void[:, ::-1]
        emb = ImageEmbedding(leaf[k : k + 1], tuple(image.shape[:2]), tuple(image.shape[:2]))
        targets, valid = lowres_targets(masks, void, emb)
        cands = [instance_candidates(m, void) for m in masks]
        labels = np.ones(len(masks), np.int64)
        items.append(SamItem(f"scene{k}", emb, masks, labels, void, cands, targets, valid))
    return items


def recipe(cfg: PretrainConfig) -> SamTrainConfig:
    return SamTrainConfig(
        recipe="sam",
        click_rounds=cfg.click_rounds,
        refine_rounds=cfg.refine_rounds,
        dice_weight=cfg.dice_weight,
        seed=cfg.seed,
    )


def pretrain_step(sam, scenes, cfg, optimizer, scheduler, rng) -> float:
    """One optimizer step over ``scenes``: encoder once, every image's rounds, one
    backward pass through the encoder. Returns the step's mean loss."""
    flips = [bool(rng.random() < 0.5) for _ in scenes]
    x = torch.cat(
        [
            preprocess(sam, np.ascontiguousarray(s["image"][:, ::-1] if f else s["image"]))[0]
            for s, f in zip(scenes, flips)
        ]
    )
    optimizer.zero_grad(set_to_none=True)
    features = sam.image_encoder(x)
    leaf = features.detach().requires_grad_(True)
    losses = [
        sam_image_loss(sam, item, recipe(cfg), rng, step_images=len(scenes))[0]
        for item in training_items(scenes, leaf, flips)
    ]
    features.backward(leaf.grad)  # the rounds' summed gradient, through the encoder once
    torch.nn.utils.clip_grad_norm_(sam.parameters(), cfg.grad_clip)
    optimizer.step()
    scheduler.step()
    return float(np.mean(losses))


@torch.no_grad()
def held_out(sam, folder: Path) -> dict:
    """Box mIoU and mIoU@1/3 of ``sam`` on ``data_example``'s VOC test split (never
    trained on), through the course's own evaluation."""
    cache = EmbeddingCache(folder, sam)
    items, _ = prepare_items(VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "test"), cache, False)
    r = evaluate(sam, items, max_clicks=3, ks=(1, 3), show_progress=False)
    return {k: round(r[k], 4) for k in ("box_miou", "miou@1", "miou@3")}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default="pretrain_runs/small_sam", help="run folder (pool, last.pt)"
    )
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    parser.add_argument(
        "--eval-every", type=int, default=300, help="held-out figures every N steps"
    )
    for name, value in asdict(PretrainConfig()).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = parser.parse_args(argv)
    cfg = PretrainConfig(**{k: getattr(args, k) for k in asdict(PretrainConfig())})
    out = Path(args.out)
    sam = build_tiny_sam(cfg.seed).train()
    params = [p for p in sam.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.passes * (cfg.scenes // cfg.batch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total, cfg.warmup_frac, cfg.min_lr_frac)
    )
    state = {"step": 0, "losses": [], "curve": [], "seconds": 0.0}
    last = out / "last.pt"
    if last.is_file():
        saved = read_checkpoint(last, "pretraining state")
        if saved["config"] != asdict(cfg):
            raise SystemExit(
                f"{last}: written with other settings ({saved['config']}); use another --out"
            )
        sam.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
        print(f"resumed from {last} at step {state['step']} of {total}")
    stop = min(total, args.steps or total)
    t_pool = time.perf_counter()
    needed = sorted({k for step in range(state["step"], stop) for k in step_scenes(cfg, step)})
    scenes = scene_pool(needed, out / "pool")
    t_pool = time.perf_counter() - t_pool
    bar = progress(range(state["step"], stop), desc="pretraining", unit="step")
    t0 = time.perf_counter()
    for step in bar:
        batch = [scenes[i] for i in step_scenes(cfg, step)]
        rng = np.random.default_rng([cfg.seed, 11, step])
        state["losses"].append(pretrain_step(sam, batch, cfg, optimizer, scheduler, rng))
        state["step"] = step + 1
        bar.set_postfix(loss=f"{np.mean(state['losses'][-50:]):.3f}")
        if not math.isfinite(state["losses"][-1]):
            raise SystemExit(f"non-finite loss at step {step}")
        if state["step"] % args.eval_every == 0 or state["step"] == stop:
            sam.eval()
            state["curve"].append({"step": state["step"], **held_out(sam, out / "embeddings")})
            sam.train()
            bar.write(f"step {state['step']}: held out {state['curve'][-1]}")
            state["seconds"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            saved = {
                "model": sam.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "config": asdict(cfg),
                "state": state,
            }
            atomic_save(saved, last)
    state["seconds"] += time.perf_counter() - t0
    summary = {
        "config": asdict(cfg),
        "steps": state["step"],
        "of_steps": total,
        "first_losses": [round(v, 6) for v in state["losses"][:4]],
        "train_seconds": round(state["seconds"], 1),
        "pool_seconds": round(t_pool, 1),
        "curve": state["curve"],
    }
    if state["step"] == total:
        sam.eval()
        weights = {k: v.detach().half() for k, v in sam.state_dict().items()}
        atomic_save(weights, TINY_WEIGHTS)
        digest = hashlib.sha256(TINY_WEIGHTS.read_bytes()).hexdigest()
        summary.update(sha256=digest, megabytes=round(TINY_WEIGHTS.stat().st_size / 2**20, 2))
        summary["released"] = held_out(_reloaded(), out / "embeddings_fp16")
        from benchmarks._results import save

        save("pretrain_small_sam", summary)
        print(f"wrote {TINY_WEIGHTS} (SHA-256 {digest}): set helpers.sam.model.TINY_SHA256")
    else:
        print(summary)
    return summary


def _reloaded():
    """The shipped file as a learner loads it (fp16 on disk, fp32 in the model)."""
    from helpers.sam.model import load_tiny_weights

    sam = build_tiny_sam()
    digest = hashlib.sha256(TINY_WEIGHTS.read_bytes()).hexdigest()
    return load_tiny_weights(sam, TINY_WEIGHTS, digest).eval()


if __name__ == "__main__":
    main()
