# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version,-jupytext.text_representation.format_version
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Segment Anything's architecture, exactly
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/segcourse/segmentation-finetuning-course/blob/main/notebooks/01_sam_architecture.ipynb)
#
# SAM is three modules: a heavy **image encoder** run once per image, a tiny **prompt
# encoder** for points, boxes and masks, and a light **mask decoder** that turns an image
# embedding plus prompts into masks in milliseconds. Fine-tuning in notebook 03 trains
# only the decoder; this notebook shows why that is cheap and what goes in and out of
# each module, with every number checked.
#
# What you will learn:
# - parameters and checkpoint bytes per module for vit_b, vit_l and vit_h, and why the
#   often-quoted "decoder 16.3M, 4.35%" is a size in **bytes**;
# - the input frame: resize the longest side to 1024, normalise, pad;
# - tensor shapes end to end: embedding, sparse and dense prompt embeddings, the two-way
#   transformer's tokens, three low-res masks with IoU predictions (**IoU**, intersection
#   over union: the overlap of a mask with the true object divided by their union, 1 for
#   a perfect mask, 0 for a disjoint one), back to full size;
# - the prompt encoder's random-Fourier positional encoding, pictured;
# - multimask output for ambiguous prompts, and feeding a mask back as a prompt.
#
# Smoke mode runs a tiny random image encoder with SAM's real prompt encoder and mask
# decoder (random weights): every shape below is the real one, but the masks mean nothing.

# %% Setup on Colab: fetch the course, install its package (elsewhere: nothing)
# Setup on Colab: fetches the course and installs its package; does nothing elsewhere.
import os
import sys

IN_COLAB = "google.colab" in sys.modules
USE_DRIVE = IN_COLAB  # archives, checkpoints, embeddings, runs on Drive; data sets on local disk
# os.environ["SEGCOURSE_SMOKE"] = "1"  # smoke mode: built-in data, tiny models, minutes
if IN_COLAB:
    import subprocess

    REPO, BRANCH = "https://github.com/segcourse/segmentation-finetuning-course", "main"
    DEST = "/content/segcourse"
    if os.path.isdir(f"{DEST}/.git"):  # run again in this runtime: update the clone
        subprocess.run(["git", "-C", DEST, "pull", "-q", "--ff-only"], check=True)
    else:
        clone = ["git", "clone", "-q", "--depth", "1", "--branch", BRANCH, REPO, DEST]
        subprocess.run(clone, check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", DEST], check=True)
    sys.path.insert(0, DEST)  # an editable install is seen after a restart only
    if USE_DRIVE:
        from google.colab import drive

        drive.mount("/content/drive")
    from google.colab import output

    output.enable_custom_widget_manager()  # the click-to-prompt widgets are custom ones

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from helpers.course.runtime import DATA_EXAMPLE, default_device, describe, is_smoke
from helpers.data.voc import VOCInstanceDataset
from helpers.sam.model import load_sam, module_sizes
from helpers.sam.predict import embed_image, predict, preprocess
from helpers.views import plotting

print(describe())

# %% [markdown]
# ## Settings

# %%
VARIANT = "tiny" if is_smoke() else "vit_b"  # vit_b: 375 MB, downloaded once
DEVICE = default_device()
IMAGE_INDEX = 0  # an image of the built-in VOC sample

# %% [markdown]
# ## Parameters and bytes per module
#
# Counted on models built on PyTorch's `meta` device: exact, and no weights allocated.

# %%
print(f"{'variant':8s} {'module':15s} {'parameters':>13s} {'fp32 MB':>9s} {'share':>7s}")
sizes = {}
for variant in ("vit_b", "vit_l", "vit_h"):
    sizes[variant] = module_sizes(variant)
    total = sum(s["state_bytes"] for s in sizes[variant].values())
    for module, s in sizes[variant].items():
        print(
            f"{variant:8s} {module:15s} {s['parameters']:13,d} {s['state_bytes'] / 1e6:9.2f} {s['state_bytes'] / total:7.2%}"
        )

vit_b = sizes["vit_b"]
assert [vit_b[m]["parameters"] for m in ("image_encoder", "prompt_encoder", "mask_decoder")] == [
    89_670_912,
    6_220,
    4_058_340,
]
assert vit_b["mask_decoder"]["state_bytes"] == 16_233_360

# %% [markdown]
# The mask decoder has **4,058,340 parameters**, the same in all three variants. Stored
# as fp32 that is 16,233,360 bytes: the "16.3M" that blog posts quote is 16.2 MB of
# weights, not 16 million parameters, and its ~4.3% is a share of the vit_b checkpoint.
# The prompt encoder is tiny (6,220). Everything else is the image encoder: 89.7 M
# parameters for vit_b, 308 M for vit_l, 637 M for vit_h.
#
# ## Load the model

# %%
t0 = time.perf_counter()
sam = load_sam(VARIANT, device=DEVICE)
print(f"{VARIANT} loaded in {time.perf_counter() - t0:.1f} s on {DEVICE}")

# %% [markdown]
# ## The input frame: resize the longest side to 1024, normalise, pad
#
# SAM's encoder always sees a 1024 x 1024 image. The longest side is resized to 1024
# (aspect ratio kept), pixels are normalised with ImageNet's mean and std, and the short
# side is zero-padded at the bottom or right (zero after normalisation: the mean colour
# when shown).

# %%
sample = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")[IMAGE_INDEX]
image = sample["image"]
x, input_size = preprocess(sam, image)
print(
    "original (H, W):",
    image.shape[:2],
    "-> resized (h, w):",
    input_size,
    "-> encoder input:",
    tuple(x.shape),
)
assert tuple(x.shape) == (1, 3, 1024, 1024) and max(input_size) == 1024

shown = (
    (
        x[0].permute(1, 2, 0).cpu() * sam.pixel_std.cpu().view(1, 1, 3)
        + sam.pixel_mean.cpu().view(1, 1, 3)
    )
    .clamp(0, 255)
    .byte()
    .numpy()
)
fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), layout="constrained")
axes[0].imshow(image)
axes[0].set_title(f"original, {image.shape[1]} x {image.shape[0]} (W x H)", fontsize=10)
axes[1].imshow(shown)
axes[1].axhline(input_size[0] - 0.5, color="red", lw=1)
axes[1].axvline(input_size[1] - 0.5, color="red", lw=1)
axes[1].set_title("encoder input, 1024 x 1024\n(padding beyond the red lines)", fontsize=10)
for ax in axes:
    ax.set(xlabel="x (pixels)", ylabel="y (pixels)")
