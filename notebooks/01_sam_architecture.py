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
# each module, with every number computed.
#
# What you will learn:
# - parameters and checkpoint bytes per module for vit_b, vit_l and vit_h, and why the
#   often-quoted "decoder 16.3M, 4.35%" is a size in **bytes**;
# - the input frame: resize the longest side, normalise, pad;
# - the raw `sam.mask_decoder(...)` call a fine-tuning loop makes, and SAM's
#   post-processing, written out and checked against the package's `predict`;
# - the prompt encoder's random-Fourier positional encoding, pictured;
# - multimask output for ambiguous prompts (**IoU**, intersection over union: a mask's
#   overlap with the true object divided by their union), and a mask fed back as a prompt.

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
import torch.nn.functional as F
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
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
# ## The three modules, drawn
#
# The **image encoder** is a ViT (vision transformer: the image cut into 16 x 16-pixel
# patches, each patch a token, transformer blocks over the tokens) followed by a **neck**:
# two small convolutions that turn the ViT's tokens into the embedding the decoder reads
# (256 channels for the official models). The **prompt encoder** turns points and box
# corners into *sparse* tokens and a mask prompt into a *dense* map added to the
# embedding. The **mask decoder** puts its own learned tokens in front of the prompt
# tokens (one **IoU token**, four **mask tokens**), runs a *two-way* transformer (tokens
# attend to the image, the image attends back), upscales the image features four times,
# and turns each mask token into the weights of a mask with a small MLP: a
# **hypernetwork**, a network whose output is the weights of another computation (here,
# the dot product with the upscaled features that gives each mask).

# %%
fig, ax = plt.subplots(figsize=(12, 4.2))
ax.set(xlim=(0, 12), ylim=(0, 4.4))
ax.axis("off")
boxes = {
    "image": (0.1, 2.6, 1.5, 0.9, "image\n(resized, padded)", "0.9"),
    "vit": (2.0, 2.6, 1.9, 0.9, "ViT blocks\n(16 x 16 patches)", "#9ecae1"),
    "neck": (4.3, 2.6, 1.3, 0.9, "neck\n(2 convs)", "#9ecae1"),
    "prompts": (0.1, 0.5, 1.5, 0.9, "points, box,\nmask", "0.9"),
    "penc": (2.0, 0.5, 1.9, 0.9, "prompt encoder\n(Fourier PE + kind)", "#fdd0a2"),
    "tokens": (6.1, 0.5, 1.9, 0.9, "IoU token + 4 mask\ntokens + prompt tokens", "#c7e9c0"),
    "twoway": (6.1, 2.6, 1.9, 0.9, "two-way\ntransformer", "#c7e9c0"),
    "up": (8.5, 3.1, 1.6, 0.7, "upscale x4", "#c7e9c0"),
    "hyper": (8.5, 1.9, 1.6, 0.7, "hypernetwork\nMLPs (x4)", "#c7e9c0"),
    "iou": (8.5, 0.6, 1.6, 0.7, "IoU head (MLP)", "#c7e9c0"),
    "masks": (10.5, 2.4, 1.4, 1.0, "masks\n(dot product)", "0.9"),
    "scores": (10.5, 0.6, 1.4, 0.7, "predicted IoU", "0.9"),
}
for x, y, w, h, label, colour in boxes.values():
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour, ec="0.3"))
    ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=8)
for a, b in [
    ("image", "vit"),
    ("vit", "neck"),
    ("neck", "twoway"),
    ("prompts", "penc"),
    ("penc", "tokens"),
    ("tokens", "twoway"),
    ("twoway", "up"),
    ("twoway", "hyper"),
    ("twoway", "iou"),
    ("up", "masks"),
    ("hyper", "masks"),
    ("iou", "scores"),
]:
    xa, ya, wa, ha = boxes[a][:4]
    xb, yb, wb, hb = boxes[b][:4]
    start = (xa + wa, ya + ha / 2) if xb > xa + wa - 0.01 else (xa + wa / 2, ya + ha)
    end = (xb, yb + hb / 2) if xb > xa + wa - 0.01 else (xb + wb / 2, yb)
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="->", mutation_scale=12, color="0.3"))
for x, label in ((2.0, "image encoder (once per image)"), (6.1, "mask decoder (once per prompt)")):
    ax.text(x, 4.15, label, fontsize=9, weight="bold")
