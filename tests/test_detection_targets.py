"""helpers.detection.targets: torchvision detection targets from a reader's sample (boxes on
pixel edges, zero-area instances dropped), against torchvision's own functions."""

import numpy as np
import pytest
import torch
import torchvision

from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.labpics import LabPicsDataset
from helpers.data.voc import VOCInstanceDataset
from helpers.detection.targets import detection_target, masks_to_boxes_xyxy


def test_boxes_sit_on_pixel_edges_one_wider_than_torchvision_centres():
    masks = torch.zeros(3, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 7, 11] = True  # one pixel in the corner
    masks[2, 0:10:3, 1:4] = True  # not connected
    boxes = masks_to_boxes_xyxy(masks)
    centres = torchvision.ops.masks_to_boxes(masks)  # the outside oracle
    assert torch.equal(boxes, centres + torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert boxes[1].tolist() == [11.0, 7.0, 12.0, 8.0]


def test_boxes_equal_torchvision_on_random_masks_touching_every_border():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(40, 9, 13, generator=g) > 0.93
    masks[0] = False
    masks[0, 0, 0] = True  # top-left pixel only
    masks[1] = False
    masks[1, 8, 12] = True  # bottom-right pixel only
    masks[2] = True  # the whole canvas
    masks = masks[masks.flatten(1).any(1)]
    expected = torchvision.ops.masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert torch.equal(masks_to_boxes_xyxy(masks), expected)
    assert masks_to_boxes_xyxy(masks[:3]).tolist() == [[0, 0, 1, 1], [12, 8, 13, 9], [0, 0, 13, 9]]


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8])
def test_pixel_counts_equal_torchs_sum(dtype):
    from helpers.detection.targets import pixel_counts

    masks = (torch.rand(5, 7, 11, generator=torch.Generator().manual_seed(1)) > 0.6).to(dtype)
    masks[2] = 0
    counts = pixel_counts(masks)
    assert counts.dtype == torch.int64
    assert torch.equal(counts, masks.flatten(1).long().sum(1)) and counts[2] == 0
    assert torch.equal(pixel_counts(masks[:, 1:, ::2]), masks[:, 1:, ::2].flatten(1).long().sum(1))


def test_empty_mask_has_no_box():
    with pytest.raises(ValueError, match="empty mask"):
        masks_to_boxes_xyxy(torch.zeros(1, 4, 4, dtype=torch.bool))


def test_detection_target_drops_zero_area_instances_with_their_labels():
    masks = np.zeros((3, 8, 8), bool)
    masks[0, 1:3, 1:3] = True
    masks[2, 4:8, 5:7] = True
    t = detection_target({"masks": masks, "labels": np.array([4, 9, 7])}, image_id=11)
    assert t["labels"].tolist() == [4, 7]
    assert t["area"].tolist() == [4.0, 8.0]
    assert t["boxes"].tolist() == [[1, 1, 3, 3], [5, 4, 7, 8]]
    assert t["masks"].dtype == torch.uint8 and t["masks"].shape == (2, 8, 8)
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
    assert t["iscrowd"].tolist() == [0, 0] and t["image_id"] == 11


def test_label_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 labels for 3 masks"):
        detection_target({"masks": np.zeros((3, 4, 4), bool), "labels": [1, 2]}, 0)


@pytest.mark.parametrize("reader", ["voc", "labpics"])
def test_targets_train_torchvision_mask_rcnn_without_complaint(reader):
    """The outside oracle for the contract: torchvision's Mask R-CNN accepts the target
    in training mode (it asserts on box shapes, degenerate boxes and dtypes)."""
    if reader == "voc":
        ds, n_classes = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train"), 21
    else:
        ds, n_classes = LabPicsDataset(DATA_EXAMPLE / "LabPicsMedical", "Train"), 2
    sample = ds[0]
    target = detection_target(sample, 0)
    image = torch.from_numpy(sample["image"]).permute(2, 0, 1).float() / 255
    torch.manual_seed(0)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=n_classes, min_size=160, max_size=200
    )
    model.train()
    losses = model([image], [target])
    assert set(losses) >= {"loss_mask", "loss_box_reg", "loss_classifier"}
    assert all(torch.isfinite(v) for v in losses.values())
    # boxes and areas are those of the masks, as torchvision computes boxes from masks
    # (inclusive last pixel; a box on pixel edges ends one further)
    edges = torchvision.ops.masks_to_boxes(target["masks"]) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    torch.testing.assert_close(target["boxes"], edges)
    assert target["area"].tolist() == target["masks"].flatten(1).sum(1).float().tolist()
    assert len(target["masks"]) == len(sample["masks"]) == len(target["labels"])


def test_labels_given_to_detection_target_replace_the_samples():
    masks = np.zeros((2, 6, 6), bool)
    masks[0, :2, :2] = True
    masks[1, 3:, 3:] = True
    t = detection_target({"masks": masks, "labels": np.array([4, 9])}, 0, labels=np.ones(2))
    assert t["labels"].tolist() == [1, 1]
