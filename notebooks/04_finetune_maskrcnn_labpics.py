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
# # 04 · Fine-tuning torchvision's Mask R-CNN on LabPics Medical vessels
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/segcourse/segmentation-finetuning-course/blob/main/notebooks/04_finetune_maskrcnn_labpics.ipynb)
#
# Mask R-CNN (He et al. 2017) finds objects in two stages. A ResNet-50 backbone (five
# *stages* of convolutions, each halving the resolution) with a **FPN** (Feature Pyramid
# Network, Lin et al. 2017: maps at strides 4 to 32, plus 64 for the RPN alone, joined by
# top-down connections, so that small and large objects each get a map of the right
# scale) feeds a **RPN** (Region Proposal Network, from Faster R-CNN): it scores fixed
# *anchor* boxes of several sizes and shapes at every map position as object or not, and
# refines the best into *proposals*, candidate boxes. For each proposal (a region of
# interest, **RoI**), a box head on 7 x 7 RoI Align features classifies it and refines
# its box, and a mask head draws a 28 x 28 mask from 14 x 14 RoI Align features (notebook
# 02 takes RoI Align apart). Here it learns one new class, *vessel*, from LabPics Medical:
# flasks, tubes, bottles and syringes in medical labs. **IoU** (intersection over union)
# measures how well two boxes or masks overlap: 1 for identical, 0 for disjoint.
#
# What the blog post this follows (the *seed*) did, checked against its text, and what
# this notebook does instead, with a number where one can be measured:
#
# | the seed | this notebook |
# | --- | --- |
# | converts BGR to RGB (`cv2.cvtColor`) but feeds **0-255** floats | RGB in [0, 1], checked (`check_input_contract`); AP of both measured |
# | replaces only the box predictor; the 91-class COCO mask predictor stays | replaces the box **and** the mask predictor |
# | resizes every image to 600 x 600 | lets the model resize (aspect ratio kept) |
# | loads the whole data set at start-up | reads each sample when it is needed |
# | `pretrained=True` (deprecated) | `weights="DEFAULT"` |
# | keeps the epoch of lowest **training** loss | keeps the epoch of best **validation** mask AP |
# | no quantitative evaluation (its test script shows the masks on one image) | COCO box and mask AP (average precision over IoU thresholds, defined below), before and after |
# | lists "ResNet-101 + FPN" first among Mask R-CNN's innovations | FPN is Lin et al.'s (2017); Mask R-CNN uses it as a backbone (its own contributions: a mask branch with one binary mask per class, decoupled from classification, and RoIAlign) |

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
import copy
import math
import time
from dataclasses import dataclass, field

import cv2
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
from torch.utils.data import Subset
from torchvision import tv_tensors
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from helpers.course.runtime import DATA_EXAMPLE, cache_dir, default_device, describe, is_smoke
from helpers.data.labpics import LabPicsDataset, download_labpics
from helpers.data.splits import hold_out
from helpers.detection.coco_eval import evaluate_detector
from helpers.detection.data import (
    LabPicsDetection,
    ZoomForModel,
    collate,
    ignored_instances,
    train_transforms,
)
from helpers.detection.model import (
    SMOKE_MODEL_KWARGS,
    build_coco_maskrcnn,
    build_maskrcnn,
    check_input_contract,
    map_to_vessel,
)
from helpers.detection.targets import masks_to_boxes_xyxy
from helpers.detection.training import (
    MaskRCNNTrainConfig,
    load_best,
    optimizer_and_schedule,
    train_maskrcnn,
    train_one_epoch,
)
from helpers.schedules import warmup_cosine
from helpers.views import plotting
from helpers.views.widget import detection_compare_widget

SMOKE = is_smoke()
print(describe())

# %% [markdown]
# ## Settings