ax.text(2.0, 1.65, "prompt encoder (frozen in notebook 03)", fontsize=9, weight="bold")
plt.show()

# %% [markdown]
# ## Parameters and bytes per module
#
# Counted on models built on PyTorch's `meta` device: exact, and no weights allocated.

# %%
print(f"{'variant':8s} {'module':15s} {'parameters':>13s} {'fp32 MB':>9s} {'share':>7s}")
sizes = {}
for variant in ("vit_b", "vit_l", "vit_h", "tiny"):
    sizes[variant] = module_sizes(variant)
    total = sum(s["state_bytes"] for s in sizes[variant].values())
    for module, s in sizes[variant].items():
        print(
            f"{variant:8s} {module:15s} {s['parameters']:13,d} {s['state_bytes'] / 1e6:9.2f} {s['state_bytes'] / total:7.2%}"
        )
vit_b = sizes["vit_b"]
decoder = vit_b["mask_decoder"]
share = decoder["state_bytes"] / sum(s["state_bytes"] for s in vit_b.values())
assert [vit_b[m]["parameters"] for m in ("image_encoder", "prompt_encoder", "mask_decoder")] == [
    89_670_912,
    6_220,
    4_058_340,
]
print(
    f"\nvit_b's mask decoder: {decoder['parameters']:,} parameters, {decoder['state_bytes']:,} bytes "
    f"at fp32 ({decoder['state_bytes'] / 1e6:.1f} MB), {share:.1%} of the checkpoint"
)

# %% [markdown]
# The "16.3M" that blog posts quote for the decoder is its size in bytes (MB), not
# millions of parameters, and the percentage is its share of the vit_b checkpoint, as
# printed. The decoder is the same in all three official variants; only the image encoder
# grows. `tiny` is smoke mode's own small SAM: the same classes with 128 channels and a
# 256-pixel frame, pretrained on the course's synthetic scenes.
#
# ## Load the model

# %%
t0 = time.perf_counter()
sam = load_sam(VARIANT, device=DEVICE)
print(f"{VARIANT} loaded in {time.perf_counter() - t0:.1f} s on {DEVICE}")
FRAME = sam.image_encoder.img_size  # the input frame's side: 1024 for vit_b
CHANNELS = sam.prompt_encoder.embed_dim  # the embedding's channels: 256 for vit_b
GRID = sam.prompt_encoder.image_embedding_size[0]  # the embedding's grid: 64 for vit_b
print(
    f"input frame {FRAME} x {FRAME}, embedding {CHANNELS} x {GRID} x {GRID}, low-res masks {4 * GRID} x {4 * GRID}"
)

# %% [markdown]
# ## The input frame: resize the longest side, normalise, pad
#
# SAM's encoder always sees a square image, 1024 x 1024 for the official models. The
# longest side is resized to it (aspect ratio kept), pixels are normalised with
# ImageNet's mean and std, and the short side is zero-padded at the bottom or right (zero
# after normalisation: the mean colour when shown).

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
assert tuple(x.shape) == (1, 3, FRAME, FRAME) and max(input_size) == FRAME
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
axes[1].set_title(f"encoder input, {FRAME} x {FRAME}\n(padding beyond the red lines)", fontsize=10)
for ax in axes:
    ax.set(xlabel="x (pixels)", ylabel="y (pixels)")
plt.show()

# %% [markdown]
# ## The image encoder: one embedding per image
#
# 16 x 16-pixel patches on the square frame give a grid of tokens (64 x 64 for vit_b);
# the neck projects them to the decoder's channels. This is the expensive step (seconds
# on a CPU for vit_b), and it does not depend on the prompts: that is why notebook 03
# caches it.

# %%
t0 = time.perf_counter()
emb = embed_image(sam, image)
encode_s = time.perf_counter() - t0
print("embedding:", tuple(emb.embedding.shape), f"in {encode_s:.2f} s")
assert tuple(emb.embedding.shape) == (1, CHANNELS, GRID, GRID) and GRID == FRAME // 16

