"""LabPics vessels as a torch Dataset for torchvision's detection models.

Introduced in notebook 04. Lazy: each sample is read from disk when it is asked for (the
seed loaded every image and mask at start-up). Transforms are torchvision's v2, on
``tv_tensors`` so that boxes and masks follow every flip and scaling of the image.
There is no fixed-size resize: Mask R-CNN resizes by itself (``min_size``/``max_size``).

Ignore policy (``Ignore.png``, LabPics' "do not judge this region"): an instance with
more than half of its pixels inside the ignore region is ambiguous. In training it is
left out of the target. In evaluation (:mod:`helpers.coco_eval`) such ground-truth
instances are marked ``iscrowd`` (a detection matching one counts neither as right nor
as wrong) and detections with more than half of their mask inside the region are
dropped before scoring.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from .targets import detection_target

IGNORE_OVERLAP = 0.5


def ignored_instances(
    masks: np.ndarray, ignore: np.ndarray, overlap: float = IGNORE_OVERLAP
) -> np.ndarray:
    """``N`` bool: which of ``N x H x W`` masks lie more than ``overlap`` inside ``ignore``."""
    if len(masks) == 0:
        return np.zeros(0, bool)
    area = masks.reshape(len(masks), -1).sum(1)
    inside = (masks & ignore[None]).reshape(len(masks), -1).sum(1)
    return inside > overlap * np.maximum(area, 1)


def train_transforms(scale: tuple[float, float] = (0.8, 1.25)) -> v2.Compose:
    """Flips, mild scale jitter and photometric jitter, then float in [0, 1]; boxes that
    end up degenerate are removed with their masks and labels."""
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(0.5),
            v2.RandomAffine(degrees=0, scale=scale),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
            v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.SanitizeBoundingBoxes(min_size=1),
        ]
    )


def eval_transforms() -> v2.Compose:
    """Only the conversion to float in [0, 1]."""
    return v2.Compose([v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)])


class LabPicsDetection(torch.utils.data.Dataset):
    """``(image, target)`` pairs for torchvision's Mask R-CNN.

    Args:
        reader: a :class:`helpers.LabPicsDataset` (or any reader with the same dict).
        transforms: a v2 transform taking ``(image, target)``; default
            :func:`eval_transforms`.

    Returns per item:
        ``image``: ``tv_tensors.Image`` ``3 x H x W`` float32 RGB in [0, 1];
        ``target``: ``boxes`` (``tv_tensors.BoundingBoxes`` XYXY pixels), ``labels`` int64
        (1 = vessel), ``masks`` (``tv_tensors.Mask`` ``K x H x W`` uint8), ``image_id``
        (the index), ``area`` and ``iscrowd`` recomputed after the transforms.
    """

    def __init__(self, reader, transforms=None, ignore_overlap: float = IGNORE_OVERLAP):
        self.reader = reader
        self.transforms = transforms if transforms is not None else eval_transforms()
        self.ignore_overlap = ignore_overlap

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int):
        s = self.reader[index]
        keep = ~ignored_instances(s["masks"], s["ignore"], self.ignore_overlap)
        target = detection_target({"masks": s["masks"][keep], "labels": s["labels"][keep]}, index)
        h, w = s["image"].shape[:2]
        image = tv_tensors.Image(torch.from_numpy(s["image"]).permute(2, 0, 1).contiguous())
        target["boxes"] = tv_tensors.BoundingBoxes(
            target["boxes"], format="XYXY", canvas_size=(h, w)
        )
        target["masks"] = tv_tensors.Mask(target["masks"])
        image, target = self.transforms(image, target)
        target["area"] = target["masks"].flatten(1).sum(1).to(torch.float32)
        target["iscrowd"] = torch.zeros(len(target["labels"]), dtype=torch.int64)
        return image, target


def collate(batch):
    """Detection batches are lists: images differ in size and in instance count."""
    return tuple(zip(*batch))
