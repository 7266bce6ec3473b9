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
# Mask R-CNN finds objects (a region proposal network, then a box head on 7 x 7 RoI
# Align features) and draws a 28 x 28 mask for each from 14 x 14 RoI Align features
# (notebook 02 takes RoI Align apart). Here it learns one new class, *vessel*, from
# LabPics Medical: flasks, tubes, bottles and syringes in medical labs.
#
# The blog post this follows made six mistakes; each gets its fix below, with a number
# where one can be measured:
#
# | the seed did | this notebook does |
# | --- | --- |
# | fed 0-255 BGR floats | RGB in [0, 1], checked (`check_input_contract`) |
# | replaced only the box predictor | replaces the box **and** the mask predictor |
# | resized every image to 600 x 600 | lets the model resize (aspect ratio kept) |
# | loaded the whole data set at start-up | reads each sample when it is needed |
# | `pretrained=True` (deprecated) | `weights="DEFAULT"` |
# | no evaluation | COCO box and mask AP, before and after |

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

    output.enable_custom_widget_manager()  # the comparison widget is a custom (anywidget) one

# %%
import time
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import torch

import helpers
from helpers import plotting
from helpers.coco_eval import evaluate_detector
from helpers.detection_data import LabPicsDetection, train_transforms
from helpers.maskrcnn import SMOKE_MODEL_KWARGS, build_coco_maskrcnn, build_maskrcnn, check_input_contract, map_to_vessel
from helpers.maskrcnn_training import DetTrainConfig, load_best, train_maskrcnn

SMOKE = helpers.is_smoke()
print(helpers.describe())

# %% [markdown]
# ## Settings

# %%
@dataclass
class Settings:
    pretrained: bool = not SMOKE  # COCO weights; smoke mode downloads nothing
    model_kwargs: dict = field(default_factory=lambda: dict(SMOKE_MODEL_KWARGS) if SMOKE else dict(min_size=640, max_size=1024))
    trainable_backbone_layers: int = 3
    train_images: int | None = 4 if SMOKE else None  # None: all
    epochs: int = 2 if SMOKE else 10
    batch_size: int = 2
    lr: float = 0.005
    run_dir: str = str(helpers.cache_dir() / "runs" / ("maskrcnn_smoke" if SMOKE else "maskrcnn_labpics"))


S = Settings()
DEVICE = helpers.default_device()
print(S)

# %% [markdown]
# ## Data: lazy, with transforms v2
#
# Smoke mode reads `data_example`; full mode downloads LabPics Medical from Zenodo once
# (~281 MB; no checksum is published, so the MD5 of the download is printed for you to
# pin). Every tenth Train sample is held out to choose the best epoch; Test is for the
# before/after numbers.
#
# `LabPicsDetection` reads a sample only when the loader asks for it. Its training
# transforms (flip, mild scale and colour jitter) run on `tv_tensors`, so boxes and
# masks move with the image. `Ignore.png` marks regions the annotators left undecided:
# an instance more than half inside one is left out of training, counts as a COCO crowd
# region in evaluation, and detections more than half inside one are not scored.

# %%
from torch.utils.data import Subset  # noqa: E402  (a lazy view of some samples of a reader)

if SMOKE:
    root = helpers.DATA_EXAMPLE / "LabPicsMedical"
else:
    from helpers.labpics import download_labpics

    root = download_labpics()
train_all = helpers.LabPicsDataset(root, "Train")
test_reader = helpers.LabPicsDataset(root, "Test")
val_reader = Subset(train_all, range(0, len(train_all), 10))
train_reader = Subset(train_all, [i for i in range(len(train_all)) if i % 10][: S.train_images])
print(f"train {len(train_reader)}, val {len(val_reader)}, test {len(test_reader)} samples; skipped without Vessels/: {len(train_all.skipped) + len(test_reader.skipped)}")
train_ds = LabPicsDetection(train_reader, train_transforms())
image, target = train_ds[0]
check_input_contract([image])
print("image", tuple(image.shape), image.dtype, f"[{image.min():.2f}, {image.max():.2f}]", "| target:", {k: tuple(v.shape) if torch.is_tensor(v) else v for k, v in target.items()})