# %%
@dataclass
class Settings:
    pretrained: bool = not SMOKE  # COCO weights; smoke mode downloads nothing
    model_kwargs: dict = field(
        default_factory=lambda: (
            dict(SMOKE_MODEL_KWARGS) if SMOKE else dict(min_size=640, max_size=1024)
        )
    )
    trainable_backbone_layers: int = 3  # of the ResNet's 5 stages, counted from the top
    train_images: int | None = 4 if SMOKE else None  # None: all
    # SGD, lr 0.005, momentum 0.9, weight decay 1e-4, batch 2, warm-up then cosine
    # full mode: MaskRCNNTrainConfig's defaults, as `python -m helpers.detection.train`'s
    train: MaskRCNNTrainConfig = field(
        default_factory=lambda: MaskRCNNTrainConfig(**(dict(epochs=2) if SMOKE else {}))
    )
    run_dir: str = str(cache_dir() / "runs" / ("maskrcnn_smoke" if SMOKE else "maskrcnn_labpics"))


S = Settings()
DEVICE = default_device()
print(S)

# %% [markdown]
# ## The model, drawn
#
# Every box below is a module of torchvision's `maskrcnn_resnet50_fpn`; the two heads on
# the right are what fine-tuning to a new class replaces (mistake 2, below).

# %%
fig, ax = plt.subplots(figsize=(12, 3.6))
ax.set(xlim=(0, 12.2), ylim=(0, 3.6))
ax.axis("off")
blocks = {
    "image": (0.1, 1.4, 1.2, 0.8, "image, RGB\nin [0, 1]", "0.9"),
    "resize": (1.6, 1.4, 1.4, 0.8, "own resize +\nnormalise", "0.9"),
    "backbone": (3.3, 1.4, 1.5, 0.8, "ResNet-50\n(5 stages)", "#9ecae1"),
    "fpn": (5.1, 1.4, 1.3, 0.8, "FPN\nP2-P6", "#9ecae1"),
    "rpn": (6.7, 2.5, 1.5, 0.8, "RPN: anchors\n-> proposals", "#fdd0a2"),
    "roi": (6.7, 0.3, 1.5, 0.8, "MultiScaleRoIAlign\n(notebook 02)", "#fdd0a2"),
    "box": (8.6, 1.9, 1.7, 0.9, "box head: 7 x 7\n-> class, box deltas", "#c7e9c0"),
    "mask": (8.6, 0.3, 1.7, 0.9, "mask head: 14 x 14\n-> 28 x 28 per class", "#c7e9c0"),
    "out": (10.7, 1.1, 1.4, 0.9, "boxes, scores,\nmasks pasted\ninto the image", "0.9"),
}
for x, y, w, h, label, colour in blocks.values():
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour, ec="0.3"))
    ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=8)
for a, b in [
    ("image", "resize"),
    ("resize", "backbone"),
    ("backbone", "fpn"),
    ("fpn", "rpn"),
    ("fpn", "roi"),
    ("rpn", "roi"),
    ("roi", "box"),
    ("roi", "mask"),
    ("box", "out"),
    ("mask", "out"),
]:
    xa, ya, wa, ha = blocks[a][:4]
    xb, yb, wb, hb = blocks[b][:4]
    ax.add_patch(
        FancyArrowPatch(
            (xa + wa, ya + ha / 2) if xb >= xa + wa else (xa + wa / 2, ya),
            (xb, yb + hb / 2) if xb >= xa + wa else (xb + wb / 2, yb + hb),
            arrowstyle="->",
            mutation_scale=12,
            color="0.3",
        )
    )
plt.show()

