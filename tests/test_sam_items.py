"""helpers.sam.items: instances moved into SAM's low-res frame as SAM's own transform moves
images, and low-res cells back to the pixels SAM encodes at their centres."""

import numpy as np
import pytest
import torch

from helpers.sam.items import lowres_targets


def test_lowres_targets_follow_sams_resize_and_padding():
    h, w = 300, 500  # landscape: resized to 1024 x 614, padded at the bottom
    masks = np.zeros((1, h, w), bool)
    masks[:, : h // 2, :] = True  # top half of the image
    void = np.zeros((h, w), bool)
    targets, valid = lowres_targets(masks, void, (614, 1024))
    assert targets.shape == (1, 256, 256) and valid.shape == (256, 256)
    rows_valid = valid.any(dim=1).nonzero().flatten()
    assert rows_valid.max().item() + 1 == pytest.approx(614 / 4, abs=1)  # padding is invalid
    rows_fg = targets[0].any(dim=1).nonzero().flatten()
    assert rows_fg.max().item() + 1 == pytest.approx(614 / 8, abs=1)  # half of the real rows


def test_a_low_res_cell_maps_to_the_pixel_sam_encodes_at_its_centre():
    """Oracle: SAM's own arithmetic. ResizeLongestSide scales the index, the prompt
    encoder adds half a pixel; the result must be the cell's centre, 4c + 2, on both axes."""
    from segment_anything.utils.transforms import ResizeLongestSide

    from helpers.sam.items import lowres_cell_to_pixel
    from helpers.sam.predict import ImageEmbedding

    emb = ImageEmbedding(torch.zeros(1), (300, 500), (614, 1024))  # landscape
    rows, cols = np.array([10, 40, 70]), np.array([20, 100, 200])
    xy = lowres_cell_to_pixel(rows, cols, emb)
    moved = ResizeLongestSide(1024).apply_coords(xy.astype(np.float64), (300, 500)) + 0.5
    np.testing.assert_allclose(moved[:, 0], 4 * cols + 2, atol=1e-3)
    np.testing.assert_allclose(moved[:, 1], 4 * rows + 2, atol=1e-3)