plt.show()

# %% [markdown]
# ## The image encoder: one 256 x 64 x 64 embedding per image
#
# A **ViT** (vision transformer: the image cut into 16 x 16-pixel patches, each patch a
# token, and transformer blocks over the tokens) on a 1024 x 1024 input gives a 64 x 64
# grid of tokens; a small neck projects it to 256
# channels. This is the expensive step (seconds on a CPU for vit_b), and it does not
# depend on the prompts: that is why notebook 03 caches it.

# %%
t0 = time.perf_counter()
emb = embed_image(sam, image)
encode_s = time.perf_counter() - t0
print(
    "embedding:",
    tuple(emb.embedding.shape),
    f"in {encode_s:.2f} s" + (" (smoke: the tiny encoder)" if is_smoke() else ""),
)
assert tuple(emb.embedding.shape) == (1, 256, 64, 64)

# %% [markdown]
# ## The prompt encoder: sparse and dense embeddings
#
# Points and box corners become **sparse** tokens of 256 numbers each: a positional
# encoding of the location plus a learned embedding of its kind (foreground point,
# background point, top-left corner, bottom-right corner). A point prompt without a box
# gets one padding token. A mask prompt becomes a **dense** 256 x 64 x 64 map; without
# one, a learned "no mask" vector is broadcast.

# %%
h, w = image.shape[:2]
point = np.array([[w * 0.5, h * 0.5]])
box = np.array([w * 0.2, h * 0.2, w * 0.8, h * 0.8])
transform = ResizeLongestSide(1024)
pts = torch.as_tensor(transform.apply_coords(point, (h, w)), dtype=torch.float32, device=DEVICE)[
    None
]
lab = torch.ones(1, 1, dtype=torch.int64, device=DEVICE)
bx = torch.as_tensor(transform.apply_boxes(box, (h, w)), dtype=torch.float32, device=DEVICE)
with torch.no_grad():
    for name, kwargs in {
        "1 point": dict(points=(pts, lab), boxes=None, masks=None),
        "box": dict(points=None, boxes=bx, masks=None),
        "1 point + box": dict(points=(pts, lab), boxes=bx, masks=None),
    }.items():
        sparse, dense = sam.prompt_encoder(**kwargs)
        print(f"{name:14s} sparse {tuple(sparse.shape)}  dense {tuple(dense.shape)}")
        assert sparse.shape[-1] == 256 and tuple(dense.shape) == (1, 256, 64, 64)
