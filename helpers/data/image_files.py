"""Reading photos and label PNGs from disk, with errors that name the file.

Introduced in notebook 00. Every reader in the course goes through these functions, so a
truncated JPEG, an RGB PNG where a palette PNG belongs or a mask of the wrong size fails
the same way everywhere: a :class:`DataError` whose message starts with the path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class DataError(ValueError):
    """A data file is missing, unreadable or inconsistent; the message names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _open_fully(path: str | Path) -> Image.Image:
    """Open and decode the whole file (``Image.open`` alone is lazy and would not see a
    truncated tail)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        img = Image.open(path)
        img.load()
    except UnidentifiedImageError:
        raise DataError(path, "not an image file PIL can read") from None
    except (OSError, SyntaxError) as err:
        # PIL reports truncated and corrupt data as OSError ("image file is truncated",
        # "broken data stream") or SyntaxError (bad PNG chunk).
        raise DataError(path, f"corrupt or truncated image ({err})") from None
    return img


def read_rgb(path: str | Path) -> np.ndarray:
    """Read a photo (VOC's and LabPics' JPEGs) as RGB: an 8-bit colour photo as it is, a
    grayscale one as three equal channels. EXIF orientation is *not* applied: label
    masks are drawn on the stored pixel grid, so the photo must stay on it too.

    Returns:
        ``H x W x 3`` ``uint8`` array, values 0..255, channel order R, G, B.

    Raises:
        DataError: missing, unreadable or truncated, or an image of another kind (alpha,
            palette, CMYK, 16-bit: nothing the data sets ship); the message names it.
    """
    img = _open_fully(path)
    if img.mode not in ("RGB", "L"):
        raise DataError(path, f"expected an 8-bit RGB or grayscale photo, got mode {img.mode}")
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_index_png(path: str | Path) -> np.ndarray:
    """Read a label PNG whose pixel values are indices (VOC's SegmentationObject/Class).

    VOC stores these as palette ("P") PNGs; the palette only colours them, the index is
    the label. An 8-bit grayscale ("L") PNG holds the same indices and is accepted.
    An RGB(A) PNG is refused: its colours would have to be mapped back through a palette
    that is not in the file.

    Returns:
        ``H x W`` ``uint8`` array of indices.
    """
    img = _open_fully(path)
    if img.mode not in ("P", "L"):
        raise DataError(
            path,
            f"expected a palette (mode P) or 8-bit grayscale (mode L) PNG of label "
            f"indices, got mode {img.mode}",
        )
    return np.asarray(img, dtype=np.uint8).copy()


def read_binary_mask(path: str | Path) -> np.ndarray:
    """Read a one-channel mask image where any non-zero pixel is inside (LabPics'
    ``Vessels/*.png`` and ``Ignore.png``: 8-bit grayscale, values 0 and 1).

    Returns:
        ``H x W`` ``bool`` array.

    Raises:
        DataError: missing, unreadable, or not a one-channel image (mode L or 1); the
            message names the file.
    """
    img = _open_fully(path)
    if img.mode not in ("L", "1"):
        raise DataError(path, f"expected a one-channel mask (mode L or 1), got mode {img.mode}")
    return np.asarray(img) > 0


def check_same_size(path: str | Path, mask: np.ndarray, image_hw: tuple[int, int]) -> None:
    """Raise :class:`DataError` naming ``path`` when ``mask`` is not ``image_hw`` (H, W)."""
    if tuple(mask.shape[:2]) != tuple(image_hw):
        h, w = mask.shape[:2]
        raise DataError(
            path,
            f"mask is {w}x{h} (width x height) but its image is {image_hw[1]}x{image_hw[0]}",
        )
