"""helpers.data.image_files: photos and label files read as the data sets ship them, and
anything else refused with an error that names the file."""

import numpy as np
import pytest
from PIL import Image

from helpers.data.image_files import DataError, read_binary_mask, read_index_png, read_rgb


def test_read_rgb_converts_grayscale_photo_to_three_equal_channels(tmp_path):
    gray = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    Image.fromarray(gray, mode="L").save(tmp_path / "g.jpg", quality=100)
    rgb = read_rgb(tmp_path / "g.jpg")
    assert rgb.shape == (12, 10, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])


@pytest.mark.parametrize("mode, channels", [("RGBA", 4), ("CMYK", 4), ("I;16", 0), ("P", 0)])
def test_read_rgb_refuses_what_no_data_set_ships_naming_the_mode(tmp_path, mode, channels):
    shape = (5, 6, channels) if channels else (5, 6)
    path = tmp_path / ("photo.tif" if mode in ("CMYK", "I;16") else "photo.png")
    if mode == "I;16":  # a 16-bit grayscale image
        Image.fromarray(np.full(shape, 4000, np.uint16)).save(path)
    else:
        Image.fromarray(np.full(shape, 7, np.uint8), mode=mode).save(path)
    with pytest.raises(
        DataError, match=rf"photo\.\w+: expected an 8-bit RGB or grayscale .*{mode}"
    ):
        read_rgb(path)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_image_error_names_the_file(tmp_path, suffix):
    rng = np.random.default_rng(0)
    path = tmp_path / f"cut{suffix}"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        DataError, match="cut" + suffix.replace(".", r"\.") + ".*(truncated|corrupt)"
    ):
        read_rgb(path)


def test_missing_file_error_names_the_file(tmp_path):
    with pytest.raises(DataError, match="nope.png: file not found"):
        read_index_png(tmp_path / "nope.png")


def test_index_png_accepts_grayscale_with_the_same_indices_as_palette(tmp_path):
    idx = np.array([[0, 1, 2], [255, 2, 1]], np.uint8)
    pal = Image.fromarray(idx, mode="P")
    pal.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    pal.save(tmp_path / "p.png")
    Image.fromarray(idx, mode="L").save(tmp_path / "l.png")
    assert np.array_equal(read_index_png(tmp_path / "p.png"), idx)
    assert np.array_equal(read_index_png(tmp_path / "l.png"), idx)


def test_index_png_refuses_rgb_png(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="rgb.png: expected a palette .* got mode RGB"):
        read_index_png(tmp_path / "rgb.png")


def test_binary_mask_any_nonzero_pixel_is_inside(tmp_path):
    arr = np.array([[0, 1, 255], [0, 0, 2]], np.uint8)
    Image.fromarray(arr, mode="L").save(tmp_path / "m.png")
    mask = read_binary_mask(tmp_path / "m.png")
    assert mask.dtype == bool and mask.tolist() == [[False, True, True], [False, False, True]]


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_binary_mask_of_several_channels_or_a_palette_is_refused_naming_the_file(tmp_path, mode):
    shape = (3, 3) if mode == "P" else (3, 3, len(mode))
    Image.fromarray(np.zeros(shape, np.uint8), mode=mode).save(tmp_path / "m.png")
    with pytest.raises(DataError, match=rf"m\.png: expected a one-channel mask .*{mode}"):
        read_binary_mask(tmp_path / "m.png")