# %% [markdown]
# ## Data: lazy, with transforms v2
#
# Smoke mode reads `data_example`; full mode downloads LabPics Medical from Zenodo once
# (~281 MB; the MD5 of the download is printed: compare it with the one Zenodo lists on
# the record's page, and pin it). Every tenth Train sample is held out to choose the best epoch; Test is for the
# before/after numbers.
#
# `LabPicsDetection` reads a sample only when the loader asks for it. Its training
# transforms (mild scale jitter, flip, colour jitter) are torchvision's v2 transforms on
# `tv_tensors`: tensors tagged with what they are (`Image`, `BoundingBoxes` with their
# format and canvas size, `Mask`), so that one transform moves the image, its boxes and
# its masks together. The first, `ZoomForModel`, does the scale jitter and the model's
# own resize (shorter side to `min_size`, longer at most `max_size`) in one step, so the
# rest runs at the model's working size rather than at the photo's (computed below for a
# LabPics-sized photo; `benchmarks/maskrcnn_data.py` times it). Boxes are then recomputed
# from the transformed masks. The loader runs one worker process per CPU, at most 4 (as
# torchvision's detection references do); `SeededShuffle` hands every sample its own
# augmentation seed, so the batches are the same with any number of workers and
# after a resume. `Ignore.png` marks regions the annotators left undecided:
# an instance more than half inside one is left out of training, counts as a COCO
# *crowd* region in evaluation (neither to be found nor a false positive, see below), and
# detections more than half inside one are not scored.

# %%
if SMOKE:
    root = DATA_EXAMPLE / "LabPicsMedical"
else:
    root = download_labpics()
train_all = LabPicsDataset(root, "Train")
test_reader = LabPicsDataset(root, "Test")
train_reader, val_reader = hold_out(train_all)  # every tenth sample: validation
if S.train_images is not None:
    train_reader = Subset(train_reader, range(min(S.train_images, len(train_reader))))
print(
    f"train {len(train_reader)}, val {len(val_reader)}, test {len(test_reader)} samples; skipped without Vessels/: {len(train_all.skipped) + len(test_reader.skipped)}"
)
train_ds = LabPicsDetection(
    train_reader, train_transforms(S.model_kwargs["min_size"], S.model_kwargs["max_size"])
)
image, target = train_ds[0]
check_input_contract([image])
print(
    "image",
    tuple(image.shape),
    image.dtype,
    f"[{image.min():.2f}, {image.max():.2f}]",
    "| target:",
    {k: tuple(v.shape) if torch.is_tensor(v) else v for k, v in target.items()},
)
h_real, w_real = 1080, 1920  # a LabPics photo's size
zoomed = ZoomForModel(S.model_kwargs["min_size"], S.model_kwargs["max_size"], scale=(1, 1))(
    tv_tensors.Image(torch.zeros(3, h_real, w_real))
)
print(
    f"a {w_real} x {h_real} photo is jittered at {zoomed.shape[2]} x {zoomed.shape[1]}: {h_real * w_real / zoomed.shape[1] / zoomed.shape[2]:.1f}x fewer pixels"
)

# %% [markdown]
# The data set, written out as torchvision's own fine-tuning tutorial writes its
# `PennFudanDataset`: read one sample, wrap it in `tv_tensors` (the image, the masks, the
# boxes with their format and canvas size), run the transforms on image and target
# together, then drop the instances the crop removed and compute the boxes again from the
# masks that are left (a box clamped to the canvas would no longer be tight). Checked
# equal to the package's `LabPicsDetection` on the same sample and augmentation seed:


# %%
class VesselsByHand(torch.utils.data.Dataset):
    def __init__(self, reader, transforms):
        self.reader, self.transforms = reader, transforms

    def __len__(self):
        return len(self.reader)

    def __getitem__(self, index):
        s = self.reader[index]
        keep = ~ignored_instances(s["masks"], s["ignore"])  # mostly inside Ignore.png: out
        masks = torch.from_numpy(s["masks"][keep])
        h, w = masks.shape[-2:]
        image = tv_tensors.Image(torch.from_numpy(s["image"]).permute(2, 0, 1))  # 3 x H x W uint8
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                masks_to_boxes_xyxy(masks), format="XYXY", canvas_size=(h, w)
            ),
            "masks": tv_tensors.Mask(masks.to(torch.uint8)),
            "labels": torch.ones(len(masks), dtype=torch.int64),  # 1: vessel
        }
        image, target = self.transforms(image, target)  # flips and zooms move all of them
        kept = target["masks"].flatten(1).amax(1) > 0  # instances the crop left
        masks = target["masks"][kept]
        return image, {
            "boxes": masks_to_boxes_xyxy(masks),
            "labels": target["labels"][kept],
            "masks": masks,
        }


