"""LabPics vessels as a torch Dataset for torchvision's detection models (notebook 04).

Lazy: a sample is read when it is asked for. Transforms are torchvision's v2 on
``tv_tensors``, so boxes and masks follow every flip and scaling. No fixed-size resize:
Mask R-CNN resizes by itself, and :class:`ZoomForModel` fuses the training scale jitter
with that resize, so every later transform runs at the working size (1024 x 576 for
LabPics' 1920 x 1080 photos).

Ignore policy (``Ignore.png``): an instance more than half inside the ignore region is
left out of training targets; in evaluation (:mod:`helpers.detection.coco_eval`) it is
``iscrowd`` (matching it counts neither way), and detections more than half inside the
region are dropped before scoring.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..course.runtime import usable_cpus
from .targets import detection_target, masks_to_boxes_xyxy, pixel_counts

IGNORE_OVERLAP = 0.5


def ignored_instances(
    masks: np.ndarray, ignore: np.ndarray, overlap: float = IGNORE_OVERLAP
) -> np.ndarray:
    """``N`` bool: which of ``N x H x W`` masks lie more than ``overlap`` inside ``ignore``."""
    if len(masks) == 0:
        return np.zeros(0, bool)
    area = np.count_nonzero(masks.reshape(len(masks), -1), axis=1)
    inside = np.count_nonzero((masks & ignore[None]).reshape(len(masks), -1), axis=1)
    return inside > overlap * np.maximum(area, 1)


def model_working_size(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """The ``(height, width)`` to which torchvision's Mask R-CNN resizes an ``h x w`` image:
    one factor ``min(min_size / shorter side, max_size / longer side)`` for both sides, as
    ``GeneralizedRCNNTransform`` computes it, output sides rounded down as its
    ``interpolate(..., recompute_scale_factor=True)`` does."""
    f = min(min_size / min(h, w), max_size / max(h, w))
    return int(h * f), int(w * f)


class ZoomForModel(v2.Transform):
    """Scale jitter fused with the model's own resize (a v2 transform).

    ``RandomAffine(degrees=0, scale=(a, b))`` zooms about the centre by a random ``s`` and
    keeps the canvas; the model then resizes by ``f`` (:func:`model_working_size`). Here
    both are one step: resize to ``s * f`` times the photo, then centre-crop or zero-pad to
    ``f`` times it. Same geometry, one resampling, every later step at the working size.
    Images bilinear without antialiasing (as the model's resize at inference), masks
    nearest; boxes follow, clamped (:class:`LabPicsDetection` recomputes them from masks).

    Args:
        min_size, max_size: the model's (``build_maskrcnn(min_size=..., max_size=...)``).
        scale: the range of ``s``, drawn uniformly from ``torch``'s RNG."""

    def __init__(self, min_size: int, max_size: int, scale: tuple[float, float] = (0.8, 1.25)):
        super().__init__()
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be 0 < low <= high, got {scale}")
        self.min_size, self.max_size, self.scale = min_size, max_size, scale

    def make_params(self, flat_inputs: list) -> dict:
        h, w = v2.query_size(flat_inputs)
        out_h, out_w = model_working_size(h, w, self.min_size, self.max_size)
        s = float(torch.empty(1).uniform_(self.scale[0], self.scale[1]))
        zoom = (max(1, round(out_h * s)), max(1, round(out_w * s)))
        return {"zoom": zoom, "out": (out_h, out_w)}

    def transform(self, inpt, params: dict):
        if not isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask, tv_tensors.BoundingBoxes)):
            return inpt  # labels, ids: no geometry
        x = F.resize(inpt, list(params["zoom"]), antialias=False)
        return F.center_crop(x, list(params["out"]))


def train_transforms(
    min_size: int, max_size: int, scale: tuple[float, float] = (0.8, 1.25)
) -> v2.Compose:
    """Mild scale jitter at the model's working size (:class:`ZoomForModel`; pass the
    model's ``min_size``/``max_size``), flips and photometric jitter, then float in
    [0, 1].

    No hue jitter: the colour of what a vessel holds is part of the picture, and
    torchvision's RGB -> HSV -> RGB round trip for it took about 20 ms of a sample's
    ~100 ms on one CPU core (brightness, contrast and saturation together: 5 ms)."""
    return v2.Compose(
        [
            ZoomForModel(min_size, max_size, scale),
            v2.RandomHorizontalFlip(0.5),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        ]
    )


