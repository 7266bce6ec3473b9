"""helpers.sam.items: instances moved into SAM's low-res frame as SAM's own transform moves
images, and low-res cells back to the pixels SAM encodes at their centres; for the
official models' frame (1024, a 64 x 64 grid) and the small model's (256, 16 x 16), on
images of either orientation."""

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from helpers.sam.items import frame_side, low_res_side, lowres_cell_to_pixel, lowres_targets
from helpers.sam.predict import ImageEmbedding

FRAMES = [(1024, 64), (256, 16)]
SIZES = [(300, 500), (500, 333), (97, 97)]


def _embedding(size, frame, grid):
    input_size = ResizeLongestSide(frame).get_preprocess_shape(*size, frame)
    return ImageEmbedding(torch.zeros(1, 8, grid, grid), size, tuple(input_size))


@pytest.mark.parametrize("frame, grid", FRAMES)
@pytest.mark.parametrize("size", SIZES)
def test_the_frames_follow_the_embedding(size, frame, grid):
    emb = _embedding(size, frame, grid)
    assert frame_side(emb) == frame and low_res_side(emb) == 4 * grid


@pytest.mark.parametrize("frame, grid", FRAMES)
@pytest.mark.parametrize("size", SIZES)
def test_lowres_targets_follow_sams_resize_and_padding(size, frame, grid):
    """The top half of the image, in the low-res frame: the rows of the resized image's
    top half are foreground, the padding below (or beside) the image is not valid."""
    h, w = size
    emb = _embedding(size, frame, grid)
    (hi, wi), side = emb.input_size, 4 * grid
    masks = np.zeros((1, h, w), bool)
    masks[:, : h // 2, :] = True
    targets, valid = lowres_targets(masks, np.zeros((h, w), bool), emb)
    assert targets.shape == (1, side, side) and valid.shape == (side, side)
    cell = frame / side
    assert valid.any(dim=1).nonzero().max().item() + 1 == pytest.approx(hi / cell, abs=1)
    assert valid.any(dim=0).nonzero().max().item() + 1 == pytest.approx(wi / cell, abs=1)
    rows_fg = targets[0].any(dim=1).nonzero().flatten()
    assert rows_fg.max().item() + 1 == pytest.approx(hi / 2 / cell, abs=1)


@pytest.mark.parametrize("frame, grid", FRAMES)
@pytest.mark.parametrize("size", SIZES)
def test_a_low_res_cell_maps_to_the_pixel_sam_encodes_at_its_centre(size, frame, grid):
    """Oracle: SAM's own arithmetic. ResizeLongestSide scales the index, the prompt
    encoder adds half a pixel; the result must be the cell's centre, k c + k / 2 with k
    input pixels per cell, on both axes (inside the image)."""
    emb = _embedding(size, frame, grid)
    k = frame / (4 * grid)
    (hi, wi) = emb.input_size
    rows = np.array([0, (hi / k) // 3, hi / k - 1]).astype(int)
    cols = np.array([0, (wi / k) // 2, wi / k - 1]).astype(int)
    xy = lowres_cell_to_pixel(rows, cols, emb)
    assert (xy >= 0).all() and (xy[:, 0] <= size[1] - 1).all() and (xy[:, 1] <= size[0] - 1).all()
    moved = ResizeLongestSide(frame).apply_coords(xy.astype(np.float64), size) + 0.5
    s_x, s_y = wi / size[1], hi / size[0]  # not clipped at the image's last pixel
    inside = ((k * cols + k / 2 - 0.5) / s_x <= size[1] - 1) & (
        (k * rows + k / 2 - 0.5) / s_y <= size[0] - 1
    )
    assert inside[:2].all()
    np.testing.assert_allclose(moved[inside, 0], k * cols[inside] + k / 2, atol=1e-3)
    np.testing.assert_allclose(moved[inside, 1], k * rows[inside] + k / 2, atol=1e-3)