assert tuple(sam.prompt_encoder(points=(pts, lab), boxes=bx, masks=None)[0].shape) == (1, 3, 256)

# %% [markdown]
# ### The random-Fourier positional encoding
#
# A point prompt is a pixel index `(x, y)` in the 1024 input frame (after the resize
# above). SAM's prompt encoder first moves it to the pixel's centre, then normalises:
#
# $$p = \left(\frac{x + 0.5}{1024}, \frac{y + 0.5}{1024}\right) \in [0, 1]^2, \qquad
# u = 2p - 1 \in [-1, 1]^2, \qquad v = 2\pi\, u\, G, \qquad
# \mathrm{PE}(x, y) = [\sin v, \cos v] \in \mathbb{R}^{256},$$
#
# where `G` is a fixed 2 x 128 matrix of standard normal draws (stored in the checkpoint).
# Each channel is a plane wave of random direction and frequency: together they let the
# decoder tell any two locations apart. The image's own positional encoding,
# `get_dense_pe()`, is the same function at the centres of the 64 x 64 grid cells,
# `p = ((j + 0.5) / 64, (i + 0.5) / 64)`. Because the encoder adds the half pixel itself,
# prompts are given as pixel indices (SamPredictor's convention), never as centres.
# Checked by hand against SAM's code:

# %%
pe_layer = sam.prompt_encoder.pe_layer
gauss = pe_layer.positional_encoding_gaussian_matrix
dense_pe = sam.prompt_encoder.get_dense_pe()
print("Gaussian matrix:", tuple(gauss.shape), " dense PE:", tuple(dense_pe.shape))
assert tuple(gauss.shape) == (2, 128) and tuple(dense_pe.shape) == (1, 256, 64, 64)


def pe_by_hand(p: torch.Tensor) -> torch.Tensor:
    """The formula above for points ``p`` in [0, 1]^2 (``N x 2``)."""
    v = 2 * torch.pi * (2 * p - 1) @ gauss
    return torch.cat([torch.sin(v), torch.cos(v)], dim=-1)


with torch.no_grad():
    xy = pts[0, 0]  # the centre point above, as a pixel index in the 1024 frame
    fg_embedding = sam.prompt_encoder.point_embeddings[1].weight[
        0
    ]  # "foreground" is added to the PE
    sparse_point = sam.prompt_encoder(points=(pts, lab), boxes=None, masks=None)[0][0, 0]
    by_hand = pe_by_hand(((xy + 0.5) / 1024)[None])[0]
    cell = torch.tensor(
        [[(20 + 0.5) / 64, (7 + 0.5) / 64]], device=gauss.device
    )  # grid row 7, column 20
    point_error = float((by_hand + fg_embedding - sparse_point).abs().max())
    grid_error = float((pe_by_hand(cell)[0] - dense_pe[0, :, 7, 20]).abs().max())
print(f"max |by hand - SAM|: point prompt {point_error:.1e}, grid cell {grid_error:.1e}")
assert point_error < 1e-5 and grid_error < 1e-5
fig, axes = plt.subplots(1, 6, figsize=(13, 2.8), layout="constrained")
for ax, ch in zip(axes, (0, 5, 40, 128, 133, 168)):
    ax.imshow(dense_pe[0, ch].cpu(), cmap="RdBu", vmin=-1, vmax=1)
    ax.set_title(f"{'sin' if ch < 128 else 'cos'} channel {ch}", fontsize=8)
    ax.set_xlabel("grid column", fontsize=8)
    ax.tick_params(labelsize=7)
axes[0].set_ylabel("grid row", fontsize=8)
fig.suptitle(
    "get_dense_pe(): six of its 256 channels on the 64 x 64 grid (blue -1, red +1)", fontsize=9
)
plt.show()

# %% [markdown]
# ## The mask decoder: a two-way transformer and three masks
#
# The decoder prepends its own learned tokens to the prompt tokens: one **IoU token** and
# four **mask tokens** (one for the single-mask answer, three for the multimask answers).
# A two-way transformer lets these tokens attend to the 4,096 image tokens and the image
# tokens attend back. Each mask token then becomes a set of weights that is dotted with
# the upscaled image features to give a 256 x 256 mask; the IoU token predicts each
# mask's IoU. Hooks record the shapes on the way:

