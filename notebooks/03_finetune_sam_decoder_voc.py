# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Fine-tuning SAM's mask decoder on Pascal VOC2007, measured
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/segcourse/segmentation-finetuning-course/blob/main/notebooks/03_finetune_sam_decoder_voc.ipynb)
#
# The recipe: keep SAM's image encoder and prompt encoder frozen, train only the 4 M
# parameter mask decoder on VOC2007's instance masks with point and box prompts, with
# BCE + Dice, AdamW and a cosine schedule, and keep the decoder weights of the best epoch.
# This notebook does it the way it should be done, and proves it with numbers.
#
# What you will learn:
# - why the encoder is frozen and what the **embedding cache** saves;
# - how prompts are sampled from instance masks, and what each kind teaches;
# - batched training of all instances of an image, two-pass refinement, the loss;
# - checkpoints that resume exactly after a disconnect;
# - the standard interactive protocol (simulated clicks): **mIoU at 1/3/5 clicks,
#   NoC@85/90**, box mIoU and per-class IoU, before and after fine-tuning.
#
# In smoke mode everything runs on the built-in `data_example` with a tiny random image
# encoder in about a minute: the numbers only show that the code runs and that training
# moves the decoder, nothing about SAM.

# %% Setup: on Colab, fetch the course (same branch as the badge) and install its package
import sys

IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
    import subprocess

    REPO, BRANCH = "https://github.com/segcourse/segmentation-finetuning-course", "main"
    subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", BRANCH, REPO, "/content/segcourse"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/segcourse"], check=True)
    sys.path.insert(0, "/content/segcourse")  # an editable install is seen after a restart only
    from google.colab import output

    output.enable_custom_widget_manager()  # the click-to-prompt widget is a custom (anywidget) one

# %%
import time
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import torch

import helpers
from helpers import plotting
from helpers.embeddings import EmbeddingCache
from helpers.prompts import PromptConfig, sample_prompts
from helpers.sam_eval import comparison_table, evaluate
from helpers.sam_predict import predict
from helpers.sam_training import TrainConfig, load_best, prepare_items, train_decoder

SMOKE = helpers.is_smoke()
print(helpers.describe())

# %% [markdown]
# ## Settings
#
# Full-mode values follow the recipe on the real VOC2007 (trainval to train, test to
# evaluate, vit_b); smoke-mode values sit beside them.

# %%
@dataclass
class Settings:
    variant: str = "tiny" if SMOKE else "vit_b"
    train_images: int | None = 4 if SMOKE else None  # None: all; smoke overfits a handful
    epochs: int = 10 if SMOKE else 20
    lr: float = 2e-3 if SMOKE else 1e-4  # the recipe's 1e-4; the tiny random model needs more
    dice_weight: float = 3.0 if SMOKE else 1.0  # the recipe's 1:1; see the note below
    two_pass: bool = not SMOKE  # the recipe's refinement pass; smoke saves the second pass
    max_clicks: int = 3 if SMOKE else 20  # the protocol's 20
    train_eval_images: int = 4 if SMOKE else 50  # training images re-measured after training
    prompts: PromptConfig = field(default_factory=lambda: PromptConfig(n_pos=1, n_neg=1, both_prob=0.0, box_jitter=0.05))
    run_dir: str = str(helpers.cache_dir() / "runs" / ("sam_decoder_smoke" if SMOKE else "sam_decoder_vit_b"))


S = Settings()
DEVICE = helpers.default_device()
print(S)

# %% [markdown]
# A note on the loss weights: objects cover a small part of an image, so BCE alone is
# lowest for an empty mask. A decoder that starts from nothing (smoke mode's random one)
# slides into predicting nothing at a 1:1 weight; a heavier Dice term keeps it on the
# objects. SAM's own decoder starts far from there and trains well at the recipe's 1:1.

# %% [markdown]
# ## Data
#
# Smoke mode reads `data_example` (4 of its 8 train images, 4 val, 4 test). Full mode
# downloads VOC2007 (~900 MB, once, MD5-checked) and follows the recipe: train on
# trainval, with every tenth trainval image held out to choose the best epoch, and
# evaluate on test.

# %%
from torch.utils.data import Subset  # noqa: E402  (a lazy view of some samples of a reader)

if SMOKE:
    root = helpers.DATA_EXAMPLE / "VOCdevkit"
    train_ds = helpers.VOCInstanceDataset(root, "train")
    val_ds = helpers.VOCInstanceDataset(root, "val")
