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
# # 05 · Using and shipping the fine-tuned decoder: SamPredictor, automatic masks, ONNX
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/segcourse/segmentation-finetuning-course/blob/main/notebooks/05_using_and_shipping_the_decoder.ipynb)
#
# Notebook 03 left a 16 MB file: the weights of a fine-tuned mask decoder (`best.pt`).
# This notebook answers what comes next, measured:
#
# - **plain segment-anything**: the file loaded into a stock model and `SamPredictor`
#   with two lines of PyTorch, no course code, and proven to give the course's masks;
# - **automatic masks**: `SamAutomaticMaskGenerator` with the original and the fine-tuned
#   decoder, measured against the ground truth (the best IoU of each instance, recall at
#   IoU 0.5 and 0.75, masks and seconds per image), and the knobs that matter;
# - **ONNX**: the prompt encoder + decoder exported, run in `onnxruntime`, shown equal to
#   PyTorch; then int8 quantisation: file size, time per click, and how far its masks
#   move.
#
# In smoke mode the models are smoke mode's small SAM and notebook 03's decoder for it, on
# `data_example`: the figures describe synthetic scenes, not VOC2007.

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
import contextlib
import inspect
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnxruntime.quantization import QuantType, quantize_dynamic
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.utils.onnx import SamOnnxModel
from segment_anything.utils.transforms import ResizeLongestSide
from torch.utils.data import Subset

from helpers.checkpoints import CheckpointError
from helpers.course.runtime import DATA_EXAMPLE, cache_dir, default_device, describe, is_smoke
from helpers.data.splits import hold_out
from helpers.data.voc import VOCInstanceDataset, download_voc2007
from helpers.metrics import mask_iou
from helpers.sam.automatic_masks import automatic_table, measure_automatic_masks
from helpers.sam.clicks import next_click
from helpers.sam.embeddings import EmbeddingCache
from helpers.sam.items import prepare_items
from helpers.sam.model import (
    build_tiny_sam,
    download_checkpoint,
    load_decoder,
    load_sam,
    with_own_decoder,
)
from helpers.sam.onnx_comparison import click_latency, first_click_agreement
from helpers.sam.onnx_decoder import (
    INPUTS,
    OUTPUTS,
    OnnxDecoder,
    export_decoder,
    export_example,
    quantize_int8,
)
from helpers.sam.predict import embed_image, predict
from helpers.sam.training import SamTrainConfig, run_folder, train_decoder
from helpers.views import plotting
from helpers.views.widget import sam_compare_widget

SMOKE = is_smoke()
print(describe())

# %% [markdown]
# ## Settings


# %%
@dataclass
class Settings:
    variant: str = "tiny" if SMOKE else "vit_b"
    # notebook 03's SAM-recipe decoder (the best epoch)
    decoder_file: str = str(run_folder("tiny" if SMOKE else "vit_b", "sam") / "best.pt")
    amg_images: int = 2 if SMOKE else 50  # test images for automatic masks and int8
    points_per_side: int = 4 if SMOKE else 32  # the generator's grid (32: its default)
    pred_iou_thresh: float = 0.0 if SMOKE else 0.88  # the generator's defaults in full mode
    stability_score_thresh: float = 0.0 if SMOKE else 0.95
    clicks: int = 20 if SMOKE else 50  # clicks timed per runtime (median)
    out_dir: str = str(cache_dir() / "runs" / ("export_smoke" if SMOKE else "export_vit_b"))


S = Settings()
DEVICE = default_device()
print(S)

# %% [markdown]
# ## The models and the data
#
# "Before" is SAM as published; "after" shares its encoders and carries notebook 03's
# decoder. Full mode expects notebook 03 to have run (its `best.pt` in the cache); smoke
# mode trains a short stand-in run when notebook 03 has not run in this cache.

# %%
if SMOKE:
    test_ds = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "test")
else:
    test_ds = VOCInstanceDataset(download_voc2007(), "test")
