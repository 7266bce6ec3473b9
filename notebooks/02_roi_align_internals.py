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
# # 02 · RoI Align internals: from RoI Pool's rounding to bilinear sampling
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/segcourse/segmentation-finetuning-course/blob/main/notebooks/02_roi_align_internals.ipynb)
#
# A two-stage detector such as Mask R-CNN first proposes boxes, *regions of interest*
# (**RoIs**); then small networks, its *heads*, classify each box and refine it (the box
# head) and draw its mask (the mask head). A head needs a fixed-size grid of features for
# its box (7 x 7 for the box head, 14 x 14 for Mask R-CNN's mask head), cut out of a
# backbone's feature map whose *stride* is 4 to 32 (one cell per 4 to 32 image pixels).
# How that grid is cut decides whether a mask lines up with its object, which is measured
# below by the **IoU** of masks (intersection over union: 1 identical, 0 disjoint).
#
# What you will learn:
# - RoI Pool's two quantisations, with numbers;
# - RoI Align's bins and sample points, bilinear interpolation by hand, `aligned=True`'s
#   half-pixel shift, the adaptive `sampling_ratio`;
# - which level of the feature pyramid (FPN: maps P2 to P5 at strides 4 to 32) Mask R-CNN
#   pools each box from;
# - a from-scratch `roi_align` equal to torchvision's (tested over hundreds of cases),
#   and why it can be fast: bilinear sampling is separable;
# - which RoI Align torchvision's Mask R-CNN runs (`aligned=False`), and what the box
#   rounding and the half-cell shift each do to the masks of small objects, measured apart.

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
import json
import math
import time
from collections import OrderedDict

import matplotlib.pyplot as plt
import torch
import torchvision

from helpers.course.runtime import REPO_ROOT, describe, is_smoke
from helpers.detection.roi_align import (
    fpn_levels,
    roi_align,
    roi_pool,
    sample_points,
)
from helpers.detection.roi_roundtrip import roundtrip_experiment
from helpers.views import plotting

print(describe())

# %% [markdown]
# ## Settings

# %%
STRIDE = 16  # the feature map's stride in the first examples (P4 of an FPN)
N_OBJECTS = 5 if is_smoke() else 50  # objects per size in the final experiment

# %% [markdown]
# ## RoI Pool: two roundings
#
# Take a box from x = 13.7 to 140.3 pixels on a stride-16 map. On the feature grid it
# spans 0.856 .. 8.769 cells. RoI Pool first **rounds the box** to whole cells, then
# **splits the cells into bins** with `floor` and `ceil`, so bins differ in size.

# %%
x1, x2 = 13.7, 140.3
start, end = round(x1 / STRIDE), round(x2 / STRIDE)
cells = end - start + 1
print(
    f"box on the grid: {x1 / STRIDE:.3f} .. {x2 / STRIDE:.3f} -> cells {start} .. {end} ({cells} cells)"
)
bins = [
    (start + math.floor(p * cells / 7), start + math.ceil((p + 1) * cells / 7) - 1)
    for p in range(7)
]
print("7 bins, cells (inclusive):", bins)
print(
    f"the pooled cells cover image pixels {start * STRIDE} .. {(end + 1) * STRIDE} instead of {x1} .. {x2}: "
    f"{start * STRIDE - x1:.1f} px of the object lost on the left, {(end + 1) * STRIDE - x2:.1f} px of background added on the right"
)

# the same numbers through roi_pool: a feature row whose value is its column index
row = torch.arange(12.0).reshape(1, 1, 1, 12)
pooled = roi_pool(row, torch.tensor([[0, x1, 0, x2, 0]]), (1, 7), 1 / STRIDE)
print("roi_pool max per bin:", ", ".join(f"{v:g}" for v in pooled.flatten().tolist()))
assert pooled.flatten().tolist() == [float(b[1]) for b in bins]
assert torch.equal(
    pooled, torchvision.ops.roi_pool(row, torch.tensor([[0, x1, 0, x2, 0]]), (1, 7), 1 / STRIDE)
)

# %% [markdown]
# ## RoI Align: bins of equal size, sampled bilinearly
#
# RoI Align never rounds. The box is cut into `PH x PW` equal bins; each bin is sampled
# at `gh x gw` evenly spaced points; each point reads the 4 cells around it by bilinear
# interpolation; the bin's value is the mean. The classic picture: a 2 x 2 output with
# 4 points per bin.