# %%
shapes = {}
hook = sam.mask_decoder.transformer.register_forward_hook(
    lambda mod, inp, out: shapes.update(
        image_tokens_in=tuple(inp[0].shape),
        prompt_tokens_in=tuple(inp[2].shape),
        tokens_out=tuple(out[0].shape),
        image_tokens_out=tuple(out[1].shape),
    )
)
with torch.no_grad():
    out = predict(sam, emb, points=point[None], labels=np.array([[1]]), multimask=True)
hook.remove()
for k, v in shapes.items():
    print(f"{k:17s} {v}")
print(
    "low-res masks    ", tuple(out["low_res"].shape), "\nIoU predictions  ", tuple(out["iou"].shape)
)
print("masks at original", tuple(out["masks"].shape))
assert shapes["prompt_tokens_in"] == (1, 5 + 2, 256)  # IoU + 4 mask tokens + point + padding
assert shapes["image_tokens_out"] == (1, 64 * 64, 256)
assert tuple(out["low_res"].shape) == (1, 3, 256, 256) and tuple(out["iou"].shape) == (1, 3)
assert tuple(out["masks"].shape) == (1, 3, h, w)

# %% [markdown]
# Postprocessing upsamples the 256 x 256 logits to 1024, crops the padding away
# (`input_size`) and resizes to the original `(H, W)`; thresholding at 0 gives the masks.
#
# ## Multimask output: three answers to an ambiguous click
#
# One click on a shirt could mean the shirt, the person, or the person's group. With
# `multimask_output=True` SAM returns three masks (roughly part, object, whole) and a
# predicted IoU for each; a single click should use it and keep the best-scoring mask.
# With several points or a box the prompt is rarely ambiguous, and one mask is better.

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
plotting.show_masks(axes, image, out["masks"][0].cpu(), out["iou"][0].cpu(), point, [1])
plt.show()
best = int(out["iou"][0].argmax())
print("best by predicted IoU: mask", best)

# %% [markdown]
# ## A mask as a prompt: refinement
#
# The best low-res logits can go back in as a **mask prompt** together with the same
# (or more) points. The prompt encoder's small CNN turns the 256 x 256 logits into the
# dense 256 x 64 x 64 embedding, which is added to the image embedding; with one mask
# requested the decoder refines its own answer. Notebook 03 uses exactly this: every
# round of its interactive training and evaluation after the first feeds the previous
# round's logits back with all clicks so far, and the seed's two-pass recipe does it once.

# %%
with torch.no_grad():
    refined = predict(
        sam,
        emb,
        points=point[None],
        labels=np.array([[1]]),
        mask_input=out["low_res"][:, best : best + 1],
        multimask=False,
    )
    _, dense_with_mask = sam.prompt_encoder(
        points=None, boxes=None, masks=out["low_res"][:, best : best + 1]
    )
print(
    "mask prompt",
    tuple(out["low_res"][:, best : best + 1].shape),
    "-> dense embedding",
    tuple(dense_with_mask.shape),
)
print(
    "refined masks",
    tuple(refined["masks"].shape),
    "predicted IoU",
    f"{float(refined['iou'][0, 0]):.3f}"
    + (" (smoke: random decoder weights)" if is_smoke() else ""),
)
assert tuple(dense_with_mask.shape) == (1, 256, 64, 64) and tuple(refined["masks"].shape) == (
    1,
    1,
    h,
    w,
)
fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
plotting.show_masks(
    axes[:1],
    image,
    out["masks"][0, best : best + 1].cpu(),
    out["iou"][0, best : best + 1].cpu(),
    point,
    [1],
    title="first pass",
)
plotting.show_masks(
    axes[1:], image, refined["masks"][0].cpu(), refined["iou"][0].cpu(), point, [1], title="refined"
)
plt.show()

# %% [markdown]
# ## Where the time goes
#
# Encoding happens once per image; each prompt costs one decoder pass.

# %%
with torch.no_grad():
    t0 = time.perf_counter()
    for _ in range(5):
        predict(sam, emb, points=point[None], labels=np.array([[1]]))
    decode_s = (time.perf_counter() - t0) / 5
print(
    f"image encoder ({VARIANT}): {encode_s * 1000:.0f} ms per image; prompt encoder + mask decoder: {decode_s * 1000:.0f} ms per prompt"
)
if is_smoke():
    print("(smoke mode: the tiny encoder is far cheaper than vit_b's; numbers mean nothing)")

# %% [markdown]
# Next, 02: RoI Align, from scratch; then 03 fine-tunes exactly this decoder.
