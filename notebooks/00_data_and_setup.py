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
# # 00 · Setup and the course's data: VOC2007 instances and LabPics vessels
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/segcourse/segmentation-finetuning-course/blob/main/notebooks/00_data_and_setup.ipynb)
#
# What you will learn:
# - how the course runs: **smoke mode** (tiny built-in data, seconds) vs **full mode**
#   (real checkpoints and data sets), and where downloads go;
# - the on-disk layouts of the two data sets the course fine-tunes on, Pascal VOC2007's
#   instance masks and LabPics Medical's vessels, and how `helpers` reads them lazily;
# - the detection-target contract torchvision's Mask R-CNN expects (boxes on pixel edges);
# - what the readers do with bad files: an error that names the file.

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
import shutil
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torchvision
from PIL import Image

from helpers.course.runtime import DATA_EXAMPLE, describe
from helpers.data.image_files import DataError
from helpers.data.labpics import LabPicsDataset
from helpers.data.voc import VOC_CLASSES, VOCInstanceDataset
from helpers.detection.targets import detection_target
from helpers.views import plotting

print(describe())

# %% [markdown]
# ## Settings
#
# This notebook only reads the built-in `data_example/` (a few MB, committed with the
# course): the real VOC2007 and LabPics archives are downloaded by notebooks 03 and 04.

# %%
DATA = DATA_EXAMPLE
N_SHOW = 4  # samples drawn per data set

# %% [markdown]
# ## Pascal VOC2007: instances in palette PNGs
#
# ```
# VOCdevkit/VOC2007/
#   JPEGImages/<id>.jpg            the photo
#   SegmentationObject/<id>.png    palette PNG: 0 background, 1..N instance id, 255 void
#   SegmentationClass/<id>.png     palette PNG: 0 background, 1..20 class index, 255 void
#   Annotations/<id>.xml           boxes and class names
#   ImageSets/Segmentation/{train,val,trainval,test}.txt
# ```
#
# A palette PNG stores one byte per pixel, an *index*; the palette only decides the colour
# a viewer paints it. The index is the label. Look at one raw file:

# %%
voc = VOCInstanceDataset(DATA / "VOCdevkit", "train")
print(voc)
raw = Image.open(voc.voc_dir / "SegmentationObject" / f"{voc.ids[0]}.png")
indices = np.asarray(raw)
print("PNG mode:", raw.mode, "| distinct indices:", np.unique(indices).tolist())
assert raw.mode == "P" and set(np.unique(indices)) >= {0, 1, 2, 255}

# %% [markdown]
# The white-ish band (index 255, *void*) runs about 5 pixels wide along every object's
# border: VOC's annotators did not decide those pixels, so losses and metrics must skip
# them. The class of an instance is not in SegmentationObject: it is the value of
# SegmentationClass at the instance's pixels. `torchvision.datasets.VOCSegmentation`
# reads only the class map, so the course has its own instance reader.

# %%
sample = voc[0]
for key, value in sample.items():
    print(f"{key:13s}", getattr(value, "shape", value), getattr(value, "dtype", ""))
print("classes:", [VOC_CLASSES[label - 1] for label in sample["labels"]])
assert sample["masks"].shape[0] == len(sample["labels"]) == len(np.unique(indices)) - 2

# %%
fig, axes = plt.subplots(1, N_SHOW, figsize=(4 * N_SHOW, 3.4))
for ax, i in zip(axes, range(N_SHOW)):
    plotting.show_sample(ax, voc[i], names=VOC_CLASSES)
plt.show()

# %% [markdown]
# ## LabPics Medical: one PNG per vessel, and an ignore map
#
# ```
# LabPicsMedical/{Train,Test}/<sample>/
#   Image.jpg
#   Vessels/*.png                one mask per vessel instance, non-zero = inside
#   Ignore.png                   regions to leave out of training and evaluation
#   SemanticMaps/FullImage/*.png semantic maps (the union of vessels among them)
# ```
#
# Vessels are transparent: a flask seen through a beaker keeps its whole outline, so
# LabPics' instance masks may **overlap**, unlike VOC's. A sample with no `Vessels/`
# folder has no vessel annotation at all; the reader skips it and says how many it skipped.

# %%
labpics = LabPicsDataset(DATA / "LabPicsMedical", "Train")
print(labpics)
overlaps = [int(labpics[i]["masks"].sum(0).max() > 1) for i in range(len(labpics))]
print("samples with overlapping vessels:", sum(overlaps), "of", len(labpics))