original = load_sam(S.variant, device=DEVICE)
if not Path(S.decoder_file).is_file():
    if not SMOKE:
        raise FileNotFoundError(
            f"{S.decoder_file}: no fine-tuned decoder yet. Run notebook 03 in full mode first "
            "(its SAM recipe writes this file), or switch to smoke mode."
        )
    # one epoch on 4 images: a decoder file of the real layout, not a trained decoder
    print("smoke mode: notebook 03 has not run in this cache; a short stand-in run:")
    cache = EmbeddingCache(cache_dir() / "embeddings", original)
    train_ds, val_ds = hold_out(VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "trainval"))
    train_items, _ = prepare_items(Subset(train_ds, range(4)), cache)
    val_items, _ = prepare_items(val_ds, cache)
    stand_in = SamTrainConfig(epochs=1, click_rounds=1, refine_rounds=0)
    train_decoder(
        with_own_decoder(original), train_items, val_items, stand_in, Path(S.decoder_file).parent
    )
fine_tuned = with_own_decoder(original, S.decoder_file)
print(f"test images: {len(test_ds)}; decoder file: {S.decoder_file}")
print(f"{Path(S.decoder_file).stat().st_size / 1e6:.1f} MB")

# %% [markdown]
# ## 1. The decoder in plain segment-anything
#
# The file holds `{"mask_decoder": state dict, "meta": {...}}`; the keys keep their
# `mask_decoder.` prefix, so `load_state_dict(..., strict=False)` on a whole SAM model
# replaces exactly the decoder. The next cell uses only `torch` and `segment_anything`:
# what an app needs. `SAM_FILE` is the official checkpoint (smoke mode: the tiny model's
# weights, saved to a file first) and `BUILD` the registry's builder.

# %%
if SMOKE:
    SAM_FILE = cache_dir() / "tiny_sam.pth"
    torch.save(original.state_dict(), SAM_FILE)
    BUILD = lambda checkpoint: load_sam("tiny", checkpoint)  # noqa: E731
else:
    from segment_anything import sam_model_registry

    SAM_FILE = download_checkpoint(S.variant)  # sam_vit_b_01ec64.pth in the cache
    BUILD = sam_model_registry[S.variant]
DECODER_FILE = S.decoder_file

# %%
# torch and segment_anything only (SamPredictor imported at the top): nothing of the course
stock = BUILD(checkpoint=str(SAM_FILE))
decoder = torch.load(DECODER_FILE, map_location="cpu", weights_only=True)["mask_decoder"]
result = stock.load_state_dict(decoder, strict=False)
assert not result.unexpected_keys  # every key of the file found its place
assert all(k.startswith(("image_encoder.", "prompt_encoder.")) for k in result.missing_keys)
predictor = SamPredictor(stock.to(DEVICE).eval())

sample = test_ds[0]
predictor.set_image(sample["image"])
x, y, _ = next_click(np.zeros_like(sample["masks"][0]), sample["masks"][0], sample["void"])
masks, scores, low_res = predictor.predict(
    point_coords=np.array([[x, y]]), point_labels=np.array([1]), multimask_output=True
)
print(f"SamPredictor, click at ({x:.0f}, {y:.0f}): scores {np.round(scores, 3)}")

# %% [markdown]
# The same click through the course's own path (`with_own_decoder` + `predict`, which
# checks the file's variant and encoder fingerprint first) gives the same masks:

# %%
with torch.no_grad():
    ours = predict(
        fine_tuned,
        embed_image(fine_tuned, sample["image"]),
        points=np.array([[[x, y]]]),
        labels=np.array([[1]]),
    )
same_masks = np.array_equal(masks, ours["masks"][0].cpu().numpy())
print(
    f"masks equal: {same_masks}; largest score difference "
    f"{np.abs(scores - ours['iou'][0].cpu().numpy()).max():.1e}"
)
assert same_masks
fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
plotting.show_masks(axes, sample["image"], masks, scores, points=[[x, y]], labels=[1], title="mask")
fig.suptitle("SamPredictor with the fine-tuned decoder: the three masks of a first click")
plt.tight_layout()
plt.show()

