"""LabPics Medical: a lazy reader of the real on-disk layout (vessels as one class).

Introduced in notebook 00, used for Mask R-CNN fine-tuning in notebook 04.

Layout (``root`` holds ``Train/`` and ``Test/``; the archive is Zenodo record 4736111)::

    <split>/<sample>/Image.jpg
    <split>/<sample>/Vessels/*.png                 one mask per vessel instance, non-zero = inside
    <split>/<sample>/Ignore.png                    regions to ignore (optional), non-zero = ignore
    <split>/<sample>/SemanticMaps/FullImage/*.png  per-class semantic maps (not read here)

Vessel masks may overlap: a vessel seen through another keeps its whole outline.

Skip policy: a sample folder without a ``Vessels/`` folder has no vessel annotation at
all (not "zero vessels", which is an empty ``Vessels/``), so it is skipped. Skipped
samples are counted in ``ds.skipped`` and reported in one warning at construction.
Anything else that is wrong (no ``Image.jpg``, a mask of the wrong size, a corrupt file)
is an error that names the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .image_files import DataError, check_same_size, read_binary_mask, read_rgb

log = logging.getLogger(__name__)

SPLITS = ("Train", "Test")
#: Lossless image formats a vessel mask may come in (the real data set has PNGs).
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
#: Lossy formats: compression blurs a mask's edge, so they cannot hold one exactly.
LOSSY_SUFFIXES = (".jpg", ".jpeg", ".webp")


def find_labpics(root: str | Path) -> Path:
    """The folder that holds ``Train/`` and ``Test/``: ``root`` itself, or the one folder
    the Zenodo archive unpacks to (``LabPicsMedical/``) below it."""
    root = Path(root).expanduser()
    subfolders = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    for candidate in (root, root / "LabPicsMedical", *subfolders):
        if all((candidate / s).is_dir() for s in SPLITS):
            return candidate
    raise DataError(root, "no Train/ and Test/ folders here; pass the LabPics Medical folder")


class LabPicsDataset:
    """Vessel instances of LabPics Medical, read lazily.

    Construction lists sample folders (and skips those without ``Vessels/``, see the
    module docstring); pixels are read on ``ds[i]``.

    Args:
        root: the folder that holds ``Train/`` and ``Test/`` (see :func:`find_labpics`).
        split: ``"Train"`` or ``"Test"`` (``"train"``/``"test"`` are accepted).

    ``ds[i]`` is a dict:
        - ``image``: ``H x W x 3`` ``uint8`` RGB.
        - ``masks``: ``N x H x W`` ``bool``, one per file in ``Vessels/`` in name order;
          masks may overlap.
        - ``labels``: ``N`` ``int64``, all 1 (vessel).
        - ``ignore``: ``H x W`` ``bool``, ``Ignore.png`` (all False if the file is absent).
        - ``image_id``: ``str``, the sample folder's name.
    """

    def __init__(self, root: str | Path, split: str = "Train"):
        split = split.capitalize()
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = find_labpics(root)
        self.split = split
        split_dir = self.root / split
        self.samples: list[Path] = []
        self.skipped: list[Path] = []
        for sample in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            if not (sample / "Image.jpg").is_file():
                raise DataError(sample / "Image.jpg", "sample folder has no Image.jpg")
            vessels = sample / "Vessels"
            if vessels.is_dir():
                self.samples.append(sample)
            elif vessels.exists():
                raise DataError(vessels, "is a file, not a folder of vessel masks")
            else:
                self.skipped.append(sample)
        if self.skipped:
            log.warning(
                "LabPics %s: skipped %d of %d samples without a Vessels/ folder (first: %s)",
                split,
                len(self.skipped),
                len(self.skipped) + len(self.samples),
                self.skipped[0],
            )

    @property
    def ids(self) -> list[str]:
        """The samples' ids (their folder names), in reading order."""
        return [sample.name for sample in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def image_path(self, index: int) -> Path:
        """Path of the ``Image.jpg`` of sample ``index``."""
        return self.samples[index] / "Image.jpg"

    def mask_paths(self, index: int) -> list[Path]:
        """The vessel mask files of sample ``index``, in name order: every file of
        ``Vessels/`` in a lossless image format (:data:`MASK_SUFFIXES`). Hidden files
        (names starting with ".", such as an OS's folder metadata) are not data.

        Raises:
            DataError: a file there is a lossy image (JPEG: its compression blurs the
                mask's edge) or not an image at all; the message names it.
        """
        vessels = self.samples[index] / "Vessels"
        paths = []
        for path in sorted(vessels.iterdir()):
            suffix = path.suffix.lower()
            if path.name.startswith("."):
                continue
            if suffix in LOSSY_SUFFIXES:
                raise DataError(
                    path,
                    f"a vessel mask in a lossy format ({suffix}): compression blurs its edge, "
                    "so it cannot hold the mask exactly; save it as PNG",
                )
            if suffix not in MASK_SUFFIXES or not path.is_file():
                raise DataError(
                    path, f"not a vessel mask (expected an image file: {', '.join(MASK_SUFFIXES)})"
                )
            paths.append(path)
        return paths

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image = read_rgb(sample / "Image.jpg")
        hw = image.shape[:2]
        masks = []
        for path in self.mask_paths(index):
            mask = read_binary_mask(path)
            check_same_size(path, mask, hw)
            masks.append(mask)
        ignore_path = sample / "Ignore.png"
        if ignore_path.is_file():
            ignore = read_binary_mask(ignore_path)
            check_same_size(ignore_path, ignore, hw)
        else:
            ignore = np.zeros(hw, dtype=bool)
        masks_arr = np.stack(masks) if masks else np.zeros((0, *hw), dtype=bool)
        return {
            "image": image,
            "masks": masks_arr,
            "labels": np.ones(len(masks), dtype=np.int64),
            "ignore": ignore,
            "image_id": sample.name,
        }

    def __repr__(self) -> str:
        return (
            f"LabPicsDataset({self.root}, {self.split!r}, {len(self)} samples, "
            f"{len(self.skipped)} skipped)"
        )


LABPICS_URL = "https://zenodo.org/records/4736111/files/LabPicsMedical.zip?download=1"


def download_labpics(
    folder: str | Path | None = None,
    url: str = LABPICS_URL,
    archive_dir: str | Path | None = None,
) -> Path:
    """LabPics Medical extracted in ``folder``, downloaded on first use (~281 MB, Zenodo
    record 4736111); returns the folder that holds ``Train/`` and ``Test/``.

    By default the archive is kept in ``<cache>/labpics`` (Google Drive in Colab) and
    extracted into ``<data>/labpics`` (:func:`helpers.course.runtime.data_dir`: the runtime's
    local disk in Colab), so a new Colab runtime extracts again without downloading.
    Given ``folder``, both go there unless ``archive_dir`` says otherwise.

    Zenodo lists an MD5 for every file of a record (on the record's page, and as
    ``checksum`` in its API, ``https://zenodo.org/api/records/4736111``), but it could not
    be read where this was written, so none is written into the code: the MD5 of what
    was downloaded is logged (compare it with the record's, and pin it if you need to),
    the transfer's length is checked
    against the server's (:func:`helpers.data.downloads.fetch`), and what can be checked after
    it is checked: the zip's own CRCs (``testzip``), the layout (``Train/`` and ``Test/``
    with sample folders holding ``Image.jpg``). An archive that fails is deleted, so the
    next run downloads it again. Extraction goes to a temporary folder that is moved into
    place only after the checks, with a ``.complete`` marker.

    Raises:
        helpers.data.downloads.DownloadError: no network.
        DataError: a corrupt archive or an unexpected layout; the message names the
            archive (never the temporary folder).
    """

    from ..course.runtime import SMOKE_ENV, cache_dir, data_dir
    from .downloads import DownloadError, exclusive, fetch, missing_files_error

    if archive_dir is None:
        archive_dir = cache_dir() / "labpics" if folder is None else folder
    folder = Path(folder) if folder is not None else data_dir() / "labpics"
    target = folder / "LabPicsMedical"
    if (target / ".complete").is_file():
        return target
    with exclusive(target, "LabPics Medical"):  # one process fetches and extracts
        if (target / ".complete").is_file():  # done by another while this one waited
            return target
        dest = Path(archive_dir) / "LabPicsMedical.zip"
        try:
            archive = fetch(url, dest, md5=None, what="LabPics Medical archive")
        except DownloadError as err:
            if not err.url:
                raise
            hint = f"Or set {SMOKE_ENV}=1 to run on the built-in data_example."
            raise missing_files_error("LabPics Medical", [err], hint) from None
        return _check_and_extract(archive, folder, target)


def _check_and_extract(archive: Path, folder: Path, target: Path) -> Path:
    import shutil
    import time
    import zipfile

    from .downloads import temporary_dir

    def refuse(problem: str) -> DataError:
        archive.unlink(missing_ok=True)  # never left where the next run would trust it
        return DataError(archive, f"{problem}; deleted, run again to download it again")

    with temporary_dir(folder, ".extract-", locked=True) as tmp:
        log.info("checking and extracting %s into %s", archive.name, folder)
        start = time.perf_counter()
        try:
            with zipfile.ZipFile(archive) as zf:
                bad = zf.testzip()
                if bad is not None:
                    raise refuse(f"corrupt member {bad!r}")
                zf.extractall(tmp / "unpacked")
        except zipfile.BadZipFile as err:
            raise refuse(f"not a readable zip archive ({err})") from None
        try:
            root = find_labpics(tmp / "unpacked")  # the archive's top folder, whatever its name
        except DataError:
            raise refuse("no Train/ and Test/ folders in it") from None
        counts = {
            s: sum(1 for p in (root / s).iterdir() if (p / "Image.jpg").is_file()) for s in SPLITS
        }
        if not all(counts.values()):
            raise refuse(f"expected samples with Image.jpg in Train/ and Test/, found {counts}")
        n_files = sum(1 for p in root.rglob("*") if p.is_file())
        log.info("extracted %d files in %.0f s", n_files, time.perf_counter() - start)
        log.info("LabPics Medical: %s samples", counts)
        if target.exists():
            shutil.rmtree(target)
        root.replace(target)
        (target / ".complete").write_text("ok\n")
    return target