def eval_transforms() -> v2.Compose:
    """Only the conversion to float in [0, 1]."""
    return v2.Compose([v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)])


class LabPicsDetection(torch.utils.data.Dataset):
    """``(image, target)`` pairs for torchvision's Mask R-CNN.

    Args:
        reader: a :class:`helpers.data.labpics.LabPicsDataset` (or a reader of the same dicts).
        transforms: a v2 transform of ``(image, target)``; default :func:`eval_transforms`.

    Returns per item ``image``, ``tv_tensors.Image`` ``3 x H x W`` float32 RGB in [0, 1]
    (the photo's size, or the working size with :func:`train_transforms`), and ``target``:
    ``masks`` (``tv_tensors.Mask`` ``K x H x W`` uint8, empty instances dropped), ``boxes``
    (``tv_tensors.BoundingBoxes`` XYXY pixel edges, the masks' tight boxes), ``labels`` int64
    (1 = vessel), ``image_id`` (the index), ``area`` (mask pixels), ``iscrowd`` (zeros)."""

    def __init__(self, reader, transforms=None, ignore_overlap: float = IGNORE_OVERLAP):
        self.reader = reader
        self.transforms = transforms if transforms is not None else eval_transforms()
        self.ignore_overlap = ignore_overlap

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, key):
        """``key``: an index, or ``(index, seed)`` as :class:`SeededShuffle` gives them;
        with a seed, the random transforms draw from it (on a forked RNG: the caller's
        global RNG is left as it was), so a sample's augmentation does not depend on
        which worker process makes it or on what ran before."""
        if isinstance(key, (tuple, list)):
            index, seed = key
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self._item(index)
        return self._item(key)

    def _item(self, index: int):
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
        # what the model learns from are the masks as transformed: instances cropped away
        # leave (with their labels), boxes are the masks' tight boxes, area their pixels
        masks = target["masks"]
        keep = pixel_counts(masks) > 0
        target["masks"] = tv_tensors.Mask(masks[keep])
        target["labels"] = target["labels"][keep]
        target["boxes"] = tv_tensors.BoundingBoxes(
            masks_to_boxes_xyxy(target["masks"]), format="XYXY", canvas_size=masks.shape[-2:]
        )
        target["area"] = pixel_counts(target["masks"]).to(torch.float32)
        target["iscrowd"] = torch.zeros(len(target["labels"]), dtype=torch.int64)
        return image, target


class SeededShuffle(torch.utils.data.Sampler):
    """A new order every epoch and one augmentation seed per sample, both from
    ``(seed, epoch)``: yields ``(index, sample_seed)`` keys for :class:`LabPicsDetection`.

    With ``DataLoader(..., sampler=SeededShuffle(n, seed), num_workers=k)`` the batches
    are the same for any ``k`` (0 included) and for persistent workers, and a run resumed
    at epoch ``e`` (``set_epoch(e)``) sees what an uninterrupted run saw there: the seeds
    are made here, in the main process, not drawn from each worker's own RNG.

    Under ``torchrun`` (``rank`` of ``world`` processes) each process takes every
    ``world``-th key of the same epoch order, as ``DistributedSampler`` does (the order is
    padded with its own first keys to a multiple of ``world``, so every process has as
    many batches and none waits for the others).
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world: int = 1):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not one of the {world} processes")
        self.n, self.seed, self.epoch, self.rank, self.world = n, seed, 0, rank, world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.world)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        seeds = torch.randint(0, 2**62, (self.n,), generator=g).tolist()
        keys = list(zip(order, seeds))
        keys += keys[: len(self) * self.world - self.n]  # padding: equal shares
        return iter(keys[self.rank :: self.world])


def default_num_workers(limit: int = 4) -> int:
    """Data-loading processes: the CPUs this process may use, at most ``limit`` (4, as in
    torchvision's detection references); 2 on a Colab runtime with 2 vCPUs."""
    return max(0, min(limit, usable_cpus()))


def collate(batch):
    """Detection batches are lists: images differ in size and in instance count."""
    return tuple(zip(*batch))