transforms = train_transforms(S.model_kwargs["min_size"], S.model_kwargs["max_size"])
with torch.random.fork_rng():
    torch.manual_seed(123)  # the sample's augmentation seed
    image_hand, target_hand = VesselsByHand(train_reader, transforms)[0]
image_pkg, target_pkg = train_ds[(0, 123)]  # (index, seed), as SeededShuffle hands them out
assert torch.equal(image_hand, image_pkg)
for key in ("boxes", "labels", "masks"):
    assert torch.equal(torch.as_tensor(target_hand[key]), torch.as_tensor(target_pkg[key])), key
fig, ax = plt.subplots(figsize=(5, 4))
ax.imshow(image_pkg.permute(1, 2, 0).numpy())
ax.imshow(np.ma.masked_equal(target_pkg["masks"].any(0).numpy(), 0), alpha=0.35, cmap="autumn")
plotting.draw_boxes(ax, target_pkg["boxes"])
ax.set_title(
    f"one training sample after the transforms: {len(target_pkg['boxes'])} vessels, boxes from the masks",
    fontsize=9,
)
ax.axis("off")
plt.show()
print("by hand and LabPicsDetection: the same image, boxes, labels and masks")

# %% [markdown]
# ## Measuring: COCO AP
#
# Detections are scored the way COCO scores them (pycocotools): a detection matches a
# ground-truth vessel when their IoU reaches a threshold; **AP** (average precision) is
# the area under the precision-recall curve of the detections ranked by score, averaged
# over IoU thresholds 0.50, 0.55, ..., 0.95. **AP50** and **AP75** are the same at the
# single threshold 0.50 (a loose match) and 0.75 (a tight one). Box AP matches boxes,
# mask AP matches masks. A ground-truth region marked **iscrowd** (here: instances mostly
# inside LabPics' `Ignore.png`) is neither a hit to find nor a false positive to punish:
# detections on it are ignored.
#
# ## Mistake 1: 0-255 floats
#
# torchvision's detection models expect RGB in [0, 1] and normalise it themselves with
# ImageNet's mean and std. The seed reads with OpenCV and converts BGR to RGB correctly
# (`cv2.cvtColor(img, cv2.COLOR_BGR2RGB)`), but keeps the values in 0-255: after the
# model's normalisation the network sees inputs about 255 times too large. First the
# seed's loading itself, with OpenCV as the seed calls it:

# %%
ours = test_reader[0]["image"]  # the course's reader: Pillow, RGB, uint8
bgr = cv2.imread(str(test_reader.image_path(0)), cv2.IMREAD_COLOR)  # OpenCV: BGR order
rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # the seed's conversion: right
seed_input = torch.as_tensor(rgb, dtype=torch.float32).permute(2, 0, 1)  # the seed's tensor
print(
    f"cv2.imread equals our image with its channels reversed: {np.array_equal(bgr[..., ::-1], ours)}"
)
print(f"after cv2.cvtColor(BGR2RGB) it equals our RGB image: {np.array_equal(rgb, ours)}")
print(
    f"the seed's input: {seed_input.dtype}, values in [{seed_input.min():.0f}, {seed_input.max():.0f}]; the contract: [0, 1]"
)

# %% [markdown]
# Measured with the COCO model (its vessel-like classes counted as vessel) on the Test
# split, once with the contract and once the seed's way:

# %%
coco_model = build_coco_maskrcnn(pretrained=S.pretrained, **S.model_kwargs).to(DEVICE)
EVALUATIONS = cache_dir() / "evaluations"  # a rerun reads finished evaluations back
ap_right = evaluate_detector(
    coco_model, test_reader, DEVICE, postprocess=map_to_vessel, cache=EVALUATIONS
)
ap_0_255 = evaluate_detector(
    coco_model,
    test_reader,
    DEVICE,
    postprocess=map_to_vessel,
    transform=lambda im: torch.from_numpy(im).permute(2, 0, 1).float(),  # RGB, 0-255
    cache=EVALUATIONS,
)
caveat = " (smoke: a randomly initialised COCO model, meaningless)" if SMOKE else ""
print(
    f"COCO model, mask AP: RGB in [0, 1] {ap_right['segm']['AP']:.3f} | RGB in 0-255 {ap_0_255['segm']['AP']:.3f}{caveat}"
)
print(
    f"COCO model, box AP:  RGB in [0, 1] {ap_right['bbox']['AP']:.3f} | RGB in 0-255 {ap_0_255['bbox']['AP']:.3f}{caveat}"
)
x = torch.from_numpy(test_reader[0]["image"]).permute(2, 0, 1).float()
for name, image in (("[0, 1]", x / 255), ("0-255", x)):
    normalised = coco_model.transform.normalize(image.to(DEVICE))
    print(
        f"input {name:6s}: after the model's normalisation, values in [{normalised.min():.1f}, {normalised.max():.1f}]"
    )
try:
    check_input_contract([torch.from_numpy(test_reader[0]["image"]).permute(2, 0, 1).float()])
except ValueError as err:
    print("check_input_contract catches it:", err)

# %% [markdown]
# ## Mistake 2: only the box predictor replaced
#
# The box predictor scores classes and refines boxes; the mask predictor draws one mask
# per class. Replacing only the first still trains: the mask loss reads only the channel
# of each RoI's ground-truth class, and inference reads the channel of the predicted
# class, so the vessel mask (label 1) is learned in COCO's channel 1, *person*, starting
# from weights that drew people. What goes wrong: the other 90 channels are computed for
# every RoI and never used, and the saved model is not a 2-class Mask R-CNN: its weights
# do not load into one (computed below). Both predictors are replaced here, each by a
# new layer of the same input size with 2 classes (background and vessel):

# %%
torch.manual_seed(0)  # the new predictors start from random weights: the same ones below
by_hand = build_coco_maskrcnn(pretrained=S.pretrained, **S.model_kwargs)  # COCO: 91 classes
heads = by_hand.roi_heads
in_features = heads.box_predictor.cls_score.in_features  # the box head's 1024 features
heads.box_predictor = FastRCNNPredictor(in_features, 2)  # 2 class scores, 2 x 4 box deltas
mask_channels = heads.mask_predictor.conv5_mask.in_channels  # the mask head's 256 channels
heads.mask_predictor = MaskRCNNPredictor(mask_channels, 256, 2)  # one 28 x 28 mask per class

torch.manual_seed(0)
model = build_maskrcnn(
    num_classes=2,
    pretrained=S.pretrained,
    trainable_backbone_layers=S.trainable_backbone_layers,
    **S.model_kwargs,
)
ours, theirs = by_hand.state_dict(), model.state_dict()
assert ours.keys() == theirs.keys()
for key in theirs:  # the same layers, shapes and starting weights as the package's
    torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)
print(
    f"by hand and build_maskrcnn: the same {len(theirs)} tensors; the replaced ones: "
    + ", ".join(sorted({k.rsplit(".", 2)[0] for k in theirs if "predictor" in k}))
)
del by_hand
print(
    "COCO model: box classes",
    coco_model.roi_heads.box_predictor.cls_score.out_features,
    "| mask channels",
    coco_model.roi_heads.mask_predictor.mask_fcn_logits.out_channels,
)
print(
    "our model:  box classes",
    model.roi_heads.box_predictor.cls_score.out_features,
    "| mask channels",
    model.roi_heads.mask_predictor.mask_fcn_logits.out_channels,
)
assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 2

seed_style = build_coco_maskrcnn(pretrained=False, **S.model_kwargs)  # the seed: box predictor only
in_features = seed_style.roi_heads.box_predictor.cls_score.in_features
seed_style.roi_heads.box_predictor = FastRCNNPredictor(in_features, 2)
try:
    build_maskrcnn(num_classes=2, pretrained=False, **S.model_kwargs).load_state_dict(
        seed_style.state_dict()
    )