# %% [markdown]
# A decoder reads the embeddings of the encoder it was trained with. The course's
# loader refuses a file trained with another encoder and says so (plain
# `load_state_dict` cannot tell, since every variant's decoder has the same shapes):

# %%
try:
    load_decoder(build_tiny_sam(seed=1), DECODER_FILE)  # another (random) encoder
    raise AssertionError("a decoder of another encoder was accepted")
except CheckpointError as err:
    print("refused:", err)

# %% [markdown]
# ## 2. Automatic masks, before and after
#
# `SamAutomaticMaskGenerator` prompts the model with a grid of single points
# (`points_per_side`^2 of them, in batches of `points_per_batch`), keeps each point's
# three masks that pass two filters, and removes duplicates by non-maximum suppression
# (`box_nms_thresh`):
#
# - `pred_iou_thresh`: the **IoU head's** score of the mask. Notebook 03's SAM recipe
#   trains that head on the real IoU of every mask it scores, so fine-tuning changes which
#   masks pass this filter; the seed's recipe leaves it untrained.
# - `stability_score_thresh`: the IoU between the mask thresholded at logit +1 and at -1;
#   a mask whose edge moves with the threshold is dropped.
# - `crop_n_layers`: run again on overlapping crops for small objects, at several times
#   the cost.
#
# Measured against VOC's instances: for each instance the best IoU of any generated mask
# (void pixels left out), its mean, and the share found at IoU 0.5 and 0.75.

# %%
defaults = inspect.signature(SamAutomaticMaskGenerator).parameters
knobs = (
    "points_per_side",
    "points_per_batch",
    "pred_iou_thresh",
    "stability_score_thresh",
    "box_nms_thresh",
    "crop_n_layers",
)
print(
    "SamAutomaticMaskGenerator's defaults:", ", ".join(f"{k}={defaults[k].default}" for k in knobs)
)
print(
    "used here:",
    f"points_per_side={S.points_per_side}, pred_iou_thresh={S.pred_iou_thresh}, stability_score_thresh={S.stability_score_thresh}",
)

# %%
amg = {}
for name, model in {"before": original, "after": fine_tuned}.items():
    generator = SamAutomaticMaskGenerator(
        model,
        points_per_side=S.points_per_side,
        pred_iou_thresh=S.pred_iou_thresh,
        stability_score_thresh=S.stability_score_thresh,
    )
    amg[name] = measure_automatic_masks(
        generator,
        test_ds,
        range(min(S.amg_images, len(test_ds))),
        keep_examples=1,
        desc=name,
        cache=cache_dir() / "evaluations",  # a rerun reads finished measurements back
    )
print(automatic_table(amg))

# %%
index = amg["before"]["examples"][0][0]
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
plotting.show_automatic_masks(
    axes,
    test_ds[index]["image"],
    test_ds[index]["masks"],
    {name: r["examples"][0][1] for name, r in amg.items()},
)
fig.suptitle("automatic masks on a test image")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. ONNX: the decoder without PyTorch
#
# **ONNX** (Open Neural Network Exchange) is a file format for a computation graph: the
# operators, their order and their weights, which runtimes other than PyTorch execute
# (onnxruntime on CPUs and GPUs, onnxruntime-web in a browser, mobile runtimes). An app
# runs the heavy image encoder once per image; every click then needs only the prompt
# encoder and the decoder. segment-anything's own `SamOnnxModel` wraps those two and
# SAM's post-processing into one module made for export; `torch.onnx.export` traces it on
# example inputs and writes the file. The bare export, with the tracer's warnings about
# the post-processing kept:

# %%
example = export_example(fine_tuned)  # an embedding, 5 points, a mask prompt, a 480 x 640 image
stock = SamOnnxModel(fine_tuned.cpu(), return_single_mask=False).eval()
stock_file = Path(S.out_dir) / "decoder_stock.onnx"
stock_file.parent.mkdir(parents=True, exist_ok=True)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    torch.onnx.export(
        stock,
        example,
        str(stock_file),
        input_names=list(INPUTS),
        output_names=list(OUTPUTS),
        dynamic_axes={"point_coords": {1: "points"}, "point_labels": {1: "points"}},
        opset_version=17,
        dynamo=False,
    )
