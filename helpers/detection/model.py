"""torchvision's Mask R-CNN for LabPics vessels: both predictors replaced, the input contract
(notebook 04).

- Input: a list of ``3 x H x W`` float tensors, **RGB in [0, 1]**, any size; the model
  normalises and resizes (shorter side to ``min_size``, longer at most ``max_size``)
  itself. For training, one target dict per image: ``boxes`` ``K x 4`` float xyxy
  pixels, ``labels`` ``K`` int64 (0 is background), ``masks`` ``K x H x W`` uint8.
- Fine-tuning to new classes replaces **both** the box predictor and the mask predictor
  (one 28 x 28 mask per class); notebook 04 shows what keeping COCO's does.
- Weights by enum (``weights="DEFAULT"``, not the deprecated ``pretrained=True``),
  fetched into the course's cache (``<cache>/torch/hub/checkpoints/``) by
  :func:`ensure_coco_weights` (length and SHA-256 checked; offline, an error that names
  the file, its place and smoke mode).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import torch
from torchvision.models.detection import (
    MaskRCNN,
    MaskRCNN_ResNet50_FPN_Weights,
    maskrcnn_resnet50_fpn,
)
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

#: COCO classes that look like lab vessels; "before" fine-tuning they count as vessel.
VESSEL_LIKE_COCO = ("bottle", "wine glass", "cup", "bowl", "vase")
CLASSES = ("background", "vessel")
#: Smoke mode's budget: fewer proposals and detections (CPU seconds, not accuracy).
SMOKE_MODEL_KWARGS = dict(
    min_size=192,
    max_size=256,
    rpn_pre_nms_top_n_train=300,
    rpn_post_nms_top_n_train=100,
    rpn_pre_nms_top_n_test=150,
    rpn_post_nms_top_n_test=50,
    box_batch_size_per_image=64,
    box_detections_per_img=20,
)


#: torchvision's URL of the COCO weights (the file name carries its SHA-256 prefix).
COCO_WEIGHTS_URL = MaskRCNN_ResNet50_FPN_Weights.DEFAULT.url


def hub_dir() -> Path:
    """The course's torch.hub folder, ``<cache>/torch/hub``: the COCO weights live with
    the course's other downloads (on Google Drive in Colab, so a new runtime does not
    download them again), and torchvision is pointed there while it builds the model."""
    from ..course.runtime import cache_dir

    return cache_dir() / "torch" / "hub"


@contextlib.contextmanager
def _torch_hub_at(folder: Path):
    """torch.hub (and so torchvision's weight loading) reads ``folder`` inside the block."""
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(folder))
    try:
        yield
    finally:
        torch.hub.set_dir(before)


def coco_weights_file(url: str | None = None) -> Path:
    """Where the COCO weights are kept: ``<hub_dir()>/checkpoints/<the URL's file name>``,
    the place torchvision looks while :func:`build_maskrcnn` builds the model."""
    name = (url or COCO_WEIGHTS_URL).rsplit("/", 1)[-1]
    return hub_dir() / "checkpoints" / name


def ensure_coco_weights(url: str | None = None) -> Path:
    """The COCO weights in the course's cache (:func:`coco_weights_file`), downloaded
    (170 MB) through :func:`helpers.data.downloads.fetch` if they are not there yet;
    torchvision then loads them from there without a network call.

    Raises:
        helpers.data.downloads.DownloadError: no network, a cut transfer or a wrong SHA-256;
            the message names the file, where it belongs and how to run in smoke mode.
    """
    from ..course.runtime import SMOKE_ENV
    from ..data.downloads import DownloadError, fetch

    url = url or COCO_WEIGHTS_URL
    dest = coco_weights_file(url)
    found = re.search(r"-([a-f0-9]{6,})\.", dest.name)  # torch.hub's naming rule
    try:
        return fetch(
            url,
            dest,
            sha256_prefix=found.group(1) if found else None,
            what=f"Mask R-CNN's COCO weights ({dest.name})",
        )
    except DownloadError as err:
        raise DownloadError(
            f"{err}\nThey belong in the course's cache, {dest.parent}. Or set {SMOKE_ENV}=1 "
            "to run without them (smoke mode: random weights, the built-in data)."
        ) from err.__cause__