# %% [markdown]
# ## Mistake 1: 0-255 BGR floats
#
# torchvision's detection models normalise with ImageNet's mean and std **after**
# expecting RGB in [0, 1]. Feeding `cv2.imread(...)` floats (BGR, 0-255) gives the
# network inputs about 255 times too large with red and blue swapped. Measured with the
# COCO model (its vessel-like classes counted as vessel) on the Test split:

# %%
coco_model = build_coco_maskrcnn(pretrained=S.pretrained, **S.model_kwargs).to(DEVICE)
ap_right = evaluate_detector(coco_model, test_reader, DEVICE, postprocess=map_to_vessel)
ap_wrong = evaluate_detector(coco_model, test_reader, DEVICE, postprocess=map_to_vessel,
                             transform=lambda im: torch.from_numpy(im[:, :, ::-1].copy()).permute(2, 0, 1).float())  # fmt: skip
print(f"COCO model, mask AP: RGB in [0, 1] {ap_right['segm']['AP']:.3f} | BGR 0-255 {ap_wrong['segm']['AP']:.3f}")
print(f"COCO model, box AP:  RGB in [0, 1] {ap_right['bbox']['AP']:.3f} | BGR 0-255 {ap_wrong['bbox']['AP']:.3f}")
try:
    check_input_contract([torch.from_numpy(test_reader[0]["image"]).permute(2, 0, 1).float()])
except ValueError as err:
    print("check_input_contract catches it:", err)

# %% [markdown]
# ## Mistake 2: only the box predictor replaced
#
# The box predictor scores classes and refines boxes; the mask predictor draws one mask
# per class. Replacing only the first leaves a mask head that still draws 91 COCO masks,
# and the vessel mask is read from COCO's channel 1, *person*. Both are replaced:

# %%
model = build_maskrcnn(num_classes=2, pretrained=S.pretrained, trainable_backbone_layers=S.trainable_backbone_layers, **S.model_kwargs)
print("COCO model: box classes", coco_model.roi_heads.box_predictor.cls_score.out_features,
      "| mask channels", coco_model.roi_heads.mask_predictor.mask_fcn_logits.out_channels)  # fmt: skip
print("our model:  box classes", model.roi_heads.box_predictor.cls_score.out_features,
      "| mask channels", model.roi_heads.mask_predictor.mask_fcn_logits.out_channels)  # fmt: skip
assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 2

# %% [markdown]
# ## Mistake 3: resizing to 600 x 600
#
# The model resizes each image itself so that its shorter side is `min_size` (and its
# longer at most `max_size`), keeping the aspect ratio, and maps boxes and masks back to
# the original size. A fixed 600 x 600 squashes a 4:3 photo and every object in it:

# %%
h, w = test_reader[0]["image"].shape[:2]
resized, _ = model.transform([torch.zeros(3, h, w)])
print(f"a {w} x {h} photo (aspect {w / h:.2f}) -> the model's own resize: {resized.image_sizes[0][1]} x {resized.image_sizes[0][0]} "
      f"(aspect {resized.image_sizes[0][1] / resized.image_sizes[0][0]:.2f}); 600 x 600 would make it 1.00")  # fmt: skip

# %% [markdown]
# ## Mistakes 4 and 5: eager loading, `pretrained=True`
#
# The data set above reads from disk per sample (`benchmarks/maskrcnn_data.py` measures
# peak memory against an eager load-everything data set: see the README). The weights
# are asked for with `weights="DEFAULT"` (`MaskRCNN_ResNet50_FPN_Weights.DEFAULT`), which
# torchvision downloads and hash-checks.
#
# ## Training
#
# SGD with momentum as in torchvision's references, linear warm-up then cosine decay per
# iteration, gradient clipping, mixed precision on a GPU, a stop on a non-finite loss.
# `last.pt` (model, optimizer, scheduler, scaler, epoch, settings) is written after every
# epoch, so a rerun resumes; `best.pt` keeps the epoch with the best validation mask AP.