fine_tuned.to(DEVICE)
for w in caught:
    if w.filename.endswith("onnx.py"):  # segment-anything's post-processing
        print(
            f"{type(w.message).__name__} at {Path(w.filename).name}:{w.lineno}: {str(w.message)[:150]}..."
        )
print(
    inspect.getsource(SamOnnxModel.mask_postprocessing)
    .split("prepadded_size =")[1]
    .split("orig_im_size =")[0]
    .strip()
)

# %% [markdown]
# The warning points at the crop of the padding: `int(prepadded_size[0])` turns a tensor
# computed from the input `orig_im_size` into a Python number, which the tracer records
# as a constant. The file then crops every image as if it had the example's shape. On a
# portrait photo, against PyTorch:

# %%
portrait = next(
    test_ds[i]
    for i in range(len(test_ds))
    if test_ds[i]["image"].shape[0] > test_ds[i]["image"].shape[1]
)
p_emb = embed_image(fine_tuned, portrait["image"])
point_p = np.array([[portrait["image"].shape[1] / 2, portrait["image"].shape[0] / 2]])
with torch.no_grad():
    ref = predict(fine_tuned, p_emb, points=point_p[None], labels=np.array([[1]]), multimask=False)
feed = OnnxDecoder(export_decoder(fine_tuned, Path(S.out_dir) / "decoder.onnx"), fine_tuned).inputs(
    p_emb, point_p, np.array([1])
)
stock_masks = ort.InferenceSession(str(stock_file)).run(None, feed)[0][:, :1] > 0
agree = mask_iou(stock_masks[0, 0], ref["masks"][0, 0].cpu().numpy())
print(
    f"portrait {portrait['image'].shape[1]} x {portrait['image'].shape[0]}: the stock export's mask against PyTorch's, IoU {agree:.3f}"
)

# %% [markdown]
# The fix is six lines: crop with `index_select` over `arange` of the computed size,
# which the tracer keeps as a computation; the arithmetic is otherwise
# segment-anything's. Written out, exported, and checked equal to the package's
# `export_decoder` (which writes this model) through onnxruntime's `InferenceSession.run`
# with the six inputs fed by hand:


# %%
class TraceableCrop(SamOnnxModel):
    def mask_postprocessing(self, masks, orig_im_size):
        masks = F.interpolate(
            masks, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False
        )
        size = self.resize_longest_image_size(orig_im_size, self.img_size)
        masks = masks.index_select(2, torch.arange(size[0])).index_select(3, torch.arange(size[1]))
        h, w = orig_im_size.to(torch.int64)[0], orig_im_size.to(torch.int64)[1]
        return F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)


fixed_file = Path(S.out_dir) / "decoder_by_hand.onnx"
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the exporter's deprecation note (see below)
    torch.onnx.export(
        TraceableCrop(fine_tuned.cpu(), return_single_mask=False).eval(),
        example,
        str(fixed_file),
        input_names=list(INPUTS),
        output_names=list(OUTPUTS),
        dynamic_axes={"point_coords": {1: "points"}, "point_labels": {1: "points"}},
        opset_version=17,
        dynamo=False,
    )
fine_tuned.to(DEVICE)
move = ResizeLongestSide(fine_tuned.image_encoder.img_size)
side = 4 * p_emb.embedding.shape[-1]
by_hand_feed = {
    "image_embeddings": p_emb.embedding.float().cpu().numpy(),
    "point_coords": np.concatenate([move.apply_coords(point_p, p_emb.original_size), [[0.0, 0.0]]])[
        None
    ].astype(np.float32),
    "point_labels": np.array([[1, -1]], np.float32),  # the click, and SamPredictor's padding point
    "mask_input": np.zeros((1, 1, side, side), np.float32),
    "has_mask_input": np.zeros(1, np.float32),
    "orig_im_size": np.array(p_emb.original_size, np.float32),
}
for key, value in feed.items():
    np.testing.assert_array_equal(by_hand_feed[key], value)