def coco_category_ids(names=VESSEL_LIKE_COCO) -> list[int]:
    """The label ids torchvision's COCO models use for ``names`` (from the weights' own
    metadata, not typed in by hand)."""
    categories = MaskRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"]
    return [categories.index(n) for n in names]


def build_maskrcnn(
    num_classes: int = 2,
    pretrained: bool = True,
    trainable_backbone_layers: int = 3,
    min_size: int = 800,
    max_size: int = 1333,
    **kwargs,
) -> MaskRCNN:
    """Mask R-CNN (ResNet-50 FPN) with fresh box and mask predictors for ``num_classes``
    (background included).

    Args:
        pretrained: start from COCO weights (``weights="DEFAULT"``, fetched by
            :func:`ensure_coco_weights`); False builds it without any downloaded weights
            (smoke mode, tests).
        trainable_backbone_layers: how many ResNet stages (from the top, 0..5) train;
            with ``pretrained=False`` all do.
        min_size, max_size: the model's own resize (see the module docstring).
        kwargs: passed to ``MaskRCNN`` (e.g. ``rpn_post_nms_top_n_train``,
            ``box_detections_per_img``: smoke mode shrinks these to fit its budget).
    """
    weights = MaskRCNN_ResNet50_FPN_Weights.DEFAULT if pretrained else None
    if pretrained:  # without weights every layer trains anyway (torchvision warns otherwise)
        kwargs["trainable_backbone_layers"] = trainable_backbone_layers
        ensure_coco_weights()
    with _torch_hub_at(hub_dir()):
        model = maskrcnn_resnet50_fpn(
            weights=weights, weights_backbone=None, min_size=min_size, max_size=max_size, **kwargs
        )
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes)
    mask_channels = model.roi_heads.mask_predictor.conv5_mask.in_channels
    model.roi_heads.mask_predictor = MaskRCNNPredictor(mask_channels, 256, num_classes)
    return model


def build_coco_maskrcnn(
    pretrained: bool = True, min_size: int = 800, max_size: int = 1333, **kwargs
) -> MaskRCNN:
    """The COCO model as it comes (91 classes), for the "before" measurement; without
    ``pretrained`` its weights are random (smoke mode)."""
    weights = MaskRCNN_ResNet50_FPN_Weights.DEFAULT if pretrained else None
    if pretrained:
        ensure_coco_weights()
    with _torch_hub_at(hub_dir()):
        return maskrcnn_resnet50_fpn(
            weights=weights, weights_backbone=None, min_size=min_size, max_size=max_size, **kwargs
        )


def map_to_vessel(prediction: dict, coco_ids=None) -> dict:
    """Keep the detections of a COCO model whose class is vessel-like, relabelled 1.

    Args:
        prediction: one output dict of a COCO Mask R-CNN (``boxes``, ``labels``,
            ``scores``, ``masks``).
    """
    ids = torch.as_tensor(
        coco_category_ids() if coco_ids is None else coco_ids, device=prediction["labels"].device
    )
    keep = torch.isin(prediction["labels"], ids)
    out = {k: v[keep] for k, v in prediction.items()}
    out["labels"] = torch.ones_like(out["labels"])
    return out


def check_input_contract(images: list[torch.Tensor]) -> None:
    """Raise ``ValueError`` unless ``images`` are ``3 x H x W`` float tensors in [0, 1]:
    0-255 inputs are caught before they silently ruin training."""
    for i, img in enumerate(images):
        if img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"image {i}: expected 3 x H x W, got {tuple(img.shape)}")
        if not img.is_floating_point():
            raise ValueError(f"image {i}: expected a float tensor in [0, 1], got {img.dtype}")
        lo, hi = float(img.min()), float(img.max())
        if lo < 0 or hi > 1:
            raise ValueError(
                f"image {i}: values in [{lo:.1f}, {hi:.1f}]; Mask R-CNN expects RGB in [0, 1] "
                "(divide 0-255 images by 255)"
            )