fig, axes = plt.subplots(1, N_SHOW, figsize=(4 * N_SHOW, 3.4))
for ax, i in zip(axes, range(N_SHOW)):
    plotting.show_sample(ax, labpics[i], labels=False)  # one class: a label says nothing
plt.show()

# %% [markdown]
# ## Detection targets: the contract torchvision's Mask R-CNN expects
#
# `boxes` are `(x0, y0, x1, y1)` float32 on **pixel edges**: a mask covering columns 3..8
# has `x0 = 3, x1 = 9`. (`torchvision.ops.masks_to_boxes` returns pixel centres, `x1 = 8`,
# which gives a one-pixel-wide object a zero-width box that training rejects.)

# %%
target = detection_target(labpics[0], image_id=0)
for key, value in target.items():
    print(f"{key:9s}", getattr(value, "shape", value), getattr(value, "dtype", ""))

centres = torchvision.ops.masks_to_boxes(target["masks"].bool())
assert (target["boxes"][:, 2:] - centres[:, 2:] == 1).all()

fig, ax = plt.subplots(figsize=(5, 4))
plotting.show_sample(ax, labpics[0], labels=False)
plotting.draw_boxes(ax, target["boxes"])
plt.show()

# %% [markdown]
# ## Two box conventions, side by side
#
# The course meets boxes twice. SAM's prompts (notebooks 01 and 03, as `SamPredictor`
# takes them) are **inclusive pixel indices**: `(x0, y0, x1, y1)` are the first and last
# column and row of the object, so a one-pixel object has `x0 = x1`. Mask R-CNN's targets
# are **pixel edges**: the right edge is one past the last column. Both on a 6 x 5-pixel
# object, each pixel a square centred on its index:

# %%
tiny = np.zeros((8, 10), bool)
tiny[2:7, 3:9] = True  # rows 2..6, columns 3..8
ys, xs = np.nonzero(tiny)
sam_box = tuple(int(v) for v in (xs.min(), ys.min(), xs.max(), ys.max()))  # inclusive indices
edges = detection_target({"masks": tiny[None], "labels": np.ones(1)}, 0)["boxes"][0].tolist()
fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
for ax, title, (x0, y0, x1, y1), corners in (
    (axes[0], f"SAM prompt, inclusive indices: {sam_box}", sam_box, "centres"),
    (axes[1], f"Mask R-CNN target, pixel edges: {tuple(int(v) for v in edges)}", edges, "edges"),
):
    ax.imshow(tiny, cmap="Greys", vmin=0, vmax=1.6)
    ax.set_xticks(range(10))
    ax.set_yticks(range(8))
    ax.grid(False)
    if corners == "centres":  # the first and last pixels' centres; SAM adds the half pixel
        ax.plot([x0, x1], [y0, y1], "o", color="tab:orange", ms=8)
        ax.add_patch(
            plt.Rectangle(
                (x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, ec="tab:orange", lw=2
            )
        )
    else:  # the corners sit on pixel edges (imshow's edges are at -0.5)
        ax.plot([x0 - 0.5, x1 - 0.5], [y0 - 0.5, y1 - 0.5], "s", color="tab:blue", ms=8)
        ax.add_patch(
            plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="tab:blue", lw=2)
        )
    ax.set_title(title, fontsize=9)
plt.show()
assert edges == [sam_box[0], sam_box[1], sam_box[2] + 1, sam_box[3] + 1]

# %% [markdown]
# ## Bad files fail loudly, naming the file
#
# A truncated photo (an interrupted copy, say) is not silently read as half an image:

# %%

with tempfile.TemporaryDirectory() as tmp:
    copy = Path(tmp) / "LabPicsMedical"
    shutil.copytree(DATA / "LabPicsMedical", copy)
    photo = copy / "Train" / labpics.samples[0].name / "Image.jpg"
    photo.write_bytes(photo.read_bytes()[:3000])
    try:
        LabPicsDataset(copy, "Train")[0]
    except DataError as err:
        print("DataError:", err)
    else:
        raise AssertionError("a truncated JPEG was read without complaint")

# %% [markdown]
# ## What next
#
# - 01: how Segment Anything is built, number by number.
# - 02: RoI Align, from scratch.
# - 03: fine-tune SAM's mask decoder on VOC2007 instances.
# - 04: fine-tune Mask R-CNN on LabPics vessels.
