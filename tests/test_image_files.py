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


def test_read_rgb_drops_alpha_of_rgba_photo(tmp_path):
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    rgb = read_rgb(tmp_path / "a.png")
    assert rgb.shape == (5, 6, 3)
    assert (rgb[..., 0] == 200).all() and (rgb[..., 1:] == 0).all()


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


def test_binary_mask_any_colour_channel_counts_alpha_does_not(tmp_path):
    arr = np.zeros((3, 3, 4), np.uint8)
    arr[0, 0, 2] = 1  # blue only: inside
    arr[1, 1, 3] = 255  # alpha only: outside
    Image.fromarray(arr, mode="RGBA").save(tmp_path / "m.png")
    mask = read_binary_mask(tmp_path / "m.png")
    assert mask.dtype == bool and mask.sum() == 1 and mask[0, 0]