# %%
box = (1.3 * STRIDE, 0.8 * STRIDE, 5.6 * STRIDE, 4.1 * STRIDE)
fig, ax = plt.subplots(figsize=(5, 4))
plotting.draw_roi_sampling(
    ax, (6, 7), box, output_size=2, sampling_ratio=2, spatial_scale=1 / STRIDE
)
ax.set_title("2 x 2 bins, 4 sample points each (x); grey dots: cell values")
plt.show()
print(
    "sample points (x, y) of bin (0, 0):",
    ", ".join(
        f"({x:.3f}, {y:.3f})" for x, y in sample_points(box, 2, 2, 1 / STRIDE)[0, 0].reshape(-1, 2)
    ),
)

# %% [markdown]
# ### Bilinear interpolation by hand
#
# A point at `(x, y) = (1.3, 0.6)` lies between cells `(row 0, col 1)`, `(0, 2)`,
# `(1, 1)` and `(1, 2)`. Its value weighs each by the area of the opposite sub-rectangle:

# %%
grid = torch.tensor([[1.0, 2.0, 4.0], [3.0, 5.0, 9.0], [0.0, 1.0, 2.0]])
x, y = 1.3, 0.6
lx, ly = x - 1, y - 0
by_hand = (
    (1 - ly) * (1 - lx) * grid[0, 1]
    + (1 - ly) * lx * grid[0, 2]
    + ly * (1 - lx) * grid[1, 1]
    + ly * lx * grid[1, 2]
)
# a 1-cell box centred on (1.3, 0.6), one bin, one sample: the sample is the centre
one_point = roi_align(
    grid[None, None], torch.tensor([[0, x - 0.5, y - 0.5, x + 0.5, y + 0.5]]), 1, 1.0, 1
)
print(f"by hand: {by_hand.item():.4f}   roi_align: {one_point.item():.4f}")
assert abs(by_hand.item() - one_point.item()) < 1e-6

# %% [markdown]
# ### `aligned=True`: the half-pixel shift
#
# With `aligned=False` (the original Mask R-CNN), a box edge at image pixel 0 maps to the
# *centre* of cell 0, half a cell off: the RoI sits half a cell down and right of the
# object. `aligned=True` subtracts 0.5 after scaling so that box edges fall on cell edges.
# The legacy mode also forces every box to be at least one cell wide, which `aligned=True`
# drops.
#
# Which one does torchvision's Mask R-CNN use? Its poolers (`MultiScaleRoIAlign`) call
# `roi_align` without `aligned`, so with the default `aligned=False`: the original Mask
# R-CNN's RoIAlign, as Detectron had it. Detectron2 defaults to `aligned=True`. Checked
# below on the mask head's own pooler.

# %%
fig, ax = plt.subplots(figsize=(5, 4))
small = (2 * STRIDE, 1 * STRIDE, 4 * STRIDE, 3 * STRIDE)  # covers cells 2..3 x 1..2 exactly
plotting.draw_roi_sampling(
    ax, (5, 6), small, 2, 2, 1 / STRIDE, aligned=False, colour="tab:red", label="aligned=False"
)
plotting.draw_roi_sampling(
    ax, (5, 6), small, 2, 2, 1 / STRIDE, aligned=True, colour="tab:blue", label="aligned=True"
)
ax.legend(loc="lower right", fontsize=8)
ax.set_title("a box covering cells 2..3 x 1..2")
plt.show()

# %%
mask_pooler = torchvision.models.detection.maskrcnn_resnet50_fpn(
    weights=None, weights_backbone=None
).roi_heads.mask_roi_pool
maps = OrderedDict(
    (name, torch.randn(1, 4, side, side)) for name, side in zip("0123", (200, 100, 50, 25))
)
box_85px = [torch.tensor([[100.0, 120.0, 180.0, 210.0]])]  # pooled from level P2 (stride 4)
pooled = mask_pooler(maps, box_85px, [(800, 800)])
for aligned in (False, True):
    same = torch.equal(
        pooled, torchvision.ops.roi_align(maps["0"], box_85px, 14, 1 / 4, 2, aligned=aligned)
    )
    print(f"Mask R-CNN's mask pooler == roi_align(aligned={aligned}): {same}")
assert torch.equal(
    pooled, torchvision.ops.roi_align(maps["0"], box_85px, 14, 1 / 4, 2, aligned=False)
)