masks_hand = ort.InferenceSession(str(fixed_file)).run(None, by_hand_feed)[0]
masks_pkg = ort.InferenceSession(str(Path(S.out_dir) / "decoder.onnx")).run(None, feed)[0]
np.testing.assert_allclose(masks_hand, masks_pkg, atol=1e-5)
print(
    f"the fixed export on the portrait: IoU with PyTorch {mask_iou(masks_hand[0, 0] > 0, ref['masks'][0, 0].cpu().numpy()):.3f}; by hand = export_decoder + OnnxDecoder.inputs"
)

# %% [markdown]
# A note on exporters. PyTorch has two: the TorchScript-based one used above
# (`dynamo=False`), which segment-anything's own export script uses, needs nothing beyond
# `onnx`, and which PyTorch marks as deprecated; and the newer one (`dynamo=True`), which
# starts with `torch.export`. That first step must see every tensor size as a function of
# the inputs: the stock model's crop stops it, the rewrite passes (checked below). It then
# writes ONNX with the `onnxscript` package, which this course does not install.

# %%
fine_tuned.cpu()
try:
    for name, candidate in (
        ("segment-anything's SamOnnxModel", stock),
        ("the rewrite", TraceableCrop(fine_tuned, return_single_mask=False).eval()),
    ):
        try:
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                torch.export.export(candidate, example)  # (its diagnostics are long: kept out)
            print(f"torch.export of {name}: accepted")
        except Exception as err:  # what the dynamo exporter would stop at
            print(f"torch.export of {name}: stops with {type(err).__name__}")
finally:
    fine_tuned.to(DEVICE)

# %% [markdown]
# The package's `OnnxDecoder` runs the file in an onnxruntime session and checks what it
# is given (the file's model, the prompts). The same prompts through PyTorch and
# onnxruntime: point, points, box, points + box, and a click with the previous answer as
# mask prompt. The decoder's own outputs (the low-res logits and the IoU scores) agree to
# 1e-4 and 1e-5. The upsampling to the photo agrees to about 1e-3: onnxruntime's resize
# computes its sample positions as `(x + 0.5) / (out / in)`, PyTorch as
# `(x + 0.5) * (in / out)`, and float32 rounds the two differently; a mask pixel can only
# differ where its logit is within that of 0.

# %%
onnx_file = Path(S.out_dir) / "decoder.onnx"
onnx_decoder = OnnxDecoder(onnx_file, fine_tuned)  # checks variant and encoder fingerprint
print(f"{onnx_file}: {onnx_file.stat().st_size / 1e6:.1f} MB")
emb = embed_image(fine_tuned, sample["image"])
h, w = sample["image"].shape[:2]
prompts = {
    "point": dict(points=np.array([[x, y]]), labels=np.array([1])),
    "points": dict(points=np.array([[x, y], [w * 0.1, h * 0.1]]), labels=np.array([1, 0])),
    "box": dict(box=np.array([w * 0.2, h * 0.2, w * 0.8, h * 0.8])),
    "points + box": dict(
        points=np.array([[x, y]]),
        labels=np.array([1]),
        box=np.array([w * 0.2, h * 0.2, w * 0.8, h * 0.8]),
    ),
}
prompts["point + mask prompt"] = dict(
    prompts["point"], mask_input=ours["low_res"][0, int(ours["iou"][0].argmax())][None]
)
print(
    f"{'prompt':20s} {'low-res logits':>14s} {'logits':>8s} {'scores':>8s} {'mask pixels that differ':>24s}"
)
for name, p in prompts.items():
    with torch.no_grad():
        ref = predict(
            fine_tuned,
            emb,
            points=None if "points" not in p else p["points"][None],
            labels=None if "labels" not in p else p["labels"][None],
            boxes=None if "box" not in p else p["box"][None],
            mask_input=None
            if "mask_input" not in p
            else p["mask_input"][None].to(fine_tuned.device),
            multimask=name == "point",
        )
    ref = {k: v.cpu().numpy() for k, v in ref.items()}
    got = onnx_decoder.predict(emb, **p, multimask=name == "point")
    d = {k: float(np.abs(got[k] - ref[k]).max()) for k in ("low_res", "logits", "iou")}
    differ = int((got["masks"] != ref["masks"]).sum())
    print(
        f"{name:20s} {d['low_res']:14.1e} {d['logits']:8.1e} {d['iou']:8.1e} {differ:>14d} of {ref['masks'].size}"
    )
    decided = np.abs(ref["logits"]) > 1e-3
    assert d["low_res"] < 1e-4 and d["iou"] < 1e-5 and d["logits"] < 1e-3, (name, d)
    assert np.array_equal(got["masks"][decided], ref["masks"][decided]), name

