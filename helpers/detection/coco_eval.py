"""COCO box and mask AP with pycocotools, for detectors evaluated on LabPics (notebook 04):
pycocotools scores; this module converts samples and outputs to its format (RLE masks,
``[x, y, w, h]`` boxes) and applies the ignore policy of :mod:`helpers.detection.data`.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..course.runtime import progress
from ..distributed import Place, broadcast_from_main, gather_to_main, shard
from ..remembered import fingerprint, function_identity, reader_identity, remembered
from .data import IGNORE_OVERLAP, ignored_instances

STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")


def encode_mask(mask: np.ndarray) -> dict:
    """RLE of an ``H x W`` bool or uint8 (0/1) mask, as COCO stores it."""
    return mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))


def gt_entries(
    image_id: int, sample: dict, first_ann_id: int = 1, ignore_overlap: float = IGNORE_OVERLAP
) -> tuple[dict, list[dict]]:
    """The COCO image entry and annotations (RLE masks) of one reader sample. Instances
    mostly inside the sample's ``ignore`` region are ``iscrowd=1``."""
    h, w = sample["image"].shape[:2]
    masks = sample["masks"]
    crowd = (
        ignored_instances(masks, sample["ignore"], ignore_overlap)
        if "ignore" in sample
        else np.zeros(len(masks), bool)
    )
    annotations = []
    for mask, label, is_crowd in zip(masks, sample["labels"], crowd):
        if not mask.any():
            continue
        rle = encode_mask(mask)
        annotations.append(
            {
                "id": first_ann_id + len(annotations),
                "image_id": int(image_id),
                "category_id": int(label),
                "segmentation": rle,
                "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": int(is_crowd),
            }
        )
    return {"id": int(image_id), "height": int(h), "width": int(w)}, annotations


def coco_dataset(images: list[dict], annotations: list[dict]) -> COCO:
    """An in-memory pycocotools ``COCO`` from image entries and annotations."""
    categories = sorted({a["category_id"] for a in annotations} | {1})
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c} for c in categories],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_detections(
    image_id: int,
    prediction: dict,
    ignore: np.ndarray | None = None,
    mask_threshold: float = 0.5,
    ignore_overlap: float = IGNORE_OVERLAP,
) -> list[dict]:
    """COCO result entries of one image's Mask R-CNN output (``boxes`` ``K x 4`` xyxy
    pixels, ``scores``, ``labels``, ``masks`` ``K x 1 x H x W`` float probabilities), on
    whatever device the model left them. Detections mostly inside ``ignore`` (``H x W``
    bool) are dropped (the rule of :func:`helpers.detection.data.ignored_instances`).

    Memory: the masks are thresholded and checked against ``ignore`` where they lie (the
    GPU in training); each kept one then crosses to the CPU alone, as ``H x W`` uint8, to
    be RLE-encoded. The CPU never holds more than one mask (2 MB for a 1920 x 1080
    image), where copying the output would cost ``K`` float masks (830 MB for 100).
    """
    probs = prediction["masks"]
    binary = probs[:, 0] > mask_threshold  # K x H x W bool, on the model's device
    if ignore is not None and len(binary):
        ign = torch.as_tensor(np.asarray(ignore, dtype=bool), device=binary.device)
        area = binary.flatten(1).sum(1)
        inside = (binary & ign).flatten(1).sum(1)
        keep = (inside <= ignore_overlap * area.clamp(min=1)).tolist()
    else:
        keep = [True] * len(binary)
    boxes = prediction["boxes"].detach().cpu().tolist()
    scores = prediction["scores"].detach().cpu().tolist()
    labels = prediction["labels"].detach().cpu().tolist()
    out = []
    for k in range(len(binary)):
        if not keep[k]:
            continue
        x0, y0, x1, y1 = boxes[k]
        mask = binary[k].to(torch.uint8).cpu().numpy()  # one H x W uint8 on the CPU
        out.append(
            {
                "image_id": int(image_id),
                "category_id": int(labels[k]),
                "score": float(scores[k]),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "segmentation": encode_mask(mask),
            }
        )
    return out


def coco_ap(gt: COCO, detections: list[dict], iou_type: str) -> dict:
    """pycocotools' COCOeval for ``iou_type`` ``"bbox"`` or ``"segm"``; returns
    ``{"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large"}`` in [0, 1]
    (-1 where COCO has nothing to average). No detections at all scores 0."""
    if not detections:
        return {name: 0.0 for name in STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(STAT_NAMES, ev.stats[:6])}


@torch.no_grad()
def evaluate_detector(
    model,
    reader,
    device="cpu",
    transform=None,
    postprocess=None,
    show_progress: bool = True,
    desc: str = "evaluating",
    place: Place | None = None,
    cache: str | Path | None = None,
) -> dict:
    """Box and mask AP of ``model`` on every sample of ``reader``: ``{"bbox": {...},
    "segm": {...}}`` as :func:`coco_ap`.

    Args:
        transform: a reader's ``H x W x 3`` uint8 image to the model's input (default:
            RGB float in [0, 1]); postprocess: applied to each output (e.g.
            :func:`helpers.detection.model.map_to_vessel`).
        place: under ``torchrun``, each process runs its share; ground truth and RLE
            detections are gathered on rank 0 for pycocotools, the result sent to all.
        cache: a folder holding the result of the same weights, images, ``transform`` and
            ``postprocess`` (one process only). Masks cross to the CPU one at a time and are
            kept as RLE, so host memory does not grow with image size x detections."""
    place = place or Place()
    if cache is not None and place.world == 1:
        key = fingerprint(
            "coco-ap",
            model,
            reader_identity(reader),
            function_identity(transform),
            function_identity(postprocess),
        )
        return remembered(
            cache,
            "coco-ap",
            key,
            lambda: evaluate_detector(
                model, reader, device, transform, postprocess, show_progress, desc, place
            ),
        )
    model.eval().to(device)
    images, annotations, detections = [], [], []
    mine = shard(len(reader), place)  # this process's share
    for i in progress(mine, show=show_progress and place.main, desc=desc, unit="img", leave=False):
        s = reader[i]
        entry, anns = gt_entries(i, s, len(annotations) + 1)  # RLE: no pixels kept
        images.append(entry)
        annotations += anns
        x = (
            transform(s["image"])
            if transform is not None
            else torch.from_numpy(s["image"]).permute(2, 0, 1).float() / 255
        )
        out = model([x.to(device)])[0]  # left on the device: see coco_detections
        if postprocess is not None:
            out = postprocess(out)
        detections += coco_detections(i, out, s.get("ignore"))
        del out
    parts = gather_to_main((images, annotations, detections), place)
    result = None
    if place.main:  # pycocotools on rank 0, over every process's images
        images, annotations, detections = [], [], []
        for imgs, anns, dets in parts:
            images += imgs
            for a in anns:  # annotation ids unique over all processes
                annotations.append({**a, "id": len(annotations) + 1})
            detections += dets
        gt = coco_dataset(sorted(images, key=lambda e: e["id"]), annotations)
        result = {"bbox": coco_ap(gt, detections, "bbox"), "segm": coco_ap(gt, detections, "segm")}
    return broadcast_from_main(result, place)