# %% [markdown]
# ### Adaptive `sampling_ratio`
#
# With `sampling_ratio <= 0` each RoI gets `ceil(roi_size / bins)` samples per bin and
# axis: large boxes are sampled densely, small ones sparsely. torchvision's Mask R-CNN uses
# a fixed 2 (Detectron2's default is the adaptive 0).

# %%
for side in (32, 100, 224, 500):
    g = math.ceil(side / STRIDE / 7)
    print(
        f"box {side:3d} px on stride {STRIDE}: {side / STRIDE:5.2f} cells -> {g} x {g} samples per bin of a 7 x 7 output"
    )

# %% [markdown]
# ## Mask R-CNN: which FPN level, which output size
#
# Mask R-CNN's FPN has maps P2..P5 (strides 4..32). A box is pooled from level
# `floor(4 + log2(sqrt(w h) / 224))`, clamped to 2..5: a 224-pixel box from P4.
# torchvision's model pools 7 x 7 for the box head and 14 x 14 for the mask head, both
# with `sampling_ratio=2`:

# %%
model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
print("box head: ", model.roi_heads.box_roi_pool)
print("mask head:", model.roi_heads.mask_roi_pool)
sides = torch.tensor([16.0, 64, 112, 224, 448, 1000])
levels = fpn_levels(torch.stack([torch.zeros(6), torch.zeros(6), sides, sides], 1))
print("box side -> level:", dict(zip(sides.int().tolist(), levels.tolist())))
assert levels.tolist() == [2, 2, 3, 4, 5, 5]

# %% [markdown]
# ## RoI Align from scratch, the slow and obvious way
#
# Everything above in one function, written for reading, not speed: for each RoI, each
# output bin and each sample point, a bilinear read by hand, and the bin's value is the
# mean of its samples. The rules for the edges are torchvision's (its CPU kernel,
# `roi_align_kernel.cpp`): a sample more than one cell outside the map reads 0; one within
# a cell of the edge is clamped onto it.


# %%
def bilinear(feature, y, x):
    """feature: C x H x W; (y, x) a point on the cell grid (cell centres at integers).
    Returns the C values there."""
    _, height, width = feature.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return torch.zeros(feature.shape[0], dtype=feature.dtype)  # far outside: 0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)  # the cell above-left of the point
    if y0 >= height - 1:  # on the last row: no row below, read the last one
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0  # how far past the above-left cell, 0..1
    return (
        (1 - ly) * (1 - lx) * feature[:, y0, x0]
        + (1 - ly) * lx * feature[:, y0, x1]
        + ly * (1 - lx) * feature[:, y1, x0]
        + ly * lx * feature[:, y1, x1]
    )


def roi_align_naive(features, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """features: N x C x H x W; rois: K x 5 (batch index, x1, y1, x2, y2) in image pixels.
    Returns K x C x PH x PW, as torchvision.ops.roi_align."""
    ph_n, pw_n = output_size
    offset = 0.5 if aligned else 0.0  # aligned=True: box edges on cell edges
    out = torch.zeros(len(rois), features.shape[1], ph_n, pw_n, dtype=features.dtype)
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        x1, y1 = x1 * spatial_scale - offset, y1 * spatial_scale - offset
        x2, y2 = x2 * spatial_scale - offset, y2 * spatial_scale - offset
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:  # the legacy mode: at least one cell wide and high
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_w, bin_h = roi_w / pw_n, roi_h / ph_n
        # samples per bin and axis: fixed, or adaptive (as many as the bin has cells)
        gy = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / ph_n)
        gx = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pw_n)
        for ph in range(ph_n):
            for pw in range(pw_n):
                total = torch.zeros(features.shape[1], dtype=features.dtype)
                for iy in range(gy):
                    y = y1 + ph * bin_h + (iy + 0.5) * bin_h / gy  # evenly inside the bin
                    for ix in range(gx):
                        x = x1 + pw * bin_w + (ix + 0.5) * bin_w / gx
                        total += bilinear(features[int(b)], y, x)
                out[k, :, ph, pw] = total / max(gy * gx, 1)  # the mean of the samples
    return out


# %% [markdown]
# Checked against `torchvision.ops.roi_align` on random boxes (some partly outside the
# map, some smaller than a cell), for both `aligned` modes and a fixed and the adaptive
# `sampling_ratio`:

# %%
g = torch.Generator().manual_seed(0)
feats = torch.randn(2, 3, 12, 16, generator=g, dtype=torch.float64)
xy = torch.rand(24, 2, generator=g, dtype=torch.float64) * 300 - 40  # some start outside
wh = torch.rand(24, 2, generator=g, dtype=torch.float64) ** 2 * 180  # some tiny
rois = torch.cat([torch.randint(0, 2, (24, 1), generator=g).double(), xy, xy + wh], 1)
for aligned in (True, False):
    for sampling_ratio in (2, 0):
        slow = roi_align_naive(feats, rois, (5, 4), 1 / 16, sampling_ratio, aligned)
        ref = torchvision.ops.roi_align(feats, rois, (5, 4), 1 / 16, sampling_ratio, aligned)
        fast = roi_align(feats, rois, (5, 4), 1 / 16, sampling_ratio, aligned)
        torch.testing.assert_close(slow, ref)
        torch.testing.assert_close(fast, ref)
        print(
            f"aligned={aligned!s:5s} sampling_ratio={sampling_ratio}: max |naive - torchvision| "
            f"{(slow - ref).abs().max().item():.1e}, max |package - torchvision| "
            f"{(fast - ref).abs().max().item():.1e}"
        )

# %% [markdown]
# ## The from-scratch `roi_align`, and why it is fast
#
# The naive version calls `bilinear` once per sample point: 49 bins x 4 samples x 4 cells
# for every RoI of a 7 x 7 output, each a few Python operations. The package's
# `helpers.detection.roi_align.roi_align` (equal to torchvision's over hundreds of random
# cases in the tests, forward and gradients, at 1e-10 in float64) computes the same
# numbers in a few tensor operations. Its trick: a bilinear weight is a row weight times a
# column weight, and the samples of a bin row share their row weights, so a whole RoI is
# two small matrix products, `out[c] = A_y @ F[c] @ A_x.T`, where row `p` of `A_y` holds
# the weights with which output row `p` reads each row of the map (the mean over the
# bin's samples included). Only the rows and columns a RoI's samples touch are non-zero.
# Check it against torchvision on a larger random batch:

# %%
g = torch.Generator().manual_seed(0)
feats = torch.randn(2, 8, 50, 50, generator=g)
xy = torch.rand(64, 2, generator=g) * 600
rois = torch.cat(
    [
        torch.randint(0, 2, (64, 1), generator=g).float(),
        xy,
        xy + 32 + torch.rand(64, 2, generator=g) * 200,
    ],
    1,
)
ours = roi_align(feats, rois, 14, 1 / 16, 2, aligned=True)
ref = torchvision.ops.roi_align(feats, rois, 14, 1 / 16, 2, aligned=True)
print("max |ours - torchvision| =", (ours - ref).abs().max().item())
assert (ours - ref).abs().max() < 1e-4

few = rois[:8]  # the naive loops are slow: time all three on the same 8 RoIs
for name, fn in (
    ("naive loops", roi_align_naive),
    ("package (separable)", roi_align),
    ("torchvision (C++)", torchvision.ops.roi_align),
):
    t0 = time.perf_counter()
    fn(feats, few, (14, 14), 1 / 16, 2, True)
    print(f"{name:20s} {1e3 * (time.perf_counter() - t0):8.1f} ms for 8 RoIs, 8 channels, 14 x 14")

# %% [markdown]
# `benchmarks/roi_align.py` times both at Mask R-CNN mask-head sizes, side by side; its
# results file, as measured on this course's machine (the README's table comes from the
# same file):

# %%
results_file = REPO_ROOT / "benchmarks" / "results" / "roi_align.json"
for row in json.loads(results_file.read_text())["results"]["sizes"]:
    side = row["feature_map"][-1]
    print(
        f"feature map {side:3d} x {side:3d}: torchvision {row['torchvision_s']:.3f} s, the package {row['ours_s']:.3f} s (ours / torchvision {row['ratio']:.2f})"
    )

# %% [markdown]
#
# ## What each part does: small objects through the mask head
#
# Give the mask head a perfect feature map (the object's mask averaged over 8 x 8-pixel
# blocks, one cell each), take the box's 14 x 14 RoI features four ways, paste them back
# into the object's box as Mask R-CNN pastes its masks, and measure the IoU of the result
# with the true mask. Nothing is learned here: this measures only the geometry.
#
# - **RoI Pool**: the box and the bins rounded to cells, the max of each bin;
# - **Align, aligned=False** (torchvision's Mask R-CNN): no rounding, but every cell read
#   half a cell from where its value belongs: the half-cell shift alone;
# - **Align on the rounded box**: `aligned=True` on the box rounded to cells the way RoI
#   Pool rounds it, pasted into the exact box: the box rounding alone;
# - **Align, aligned=True**: neither.
#
# Measured from the last one, each of the middle two isolates one error.

