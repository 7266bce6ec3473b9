"""LabPics Medical: a lazy reader of the real on-disk layout, vessels as one class
(notebooks 00 and 04). ``root`` holds ``Train/`` and ``Test/`` (Zenodo record 4736111)::

    <split>/<sample>/Image.jpg
    <split>/<sample>/Vessels/*.png                 one mask per vessel, non-zero = inside
    <split>/<sample>/Ignore.png                    regions to ignore (optional)
    <split>/<sample>/SemanticMaps/FullImage/*.png  per-class semantic maps (not read here)

Vessel masks may overlap (a vessel seen through another keeps its whole outline). A
sample folder without ``Vessels/`` has no vessel annotation at all (an empty ``Vessels/``
is "zero vessels"): it is skipped, counted in ``ds.skipped`` and reported in one
warning. Anything else that is wrong is an error that names the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .image_files import DataError, check_same_size, read_binary_mask, read_rgb

log = logging.getLogger(__name__)

SPLITS = ("Train", "Test")


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
    """Vessel instances of LabPics Medical's ``split`` (``"Train"`` or ``"Test"``), read
    lazily: construction lists the sample folders (and skips those without ``Vessels/``);
    pixels are read on ``ds[i]``, a dict: ``image`` ``H x W x 3`` uint8 RGB; ``masks``
    ``N x H x W`` bool, one per file of ``Vessels/`` in name order (they may overlap);
    ``labels`` ``N`` int64, all 1 (vessel); ``ignore`` ``H x W`` bool (``Ignore.png``, all
    False without one); ``image_id``, the sample folder's name."""

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
        """The vessel mask files of sample ``index``, in name order: every PNG of
        ``Vessels/`` (what LabPics ships). Hidden files (names starting with ".", such as
        an OS's folder metadata) are not data.

        Raises:
            DataError: anything else there (another format, a folder); the message names it.
        """
        vessels = self.samples[index] / "Vessels"
        paths = []
        for path in sorted(vessels.iterdir()):
            if path.name.startswith("."):
                continue
            if path.suffix.lower() != ".png" or not path.is_file():
                raise DataError(
                    path, "not a vessel mask: LabPics' vessel masks are PNG files, one per vessel"
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

    The archive is kept in ``<cache>/labpics``, extracted into ``<data>/labpics``
    (:func:`helpers.course.runtime.data_dir`); given ``folder``, both go there unless
    ``archive_dir`` says otherwise. No MD5 is known to the course: the download's is logged,
    to pin; its length is checked, then the zip's CRCs and the layout, and an archive that
    fails is deleted so that the next run downloads it again.

    Raises:
        helpers.data.downloads.DownloadError: no network.
        DataError: a corrupt archive or an unexpected layout, naming the archive."""

    from ..course.runtime import SMOKE_ENV, cache_dir, data_dir
    from .downloads import fetch_and_extract

    if archive_dir is None:
        archive_dir = cache_dir() / "labpics" if folder is None else folder
    folder = Path(folder) if folder is not None else data_dir() / "labpics"
    files = [(url, Path(archive_dir) / "LabPicsMedical.zip", None)]
    hint = f"Or set {SMOKE_ENV}=1 to run on the built-in data_example."
    return fetch_and_extract(
        "LabPics Medical", files, folder / "LabPicsMedical", _check_and_unpack, hint
    )


def _check_and_unpack(archives: list[Path], tmp: Path) -> Path:
    """The zip's CRCs and layout checked, unpacked into ``tmp``; returns the folder that
    holds ``Train/`` and ``Test/``. An archive that fails is deleted (the next run
    downloads it again)."""
    import time
    import zipfile

    (archive,) = archives

    def refuse(problem: str) -> DataError:
        archive.unlink(missing_ok=True)  # never left where the next run would trust it
        return DataError(archive, f"{problem}; deleted, run again to download it again")

    log.info("checking and extracting %s", archive.name)
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
    return root