else:
    from helpers.voc import download_voc2007

    root = download_voc2007()
    trainval = helpers.VOCInstanceDataset(root, "trainval")
    train_ds = Subset(trainval, [i for i in range(len(trainval)) if i % 10])
    val_ds = Subset(trainval, range(0, len(trainval), 10))
test_ds = helpers.VOCInstanceDataset(root, "test")
if S.train_images is not None:
    train_ds = Subset(train_ds, range(min(S.train_images, len(train_ds))))
print(f"train {len(train_ds)}, val {len(val_ds)}, test {len(test_ds)} images")

# %% [markdown]
# ## What is frozen, and why
#
# The image encoder holds 96% of SAM's parameters and almost all of its compute; its
# features are general, and a few hundred images would only damage them. The prompt
# encoder (6,220 parameters) already knows where a point is. The mask decoder is small,
# fast and task-facing: it decides what a click means, where an object ends, how
# confident to be. It is what we train.

# %%
sizes = helpers.module_sizes(S.variant if S.variant != "tiny" else "vit_b")
for module, s in sizes.items():
    print(f"{module:15s} {s['parameters']:12,d} parameters  {'trained' if module == 'mask_decoder' else 'frozen'}")

sam = helpers.load_sam(S.variant, device=DEVICE)

# %% [markdown]
# ## The embedding cache
#
# A frozen encoder gives the same embedding for the same image every time, so it is
# computed **once** and kept on disk (fp16, 2 MiB per image), keyed by the encoder's
# weights and the image's pixels. The seed recipe recomputed it for every image in every
# epoch: with vit_b on a CPU that is ~24 s per image per epoch, here paid once.

# %%
cache = EmbeddingCache(helpers.cache_dir() / "embeddings", sam)
t0 = time.perf_counter()
train_items, skipped = prepare_items(train_ds, cache)
val_items, _ = prepare_items(val_ds, cache)
test_items, _ = prepare_items(test_ds, cache)
first_s = time.perf_counter() - t0
t0 = time.perf_counter()
again, _ = prepare_items(Subset(test_ds, range(len(test_ds))), cache, show_progress=False)
second_s = time.perf_counter() - t0
print(f"prepared {len(train_items)} train, {len(val_items)} val, {len(test_items)} test images in {first_s:.1f} s "
      f"(cache: {cache.misses} computed, {cache.hits} reused); the test images again: {second_s:.1f} s, all from the cache")  # fmt: skip
assert skipped == 0 and cache.hits >= len(test_items)

# %% [markdown]
# ## Prompts from instance masks
#
# For each instance: a **foreground point** from its interior ("this object"), a
# **background point** near it ("not this"), and its **box** ("the object filling this"),
# slightly jittered so that the decoder does not learn to trust boxes to the pixel.
# As in the recipe, each training step gives either the points or the box (50/50), so the
# decoder learns to answer both. All instances of an image go through the decoder as one
# batch.

# %%
rng = np.random.default_rng(0)
item = train_items[0]
sample = train_ds[0]
fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
for ax, cfg in zip(axes, (PromptConfig(use_box=False), PromptConfig(use_points=False, box_jitter=S.prompts.box_jitter))):
    p = sample_prompts(item.cands, cfg, rng)
    ax.imshow(plotting.overlay_masks(sample["image"], sample["masks"], outline=sample["void"]))
    for k in range(len(item.cands)):
        plotting.draw_prompts(ax, None if p["points"] is None else p["points"][k],
                              None if p["labels"] is None else p["labels"][k],
                              None if p["boxes"] is None else p["boxes"][k])  # fmt: skip
    ax.set_title("points (green: object, red: not)" if cfg.use_points else "jittered boxes")
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Before: the decoder as it comes
#
# The simulated clicker places each next click at the centre of the largest error
# region (a positive click in a missed part, a negative one in a spurious part). Click 1
# asks SAM for 3 masks and keeps the best by its own score; later clicks add all earlier
# clicks and feed back the previous mask.

# %%
t0 = time.perf_counter()
before_test = evaluate(sam, test_items, max_clicks=S.max_clicks)
train_subset = train_items[: S.train_eval_images]
before_train = evaluate(sam, train_subset, max_clicks=S.max_clicks)
print(f"evaluated in {time.perf_counter() - t0:.1f} s")

# %% [markdown]
# ## Training
#
# Two passes per step (full mode): pass 1 returns 3 masks, the best by predicted IoU goes
# back in as a mask prompt, pass 2 returns the mask that is scored. The loss is BCE +
# soft Dice on the 256 x 256 low-res logits, with VOC's void border and the padding left
# out, plus an MSE that teaches the IoU head to predict the real IoU. AdamW, linear
# warm-up then cosine decay, gradients clipped at 1, mixed precision on a GPU.
#
# `best.pt` keeps the decoder of the best validation epoch (16 MB); `last.pt` keeps
# everything needed to resume. After a Colab disconnect, run the notebook again: cached
# embeddings are reused and training continues from the last finished epoch.

