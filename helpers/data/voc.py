"""Pascal VOC2007 instance segmentation: a lazy reader of the real on-disk layout
(notebooks 00 and 03). ``root`` holds ``VOC2007/`` (it is ``VOCdevkit``)::

    VOC2007/JPEGImages/<id>.jpg
    VOC2007/SegmentationObject/<id>.png   palette PNG: 0 background, 1..N instance ids, 255 void
    VOC2007/SegmentationClass/<id>.png    palette PNG: 0 background, 1..20 class index, 255 void
    VOC2007/Annotations/<id>.xml          boxes and class names (not needed for masks)
    VOC2007/ImageSets/Segmentation/{train,val,trainval,test}.txt   one id per line

``torchvision.datasets.VOCSegmentation`` reads only SegmentationClass; instances need
this reader. An instance's class is the SegmentationClass value at its pixels.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from .image_files import DataError, check_same_size, read_index_png, read_rgb

log = logging.getLogger(__name__)

#: VOC class names; the class index of ``VOC_CLASSES[i]`` is ``i + 1`` (0 is background).
VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOID_INDEX = 255
IMAGE_SETS = ("train", "val", "trainval", "test")


def voc_palette() -> list[int]:
    """VOC's 256-colour palette as a flat ``[r0, g0, b0, r1, ...]`` list (768 ints).

    Colour ``i`` spreads the bits of ``i`` over R, G and B from the high bit down; this is
    the palette stored in every VOC SegmentationObject / SegmentationClass PNG
    (index 255 is (224, 224, 192)).
    """
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def find_voc2007(root: str | Path) -> Path:
    """The ``VOC2007`` folder under ``root``.

    Accepts ``root`` = the folder holding ``VOC2007/`` (``VOCdevkit``), or the folder
    holding ``VOCdevkit/`` (torchvision's ``root``), or ``VOC2007`` itself.
    """
    root = Path(root).expanduser()
    for candidate in (root / "VOC2007", root / "VOCdevkit" / "VOC2007", root):
        if (candidate / "ImageSets" / "Segmentation").is_dir():
            return candidate
    raise DataError(
        root,
        "no VOC2007/ImageSets/Segmentation below this folder; pass the folder that "
        "holds VOC2007/ (VOCdevkit)",
    )


class VOCInstanceDataset:
    """Instances of VOC2007's segmentation split, read lazily. Construction reads the split
    file and checks that every listed id has its three files (an error names the first
    missing one); pixels are read on ``ds[i]``, a dict:

    - ``image``: ``H x W x 3`` uint8 RGB;
    - ``masks``: ``N x H x W`` bool, one per instance id in increasing order (void in none);
    - ``labels``: ``N`` int64, the class index 1..20 (``VOC_CLASSES[label - 1]``), the most
      frequent class at the instance's pixels (none at all is an error);
    - ``instance_ids``: ``N`` int64; ``void``: ``H x W`` bool, the 255 pixels (left out of
      losses and metrics); ``image_id``: str, e.g. ``"000032"``."""

    def __init__(self, root: str | Path, image_set: str = "train"):
        if image_set not in IMAGE_SETS:
            raise ValueError(f"image_set must be one of {IMAGE_SETS}, got {image_set!r}")
        self.voc_dir = find_voc2007(root)
        self.image_set = image_set
        self.split_file = self.voc_dir / "ImageSets" / "Segmentation" / f"{image_set}.txt"
        if not self.split_file.is_file():
            raise DataError(self.split_file, f"split file for image_set={image_set!r} not found")
        # utf-8-sig: a byte-order mark written by some editors is dropped, not read as an id
        lines = self.split_file.read_text(encoding="utf-8-sig").splitlines()
        self.ids = [line.split()[0] for line in lines if line.strip()]
        if not self.ids:
            raise DataError(self.split_file, "the split file lists no image ids")
        twice = [i for i, n in Counter(self.ids).items() if n > 1]
        if twice:
            raise DataError(
                self.split_file,
                f"{len(twice)} ids are listed more than once (e.g. {twice[0]!r}); each image "
                "must appear once, or it would count twice in training and evaluation",
            )
        for image_id in self.ids:
            for path in self._paths(image_id):
                if not path.is_file():
                    raise DataError(
                        path, f"listed as {image_id!r} in {self.split_file} but missing"
                    )

    def _paths(self, image_id: str) -> tuple[Path, Path, Path]:
        return (
            self.voc_dir / "JPEGImages" / f"{image_id}.jpg",
            self.voc_dir / "SegmentationObject" / f"{image_id}.png",
            self.voc_dir / "SegmentationClass" / f"{image_id}.png",
        )

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> Path:
        """Path of the JPEG of sample ``index``."""
        return self._paths(self.ids[index])[0]

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        jpg, obj_png, cls_png = self._paths(image_id)
        image = read_rgb(jpg)
        objects = read_index_png(obj_png)
        classes = read_index_png(cls_png)
        check_same_size(obj_png, objects, image.shape[:2])
        check_same_size(cls_png, classes, image.shape[:2])

        instance_ids = np.array(
            [i for i in np.unique(objects) if i not in (0, VOID_INDEX)], dtype=np.int64
        )
        masks = objects[None, :, :] == instance_ids[:, None, None].astype(np.uint8)
        labels = np.empty(len(instance_ids), dtype=np.int64)
        for k, (inst, mask) in enumerate(zip(instance_ids, masks)):
            values = classes[mask]
            values = values[(values >= 1) & (values <= len(VOC_CLASSES))]
            if values.size == 0:
                raise DataError(
                    cls_png,
                    f"instance id {inst} of {obj_png.name} has no class 1..20 at its "
                    f"{int(mask.sum())} pixels",
                )
            counts = np.bincount(values)
            labels[k] = int(np.argmax(counts))
            if counts[labels[k]] != values.size:
                log.debug("%s: instance %d has mixed classes %s", cls_png, inst, counts)
        return {
            "image": image,
            "masks": masks,
            "labels": labels,
            "instance_ids": instance_ids,
            "void": objects == VOID_INDEX,
            "image_id": image_id,
        }

    def __repr__(self) -> str:
        return f"VOCInstanceDataset({self.voc_dir}, {self.image_set!r}, {len(self)} images)"


#: Images per segmentation split of the real VOC2007 (ImageSets/Segmentation/*.txt).
VOC2007_SEGMENTATION_COUNTS = {"train": 209, "val": 213, "trainval": 422, "test": 210}


def voc2007_sources() -> list[dict]:
    """The trainval and test archives (url, filename, md5), from torchvision's own table,
    so the course never carries a second copy of the checksums."""
    from torchvision.datasets.voc import DATASET_YEAR_DICT

    return [DATASET_YEAR_DICT["2007"], DATASET_YEAR_DICT["2007-test"]]


def download_voc2007(
    folder: str | Path | None = None,
    sources: list[dict] | None = None,
    expected_counts: dict | None = None,
    archive_dir: str | Path | None = None,
) -> Path:
    """VOC2007 (trainval and test) extracted in ``folder``, downloaded on first use (about
    900 MB of archives); returns the ``VOCdevkit`` folder for :class:`VOCInstanceDataset`.

    The archives are kept in ``<cache>/voc2007/archives``, extracted into ``<data>/voc2007``
    (:func:`helpers.course.runtime.data_dir`); given ``folder``, both go there unless
    ``archive_dir`` says otherwise. Both are MD5-checked, and every split must list the
    expected number of images with their files before anything is put in place.

    Raises:
        helpers.data.downloads.DownloadError: no network or a wrong checksum.
        DataError: an unexpected layout, naming the archives and the final folder."""
    from ..course.runtime import SMOKE_ENV, cache_dir, data_dir
    from .downloads import fetch_and_extract

    if archive_dir is None:
        archive_dir = cache_dir() / "voc2007" if folder is None else Path(folder)
        archive_dir = archive_dir / "archives"
    folder = Path(folder) if folder is not None else data_dir() / "voc2007"
    sources = sources if sources is not None else voc2007_sources()
    expected = VOC2007_SEGMENTATION_COUNTS if expected_counts is None else expected_counts
    files = [(s["url"], Path(archive_dir) / s["filename"], s["md5"]) for s in sources]
    hint = f"Or set {SMOKE_ENV}=1 to run on the built-in data_example."

    def unpack(archives: list[Path], tmp: Path) -> Path:
        import time

        from torchvision.datasets.utils import extract_archive

        start = time.perf_counter()
        for archive in archives:
            log.info("extracting %s into %s", archive.name, folder)
            extract_archive(str(archive), str(tmp))
        n_files = sum(1 for p in (tmp / "VOCdevkit").rglob("*") if p.is_file())
        log.info("extracted %d files in %.0f s", n_files, time.perf_counter() - start)
        try:
            for image_set, n in expected.items():
                found = len(VOCInstanceDataset(tmp / "VOCdevkit", image_set))  # every file
                if found != n:
                    raise DataError(
                        tmp / "VOCdevkit", f"{image_set} lists {found} images, expected {n}"
                    )
        except DataError as err:
            where = Path(str(err.path).replace(str(tmp), str(folder)))
            names = " and ".join(a.name for a in archives)
            raise DataError(
                where, f"{err.problem} (as extracted from {names}; nothing was put in place)"
            ) from None
        return tmp / "VOCdevkit"

    return fetch_and_extract("VOC2007", files, folder / "VOCdevkit", unpack, hint)