# %%
table = roundtrip_experiment(radii=(6, 12, 24, 48), n_objects=N_OBJECTS, stride=8)
head = (
    "half-height",
    "RoI Pool",
    "aligned=False",
    "rounded box",
    "aligned=True",
    "shift costs",
    "rounding costs",
)
print(" | ".join(f"{h:>14s}" for h in head))
for r, row in table.items():
    values = (row["pool"], row["align_false"], row["align_rounded"], row["align"])
    costs = (row["align"] - row["align_false"], row["align"] - row["align_rounded"])
    print(
        f"{r:>11d} px | "
        + " | ".join(f"{v:14.3f}" for v in values)
        + " | "
        + " | ".join(f"{c:14.3f}" for c in costs)
    )
if is_smoke():
    print(f"(smoke: {N_OBJECTS} objects per size; full mode: 50)")
assert all(
    row["align"] > max(row["align_false"], row["align_rounded"], row["pool"])
    for row in table.values()
)
shift = [row["align"] - row["align_false"] for row in table.values()]
rounding = [row["align"] - row["align_rounded"] for row in table.values()]
print(
    f"the shift costs {min(shift):.2f} to {max(shift):.2f} of IoU, "
    f"the rounding {min(rounding):.2f} to {max(rounding):.2f}"
)

# %% [markdown]
# This is a geometric illustration at one stride, 8. In torchvision's Mask R-CNN the
# level mapper (above) would pool objects of these sizes from P2, at stride 4, where each
# error is half as many pixels: the same experiment at the stride the model would use
# for them:

# %%
for r in table:  # each ellipse is 2.6 r wide and 2 r high
    box = torch.tensor([[0.0, 0.0, 2.6 * r, 2.0 * r]])
    print(
        f"half-height {r:2d} px: sqrt(w h) {box[0, 2:].prod().sqrt():5.1f} px -> level "
        f"P{fpn_levels(box).item()}"
    )
table4 = roundtrip_experiment(radii=tuple(table), n_objects=N_OBJECTS, stride=4)
for r, row in table4.items():
    print(
        f"stride 4, half-height {r:2d} px: RoI Pool {row['pool']:.3f}, aligned=False "
        f"{row['align_false']:.3f}, rounded box {row['align_rounded']:.3f}, aligned=True "
        f"{row['align']:.3f}"
    )

# %% [markdown]
# Both errors cost IoU (the lines printed under the stride-8 table), less at stride 4,
# and the smallest objects lose most: a few pixels of misplacement are a large part of
# their masks. RoI Align as Mask R-CNN introduced it removed the rounding; torchvision's
# `aligned=False` still has the half-cell shift.
#
# The two are not alike for a trained mask head. torchvision cuts the mask head's
# training targets with the same `roi_align(..., aligned=False)`
# (`roi_heads.project_masks_on_boxes`), so the targets carry the same constant half-cell
# shift as the features, and a trained head can learn it. RoI Pool's rounding differs
# from box to box (it depends on where each box falls on the grid), and nothing learned
# can undo it. What a trained network does with either is not measured here. Detectron2's `ROIAlign`
# docstring, of its `aligned=True` fix: "The difference does not make a difference to the
# model's performance if ROIAlign is used together with conv layers" (its authors'
# empirical remark). The Mask R-CNN paper, comparing trained networks with RoIAlign as
# implemented in Detectron (no half-pixel offset) against RoIPool, reports that RoIAlign
# "improves mask accuracy by relative 10% to 50%".
#
# RoI Align comes back in notebook 04: torchvision's Mask R-CNN pools every proposal
# through `MultiScaleRoIAlign` (the level mapper above, `aligned=False`, sampling ratio 2)
# into the 7 x 7 features of its box head and the 14 x 14 ones of its mask head, whose 28 x
# 28 masks are pasted back into each box as above. Fine-tuning it on LabPics trains the
# heads that read these features. Next, 03: SAM's mask decoder, fine-tuned on VOC2007.