except RuntimeError as err:
    print("the seed's weights in a 2-class Mask R-CNN:", str(err).splitlines()[1].strip())

# %% [markdown]
# ## Mistake 3: resizing to 600 x 600
#
# The model resizes each image itself so that its shorter side is `min_size` (and its
# longer at most `max_size`), keeping the aspect ratio, and maps boxes and masks back to
# the original size. A fixed 600 x 600 squashes a 4:3 photo and every object in it:

# %%
h, w = test_reader[0]["image"].shape[:2]
resized, _ = model.transform([torch.zeros(3, h, w)])
print(
    f"a {w} x {h} photo (aspect {w / h:.2f}) -> the model's own resize: {resized.image_sizes[0][1]} x {resized.image_sizes[0][0]} "
    f"(aspect {resized.image_sizes[0][1] / resized.image_sizes[0][0]:.2f}); 600 x 600 would make it 1.00"
)
seed_model_resize = GeneralizedRCNNTransform(800, 1333, [0.0] * 3, [1.0] * 3)  # the default
again, _ = seed_model_resize([torch.zeros(3, 600, 600)])
print(
    f"and the seed's 600 x 600 input goes through the default model's own resize again: {again.image_sizes[0][1]} x {again.image_sizes[0][0]} (min_size 800)"
)

# %% [markdown]
# ## Mistakes 4 and 5: eager loading, `pretrained=True`
#
# The data set above reads from disk per sample (`benchmarks/maskrcnn_data.py` measures
# peak memory against an eager load-everything data set: see the README). The weights
# are asked for with `weights="DEFAULT"` (`MaskRCNN_ResNet50_FPN_Weights.DEFAULT`);
# `build_maskrcnn` first fetches the file into the course's cache, `<cache>/torch/hub`
# (`helpers.detection.model.ensure_coco_weights`: length and SHA-256 checked; on Google
# Drive in Colab, so a new runtime does not download it again), and points torchvision's
# loader there while it builds the model.
#
# ## Training
#
# The seed trains every parameter with AdamW at lr 1e-5 on batches of 16 images. The
# course follows torchvision's own recipe for these weights instead: SGD with momentum
# 0.9 at lr 0.005 on batches of 2, as torchvision's object-detection fine-tuning tutorial
# does (weight decay 1e-4, as its detection references); that is how the COCO weights were
# trained and how they are usually fine-tuned, and two full-size images fit one GPU
# where sixteen may not (expected, not measured here). Then, as in the references,
# linear warm-up then cosine decay per iteration, gradient clipping, a stop on a non-finite loss, and on a GPU **AMP**
# (automatic mixed precision: matrix work in fp16 where it is safe, with a gradient
# scaler so that small gradients do not round to zero). `last.pt` (model, optimizer,
# scheduler, scaler, epoch, settings) is written after every epoch, so a rerun resumes;
# `best.pt` keeps the epoch with the best validation mask AP (the seed kept the epoch of
# lowest training loss).
#
# In training mode the model returns five losses, summed for the step:
#
# - `loss_objectness`: the RPN's object-or-not score of a sample of anchors, half of them
#   at most *positive* (overlapping an object enough), the rest background; binary
#   cross-entropy (**BCE**);
# - `loss_rpn_box_reg`: the RPN's box refinement of the positive anchors; **smooth L1**
#   (squared error for small errors, absolute error for large ones);
# - `loss_classifier`: the box head's class of a sample of proposals (cross-entropy over
#   background and vessel);
# - `loss_box_reg`: the box head's refinement of each positive proposal (smooth L1);
# - `loss_mask`: the mask head's 28 x 28 mask of each positive proposal against its
#   object's mask cropped to the proposal (per-pixel BCE, ground-truth class channel only).

