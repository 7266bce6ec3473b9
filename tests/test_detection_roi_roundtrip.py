"""helpers.detection.roi_roundtrip: the mask round trip through RoI features, each way of
pooling measured by the function it names."""

import pytest
import torch
import torchvision


def test_roi_align_recovers_small_object_masks_better_than_roi_pool():
    from helpers.detection.roi_roundtrip import roundtrip_experiment

    table = roundtrip_experiment(radii=(8,), n_objects=6)
    assert table[8]["align"] > table[8]["pool"] + 0.1


@pytest.mark.parametrize("pool, aligned", [("align_false", False), ("align", True)])
def test_roundtrip_uses_the_roi_align_it_names(pool, aligned):
    """Each column of the small-object experiment against torchvision's own kernel."""
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    from helpers.detection.roi_roundtrip import mask_roundtrip_iou
    from helpers.metrics import mask_iou

    yy, xx = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    mask = ((xx - 30.3) / 9) ** 2 + ((yy - 25.8) / 7) ** 2 <= 1
    ys, xs = torch.nonzero(mask, as_tuple=True)
    box = (xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1)
    feat = torch.nn.functional.avg_pool2d(mask[None, None].float(), 8)
    rois = torch.tensor([[0.0, *map(float, box)]])
    crop = torchvision.ops.roi_align(feat, rois, 14, 1 / 8, 2, aligned=aligned)
    expected = mask_iou(
        paste_masks_in_image(crop, rois[:, 1:], (64, 64), padding=1)[0, 0] > 0.5, mask
    )
    assert mask_roundtrip_iou(mask, box, 8, pool) == pytest.approx(expected, abs=1e-6)


def test_the_rounded_box_variant_rounds_the_box_as_roi_pool_does():
    """align_rounded: torchvision's roi_align (aligned=True) on RoI Pool's rounded box,
    pasted into the exact box."""
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    from helpers.detection.roi_roundtrip import mask_roundtrip_iou
    from helpers.metrics import mask_iou

    yy, xx = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    mask = ((xx - 30.3) / 9) ** 2 + ((yy - 25.8) / 7) ** 2 <= 1
    ys, xs = torch.nonzero(mask, as_tuple=True)
    # x 22..40, y 19..33 on pixel edges
    box = (xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1)
    # RoI Pool's rounding at stride 8: round(22/8)=3 .. round(40/8)=5 inclusive -> cells 3..5
    rounded = torch.tensor([[0.0, 24.0, 16.0, 48.0, 40.0]])  # y: round(19/8)=2 .. round(33/8)=4
    feat = torch.nn.functional.avg_pool2d(mask[None, None].float(), 8)
    crop = torchvision.ops.roi_align(feat, rounded, 14, 1 / 8, 2, aligned=True)
    exact = torch.tensor([[float(v) for v in box]])
    expected = mask_iou(paste_masks_in_image(crop, exact, (64, 64), padding=1)[0, 0] > 0.5, mask)
    assert mask_roundtrip_iou(mask, box, 8, "align_rounded") == pytest.approx(expected, abs=1e-6)