# %% [markdown]
# ## The prompt encoder: sparse and dense embeddings
#
# Points and box corners become **sparse** tokens of `CHANNELS` numbers each: a
# positional encoding of the location plus a learned embedding of its kind (foreground
# point, background point, top-left corner, bottom-right corner). A point prompt without a
# box gets one padding token. A mask prompt becomes a **dense** map of the embedding's
# shape; without one, a learned "no mask" vector is broadcast.

# %%
h, w = image.shape[:2]
point = np.array([[w * 0.5, h * 0.5]])
box = np.array([w * 0.2, h * 0.2, w * 0.8, h * 0.8])
transform = ResizeLongestSide(FRAME)
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
        assert sparse.shape[-1] == CHANNELS and tuple(dense.shape) == (1, CHANNELS, GRID, GRID)
assert tuple(sam.prompt_encoder(points=(pts, lab), boxes=bx, masks=None)[0].shape) == (
    1,
    3,
    CHANNELS,
)

# %% [markdown]
# ### The random-Fourier positional encoding
#
# A point prompt is a pixel index `(x, y)` in the input frame of side `F` (after the
# resize above). SAM's prompt encoder first moves it to the pixel's centre, then
# normalises:
#
# $$p = \left(\frac{x + 0.5}{F}, \frac{y + 0.5}{F}\right) \in [0, 1]^2, \qquad
# u = 2p - 1 \in [-1, 1]^2, \qquad v = 2\pi\, u\, G, \qquad
# \mathrm{PE}(x, y) = [\sin v, \cos v],$$
#
# where `G` is a fixed 2 x (channels / 2) matrix of standard normal draws (stored in the
# checkpoint). Each channel is a plane wave of random direction and frequency: together
# they let the decoder tell any two locations apart. The image's own positional encoding,
# `get_dense_pe()`, is the same function at the centres of the grid's cells. Because the
# encoder adds the half pixel itself, prompts are given as pixel indices (SamPredictor's
# convention), never as centres. Checked by hand against SAM's code:

# %%
pe_layer = sam.prompt_encoder.pe_layer
gauss = pe_layer.positional_encoding_gaussian_matrix
dense_pe = sam.prompt_encoder.get_dense_pe()
print("Gaussian matrix:", tuple(gauss.shape), " dense PE:", tuple(dense_pe.shape))
assert tuple(gauss.shape) == (2, CHANNELS // 2) and tuple(dense_pe.shape) == (
    1,
    CHANNELS,
    GRID,
    GRID,
)


def pe_by_hand(p: torch.Tensor) -> torch.Tensor:
    """The formula above for points ``p`` in [0, 1]^2 (``N x 2``)."""
    v = 2 * torch.pi * (2 * p - 1) @ gauss
    return torch.cat([torch.sin(v), torch.cos(v)], dim=-1)


with torch.no_grad():
    xy = pts[0, 0]  # the centre point above, as a pixel index in the input frame
    fg_embedding = sam.prompt_encoder.point_embeddings[1].weight[0]  # "foreground", added to the PE
    sparse_point = sam.prompt_encoder(points=(pts, lab), boxes=None, masks=None)[0][0, 0]
    by_hand = pe_by_hand(((xy + 0.5) / FRAME)[None])[0]
    row, col = GRID // 8, GRID // 3
    cell = torch.tensor([[(col + 0.5) / GRID, (row + 0.5) / GRID]], device=gauss.device)
    point_error = float((by_hand + fg_embedding - sparse_point).abs().max())
    grid_error = float((pe_by_hand(cell)[0] - dense_pe[0, :, row, col]).abs().max())