# %% [markdown]
# ### One iteration, written out
#
# What `train_one_epoch` does with each batch: the model in training mode takes the
# images *and* their targets and returns the five losses; their sum is back-propagated
# (through the AMP gradient scaler on a GPU, which multiplies the loss so that fp16
# gradients do not round to zero, and divides them again before clipping); the gradient's
# norm is clipped; the optimizer steps; and the learning-rate schedule steps once per
# iteration (warm-up, then cosine). Written out on one batch, then checked against the
# package's `train_one_epoch` on a copy of the same model with the same batch:

# %%
cfg = S.train
steps_total = cfg.epochs * math.ceil(len(train_ds) / cfg.batch_size)


def schedule(step):  # the multiplier of lr: linear warm-up, then cosine decay
    return warmup_cosine(step, steps_total, cfg.warmup_frac, cfg.min_lr_frac)


use_amp = cfg.amp and torch.device(DEVICE).type == "cuda"
images, targets = collate([train_ds[0], train_ds[1 % len(train_ds)]])  # one batch of 2
images = [im.to(DEVICE) for im in images]
targets = [{k: v.to(DEVICE) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]

net = copy.deepcopy(model).to(DEVICE).train()
params = [p for p in net.parameters() if p.requires_grad]  # not the frozen backbone stages
optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)  # stepped per iteration
scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
torch.manual_seed(1)  # the RPN and the heads sample anchors and proposals at random
with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
    losses = net(images, targets)  # training mode: five losses, not detections
    loss = sum(losses.values())
optimizer.zero_grad(set_to_none=True)
scaler.scale(loss).backward()
scaler.unscale_(optimizer)  # true gradients again, for clipping
torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
scaler.step(optimizer)  # skipped if an fp16 gradient overflowed
scaler.update()
scheduler.step()  # per iteration

reference = copy.deepcopy(model).to(DEVICE)  # the package's way: its own optimizer and schedule
optimizer_ref, scheduler_ref = optimizer_and_schedule(reference, cfg, steps_total)
torch.manual_seed(1)
means = train_one_epoch(
    reference,
    optimizer_ref,
    scheduler_ref,
    [(images, targets)],
    DEVICE,
    1,
    torch.amp.GradScaler("cuda", enabled=use_amp),
    cfg,
    show_progress=False,
)
on_gpu = dict(rtol=1e-3, atol=1e-5) if torch.device(DEVICE).type == "cuda" else {}  # kernels
for key, value in losses.items():
    torch.testing.assert_close(float(value.detach()), means[key], **on_gpu)
assert scheduler.last_epoch == scheduler_ref.last_epoch == 1  # stepped once, per iteration
ref_schedule = scheduler_ref.lr_lambdas[0]
assert all(schedule(s) == ref_schedule(s) for s in range(steps_total))  # the same warm-up, decay
after_ref = dict(reference.named_parameters())
for name, p in net.named_parameters():
    torch.testing.assert_close(p, after_ref[name], **on_gpu)
print("the five losses:", ", ".join(f"{k} {float(v.detach()):.3f}" for k, v in losses.items()))
print(
    f"sum {float(loss):.3f}; after one step all {len(after_ref)} parameters equal "
    f"train_one_epoch's; lr now {scheduler.get_last_lr()[0]:.2e}"
)
del net, reference

# %%
t0 = time.perf_counter()
history = train_maskrcnn(model, train_ds, val_reader, S.train, S.run_dir, device=DEVICE)
print(
    f"this call took {time.perf_counter() - t0:.0f} s; the run's history, {len(history)} epochs"
    + (" (smoke)" if SMOKE else "")
    + ":"
)
for r in history:
    print(
        f"epoch {r['epoch']:2d}  loss {r['loss']:.3f} (mask {r['loss_mask']:.3f})  val mask AP {r['val_segm_ap']:.3f}  {r['seconds']:.0f} s"
        + (" (smoke)" if SMOKE else "")
    )
