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
    """Read a photo as RGB.

    Grayscale, palette, CMYK and RGBA files are converted to RGB (alpha is dropped, not
    composited). EXIF orientation is *not* applied: label masks are drawn on the stored
    pixel grid, so the photo must stay on it too.

    Returns:
        ``H x W x 3`` ``uint8`` array, values 0..255, channel order R, G, B.
    """
    img = _open_fully(path)
    if img.mode == "I;16" or img.mode == "I":
        # 16-bit grayscale: scale to 8 bit before converting.
        arr = np.asarray(img, dtype=np.float64)
        arr = np.clip(arr / max(arr.max(), 1.0) * 255.0, 0, 255).astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
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
    """Read a mask image where any non-zero pixel is inside (LabPics' Vessels/*.png and
    Ignore.png). For multi-channel files a pixel is inside when any colour channel is
    non-zero (alpha is not a colour channel).

    Returns:
        ``H x W`` ``bool`` array.
    """
    img = _open_fully(path)
    arr = np.asarray(img)
    if arr.ndim == 3:
        n_colour = {"RGBA": 3, "LA": 1}.get(img.mode, arr.shape[2])
        return np.any(arr[:, :, :n_colour] > 0, axis=2)
    return arr > 0


def check_same_size(path: str | Path, mask: np.ndarray, image_hw: tuple[int, int]) -> None:
    """Raise :class:`DataError` naming ``path`` when ``mask`` is not ``image_hw`` (H, W)."""
    if tuple(mask.shape[:2]) != tuple(image_hw):
        h, w = mask.shape[:2]
        raise DataError(
            path,
            f"mask is {w}x{h} (width x height) but its image is {image_hw[1]}x{image_hw[0]}",
        )