# %% [markdown]
# ### int8
#
# Dynamic quantisation stores the weights as int8 and quantises activations on the fly:
# one call of onnxruntime's `quantize_dynamic`, checked against the package's
# `quantize_int8` (the same call, with the file's metadata carried over). Below: the file
# size, the time per click (median of
# 50 in full mode, PyTorch, onnxruntime fp32 and int8 interleaved click by click, on this machine's
# CPU) and how far the int8 masks move from fp32 over the test instances (the first
# click's best mask; the course's clicker picks the point).

# %%
int8_by_hand = Path(S.out_dir) / "decoder_by_hand.int8.onnx"
logging.getLogger().setLevel(logging.ERROR)  # its hint to pre-process first (see the package)
quantize_dynamic(str(onnx_file), str(int8_by_hand), weight_type=QuantType.QInt8)
logging.getLogger().setLevel(logging.WARNING)
int8_file = quantize_int8(onnx_file, Path(S.out_dir) / "decoder.int8.onnx")
run = lambda f: ort.InferenceSession(str(f)).run(None, feed)[1]  # noqa: E731  the IoU scores
np.testing.assert_array_equal(run(int8_by_hand), run(int8_file))
int8_decoder = OnnxDecoder(int8_file, fine_tuned)
cases = []  # (embedding, first click) for every instance of the measured test images
for i in range(min(S.amg_images, len(test_ds))):
    s = test_ds[i]
    e = embed_image(fine_tuned, s["image"])
    for m in s["masks"]:
        cx, cy, _ = next_click(np.zeros_like(m), m, s["void"])
        cases.append((e, np.array([[cx, cy]], np.float32)))


def run_torch(e, point):
    with torch.no_grad():
        return predict(fine_tuned, e, points=point[None], labels=np.ones((1, 1)))


ms = click_latency(
    {
        f"PyTorch ({DEVICE})": run_torch,
        "onnxruntime fp32 (CPU)": lambda e, p: onnx_decoder.predict(e, p, np.ones(1)),
        "onnxruntime int8 (CPU)": lambda e, p: int8_decoder.predict(e, p, np.ones(1)),
    },
    cases,
    S.clicks,
)
agreement = first_click_agreement(onnx_decoder, int8_decoder, cases)
print(f"fp32 {onnx_file.stat().st_size / 1e6:.1f} MB, int8 {int8_file.stat().st_size / 1e6:.1f} MB")
for name, t in ms.items():
    print(f"{name:24s} {t:7.1f} ms per click (median of {S.clicks})")
print(
    f"int8 against fp32 over {len(cases)} instances: mask IoU mean {agreement['miou']:.4f}, "
    f"lowest {agreement['min_iou']:.4f}; largest low-res logit change {agreement['max_low_res_diff']:.3f}"
)

# %% [markdown]
# `python benchmarks/onnx_decoder.py` measures the same with vit_b's decoder (random
# weights) on this course's 2-core CPU; the README has its figures. On a GPU runtime the
# PyTorch line runs on the GPU and is not comparable with the CPU lines.
#
# ## Your turn: click and compare
#
# Left click: a positive point; right click or shift+click: a negative one; box mode
# takes a drag. "before" is SAM as published, "after" the fine-tuned decoder.

# %%
widget, controller = sam_compare_widget({"before": original, "after": fine_tuned}, test_ds)
widget