fig, ax = plt.subplots(figsize=(6, 3.4))
epochs = [r["epoch"] for r in history]
for key in (
    "loss",
    "loss_objectness",
    "loss_rpn_box_reg",
    "loss_classifier",
    "loss_box_reg",
    "loss_mask",
):
    ax.plot(epochs, [r[key] for r in history], "o-", label=key)
ax.set(
    xlabel="epoch",
    ylabel="mean training loss",
    xticks=epochs,
    title="Mask R-CNN's losses" + (" (smoke run)" if SMOKE else ""),
)
ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
plt.show()
fell = len(history) == 1 or history[-1]["loss"] < history[0]["loss"]
if SMOKE:  # a test of the code; in full mode a verdict, never a stop after hours of work
    assert fell, history
else:
    print(
        "verdict: the training loss "
        + ("fell" if fell else "did NOT fall: check the settings and the curves above")
    )

# %% [markdown]
# ## Before and after: COCO AP on the Test split
#
# "Before" is the COCO model with bottle, wine glass, cup, bowl and vase counted as
# vessel; "after" is the fine-tuned model at its best validation epoch.

# %%
best = load_best(model, S.run_dir)
ap_after = evaluate_detector(model, test_reader, DEVICE, cache=EVALUATIONS)
print(
    f"best epoch {best['epoch']} (val mask AP {best['val_segm_ap']:.3f})"
    + (" (smoke)" if SMOKE else "")
    + "\n"
)
print(f"{'':10s}{'box AP':>8s}{'AP50':>8s}{'AP75':>8s}{'mask AP':>9s}{'AP50':>8s}{'AP75':>8s}")
for name, ap in (("before", ap_right), ("after", ap_after)):
    b, m = ap["bbox"], ap["segm"]
    print(
        f"{name:10s}{b['AP']:8.3f}{b['AP50']:8.3f}{b['AP75']:8.3f}{m['AP']:9.3f}{m['AP50']:8.3f}{m['AP75']:8.3f}"
    )
if SMOKE:
    print(
        "\nSMOKE MODE: untrained models, synthetic data, seconds of training: these numbers mean nothing."
    )

# %% [markdown]
# ## Predictions, before and after
#
# Ground truth (white: `Ignore.png`), then each model's detections with a score of at
# least 0.5: mask, box and score.

# %%
n_show = min(3, len(test_reader))
h, w = test_reader[0]["image"].shape[:2]
fig, axes = plt.subplots(  # rows as high as the photos need: no empty band
    n_show, 3, figsize=(12, 12 / 3 * h / w * n_show + 0.8), squeeze=False, layout="constrained"
)
model.eval()
coco_model.eval()
for row in range(n_show):
    s = test_reader[row]
    x = torch.from_numpy(s["image"]).permute(2, 0, 1).float().div(255).to(DEVICE)
    with torch.no_grad():
        before = map_to_vessel({k: v.cpu() for k, v in coco_model([x])[0].items()})
        after = {k: v.cpu() for k, v in model([x])[0].items()}
    plotting.show_sample(axes[row, 0], s, title=f"{s['image_id']}: ground truth", labels=False)
    for col, (name, pred) in enumerate((("before", before), ("after", after)), start=1):
        n = int((pred["scores"] >= 0.5).sum())
        axes[row, col].imshow(plotting.draw_detections_rgb(s["image"], pred, 0.5))
        axes[row, col].set_title(f"{name}: {n} vessels (score >= 0.5)", fontsize=9)
        axes[row, col].axis("off")
fig.legend(
    handles=[Patch(facecolor="white", edgecolor="grey", label="Ignore.png: not scored")],
    loc="lower center",
    fontsize=8,
    frameon=False,
)
if SMOKE:
    fig.suptitle(
        "smoke mode: untrained models on synthetic data; the detections mean nothing", fontsize=10
    )
plt.show()

# %% [markdown]
# ## Your turn: compare interactively
#
# Pick an image, move the score threshold, click on a detection to see its class and
# score in each model.

# %%
widget, controller = detection_compare_widget(
    {"before": (coco_model, map_to_vessel), "after": (model, None)}, test_reader, device=DEVICE
)
widget