print(f"max |by hand - SAM|: point prompt {point_error:.1e}, grid cell {grid_error:.1e}")
assert point_error < 1e-5 and grid_error < 1e-5
fig, axes = plt.subplots(1, 6, figsize=(13, 2.8), layout="constrained")
half = CHANNELS // 2
for ax, ch in zip(axes, (0, 5, half // 3, half, half + 5, half + half // 3)):
    ax.imshow(dense_pe[0, ch].cpu(), cmap="RdBu", vmin=-1, vmax=1)
    ax.set_title(f"{'sin' if ch < half else 'cos'} channel {ch}", fontsize=8)
    ax.set_xlabel("grid column", fontsize=8)
    ax.tick_params(labelsize=7)
axes[0].set_ylabel("grid row", fontsize=8)
fig.suptitle(
    f"get_dense_pe(): six of its {CHANNELS} channels on the {GRID} x {GRID} grid (blue -1, red +1)",
    fontsize=9,
)
plt.show()

# %% [markdown]
# ## The mask decoder, called as a fine-tuning loop calls it
#
# This is the call the first seed's training loop makes, and what the package's `predict`
# does for a batch of prompts: prompt embeddings in, low-res masks and predicted IoUs out.
# `multimask_output=True` reads mask tokens 1-3, `False` mask token 0.

# %%
with torch.no_grad():
    sparse, dense = sam.prompt_encoder(points=(pts, lab), boxes=None, masks=None)
    low_res, iou = sam.mask_decoder(
        image_embeddings=emb.embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=True,
    )
print("low-res masks", tuple(low_res.shape), " predicted IoU", tuple(iou.shape))
assert tuple(low_res.shape) == (1, 3, 4 * GRID, 4 * GRID)

# %% [markdown]
# **Post-processing**, SAM's `postprocess_masks` written out: upsample the low-res logits
# to the square input frame, crop away the padding (`input_size`), resize to the
# original image; thresholding at 0 gives the masks. (There is no non-maximum suppression
# in it.) Both checked against the package's `predict`, which the tests check against
# `SamPredictor`:

# %%
frame_logits = F.interpolate(low_res, (FRAME, FRAME), mode="bilinear", align_corners=False)
cropped = frame_logits[..., : input_size[0], : input_size[1]]
logits = F.interpolate(cropped, (h, w), mode="bilinear", align_corners=False)
with torch.no_grad():
    out = predict(sam, emb, points=point[None], labels=np.array([[1]]), multimask=True)
torch.testing.assert_close(low_res, out["low_res"])
torch.testing.assert_close(iou, out["iou"])
torch.testing.assert_close(logits, out["logits"])
assert torch.equal(logits > sam.mask_threshold, out["masks"])
print("raw decoder call + post-processing by hand = predict:", tuple(out["masks"].shape))

# %% [markdown]
# Inside the decoder, hooks record the shapes: the five learned tokens and the prompt's
# two (the point and its padding token) attend to the grid's image tokens and back.

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
    predict(sam, emb, points=point[None], labels=np.array([[1]]), multimask=True)
hook.remove()
for k, v in shapes.items():
    print(f"{k:17s} {v}")
assert shapes["prompt_tokens_in"] == (1, 5 + 2, CHANNELS)  # IoU + 4 mask tokens + point + padding
assert shapes["image_tokens_out"] == (1, GRID * GRID, CHANNELS)

# %% [markdown]
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
# The best low-res logits can go back in as a **mask prompt** together with the same (or
# more) points. The prompt encoder's small CNN turns them into a dense map of the
# embedding's shape, added to the image embedding; with one mask requested the decoder
# refines its own answer. Notebook 03 uses exactly this: every round of its interactive
# training and evaluation after the first feeds the previous round's logits back with all
# clicks so far.

# %%
mask_prompt = out["low_res"][:, best : best + 1]
with torch.no_grad():
    refined = predict(
        sam,
        emb,
        points=point[None],
        labels=np.array([[1]]),
        mask_input=mask_prompt,
        multimask=False,
    )
    _, dense_with_mask = sam.prompt_encoder(points=None, boxes=None, masks=mask_prompt)
print("mask prompt", tuple(mask_prompt.shape), "-> dense embedding", tuple(dense_with_mask.shape))
print(
    "refined masks",
    tuple(refined["masks"].shape),
    f"predicted IoU {float(refined['iou'][0, 0]):.3f}",
)
assert tuple(dense_with_mask.shape) == (1, CHANNELS, GRID, GRID) and tuple(
    refined["masks"].shape
) == (1, 1, h, w)
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

# %% [markdown]
# Next, 02: RoI Align, from scratch; then 03 fine-tunes exactly this decoder.