# %%
cfg = DetTrainConfig(epochs=S.epochs, batch_size=S.batch_size, lr=S.lr)
t0 = time.perf_counter()
history = train_maskrcnn(model, train_ds, val_reader, cfg, S.run_dir, device=DEVICE)
print(f"{len(history)} epochs in {time.perf_counter() - t0:.0f} s")
for r in history:
    print(f"epoch {r['epoch']:2d}  loss {r['loss']:.3f} (mask {r['loss_mask']:.3f})  val mask AP {r['val_segm_ap']:.3f}  {r['seconds']:.0f} s")
fig, ax = plt.subplots(figsize=(5, 3))
for key in ("loss", "loss_mask", "loss_classifier", "loss_box_reg"):
    ax.plot([r["epoch"] for r in history], [r[key] for r in history], "o-", label=key)
ax.set_xlabel("epoch")
ax.legend(fontsize=8)
plt.show()
assert history[-1]["loss"] < history[0]["loss"] or len(history) == 1

# %% [markdown]
# ## Before and after: COCO AP on the Test split
#
# "Before" is the COCO model with bottle, wine glass, cup, bowl and vase counted as
# vessel; "after" is the fine-tuned model at its best validation epoch.

# %%
best = load_best(model, S.run_dir)
ap_after = evaluate_detector(model, test_reader, DEVICE)
print(f"best epoch {best['epoch']} (val mask AP {best['val_segm_ap']:.3f})\n")
print(f"{'':10s}{'box AP':>8s}{'AP50':>8s}{'AP75':>8s}{'mask AP':>9s}{'AP50':>8s}{'AP75':>8s}")
for name, ap in (("before", ap_right), ("after", ap_after)):
    b, m = ap["bbox"], ap["segm"]
    print(f"{name:10s}{b['AP']:8.3f}{b['AP50']:8.3f}{b['AP75']:8.3f}{m['AP']:9.3f}{m['AP50']:8.3f}{m['AP75']:8.3f}")
if SMOKE:
    print("\nSMOKE MODE: untrained models, synthetic data, seconds of training: these numbers mean nothing.")

# %% [markdown]
# ## Predictions, before and after

# %%
n_show = min(3, len(test_reader))
fig, axes = plt.subplots(n_show, 3, figsize=(12, 3.3 * n_show), squeeze=False)
model.eval()
coco_model.eval()
for row in range(n_show):
    s = test_reader[row]
    x = torch.from_numpy(s["image"]).permute(2, 0, 1).float().div(255).to(DEVICE)
    with torch.no_grad():
        before = map_to_vessel({k: v.cpu() for k, v in coco_model([x])[0].items()})
        after = {k: v.cpu() for k, v in model([x])[0].items()}
    plotting.show_sample(axes[row, 0], s, title=f"{s['image_id']}: ground truth")
    for col, (name, pred) in enumerate((("before", before), ("after", after)), start=1):
        keep = pred["scores"] > 0.5
        axes[row, col].imshow(plotting.overlay_masks(s["image"], (pred["masks"][keep, 0] > 0.5).numpy()))
        plotting.draw_boxes(axes[row, col], pred["boxes"][keep], [f"{v:.2f}" for v in pred["scores"][keep].tolist()])
        axes[row, col].set_title(f"{name}: {int(keep.sum())} vessels (score > 0.5)", fontsize=9)
        axes[row, col].axis("off")
plt.show()

# %% [markdown]
# ## Your turn: compare interactively
#
# Pick an image, move the score threshold, click on a detection to see its class and
# score in each model.

# %%
from helpers.widget import detection_compare_widget  # noqa: E402

widget, controller = detection_compare_widget({"before": (coco_model, map_to_vessel), "after": (model, None)}, test_reader, device=DEVICE)
widget