# %%
cfg = TrainConfig(epochs=S.epochs, lr=S.lr, dice_weight=S.dice_weight, two_pass=S.two_pass, prompts=S.prompts)
t0 = time.perf_counter()
history = train_decoder(sam, train_items, val_items, cfg, S.run_dir)
print(f"trained {len(history)} epochs in {time.perf_counter() - t0:.1f} s")
for r in history:
    print(f"epoch {r['epoch']:2d}  train {r['train_loss']:.4f}  val {r['val_loss']:.4f}  lr {r['lr']:.2e}  {r['seconds']:.1f} s")

fig, ax = plt.subplots(figsize=(5, 3))
ax.plot([r["epoch"] for r in history], [r["train_loss"] for r in history], "o-", label="train")
ax.plot([r["epoch"] for r in history], [r["val_loss"] for r in history], "s-", label="validation")
ax.set_xlabel("epoch")
ax.set_ylabel("BCE + Dice + IoU MSE")
ax.legend()
plt.show()

# %% [markdown]
# ## After: the best epoch's decoder, measured the same way

# %%
best_meta = load_best(sam, S.run_dir)
print("best epoch:", best_meta)
after_test = evaluate(sam, test_items, max_clicks=S.max_clicks)
after_train = evaluate(sam, train_subset, max_clicks=S.max_clicks)
print("Test split (mIoU: higher is better; NoC: lower is better)")
print(comparison_table({"before": before_test, "after": after_test}))
print("\nTraining images")
print(comparison_table({"before": before_train, "after": after_train}))
if SMOKE:
    print("\nSMOKE MODE: a tiny random encoder on synthetic data; these numbers mean nothing.")

# %%
# On the images it was trained on, fine-tuning must help (if it does not, something is broken).
assert history[-1]["train_loss"] < history[0]["train_loss"]
assert after_train["box_miou"] > before_train["box_miou"] + 0.02

# %% [markdown]
# ## Before and after, side by side
#
# The original decoder and the fine-tuned one, on the same test instances: one simulated
# click (left pair) and the box (right pair).

# %%
original = helpers.load_sam(S.variant, device=DEVICE)  # the decoder as it came
shown = [(it, k) for it in test_items[:3] for k in range(min(2, len(it.masks)))][:4]
fig, axes = plt.subplots(len(shown), 4, figsize=(13, 3.2 * len(shown)), squeeze=False)
for row, (it, k) in enumerate(shown):
    image = test_ds[test_items.index(it)]["image"]
    c = it.cands[k]
    ys, xs = np.unravel_index(c.fg[len(c.fg) // 2], c.shape)
    point = np.array([[xs + 0.5, ys + 0.5]], np.float32)
    for col, (name, model, prompt) in enumerate(
        [("before, 1 click", original, "point"), ("after, 1 click", sam, "point"),
         ("before, box", original, "box"), ("after, box", sam, "box")]
    ):  # fmt: skip
        with torch.no_grad():
            if prompt == "point":
                out = predict(model, it.emb, point[None], np.array([[1]]), multimask=True)
                best = int(out["iou"][0].argmax())
            else:
                out = predict(model, it.emb, boxes=c.box[None], multimask=False)
                best = 0
        mask = out["masks"][0, best].cpu().numpy()
        iou = helpers.mask_iou(mask, it.masks[k], it.void)
        ax = axes[row, col]
        ax.imshow(plotting.overlay_masks(image, mask[None]))
        plotting.draw_prompts(ax, point if prompt == "point" else None, [1], c.box if prompt == "box" else None)
        ax.set_title(f"{name}: IoU {iou:.2f}", fontsize=9)
        ax.axis("off")
plt.show()

# %% [markdown]
# ## Your turn: click and compare
#
# Left click on an object: both decoders answer (positive point). Right click or
# shift+click: "not this" (negative point). Switch to box mode and drag a box. Each panel
# shows SAM's own score, the IoU with the ground-truth instance under your first click,
# and how long the answer took. Any number of models can be compared: add entries to
# the dict.

# %%
from helpers.widget import sam_compare_widget  # noqa: E402

original.image_encoder = sam.image_encoder  # one encoder for both: one embedding per image
widget, controller = sam_compare_widget({"before": original, "after": sam}, test_ds)
widget
