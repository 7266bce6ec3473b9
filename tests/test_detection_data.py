"""helpers.detection.data: LabPics samples as torchvision detection pairs (lazy, RGB in
[0, 1]), the v2 training transforms, the ignore policy and the seeded shuffle."""

import numpy as np
import pytest
import torch
import torchvision
from torchvision import tv_tensors
from torchvision.transforms import v2

from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.labpics import LabPicsDataset
from helpers.detection.data import (
    LabPicsDetection,
    SeededShuffle,
    ZoomForModel,
    collate,
    eval_transforms,
    ignored_instances,
    model_working_size,
    train_transforms,
)
from helpers.detection.model import (
    SMOKE_MODEL_KWARGS,
    check_input_contract,
)

LABPICS = DATA_EXAMPLE / "LabPicsMedical"


SIZES = dict(min_size=SMOKE_MODEL_KWARGS["min_size"], max_size=SMOKE_MODEL_KWARGS["max_size"])


def test_dataset_gives_rgb_floats_in_0_1_matching_the_reader_and_reads_lazily():
    reader = LabPicsDataset(LABPICS, "Test")
    calls = []

    class Counting:
        def __len__(self):
            return len(reader)

        def __getitem__(self, i):
            calls.append(i)
            return reader[i]

    ds = LabPicsDetection(Counting())
    assert calls == []  # nothing read at construction
    image, target = ds[2]
    assert calls == [2]
    assert image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    expected = torch.from_numpy(reader[2]["image"]).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(image.as_subclass(torch.Tensor), expected)
    check_input_contract([image])
    assert target["masks"].dtype == torch.uint8 and target["boxes"].dtype == torch.float32
    assert (
        len(target["labels"]) == len(target["masks"]) == len(target["boxes"]) == len(target["area"])
    )


def test_training_transforms_keep_boxes_masks_and_labels_together():
    torch.manual_seed(0)
    ds = LabPicsDetection(LabPicsDataset(LABPICS, "Train"), train_transforms(**SIZES))
    for i in range(len(ds)):
        image, t = ds[i]
        assert image.shape[1:] == t["masks"].shape[1:]
        assert len(t["labels"]) == len(t["masks"]) == len(t["boxes"]) == len(t["iscrowd"])
        assert t["masks"].flatten(1).any(1).all()  # no instance without a pixel
        tight = torchvision.ops.masks_to_boxes(t["masks"]) + torch.tensor([0.0, 0.0, 1.0, 1.0])
        assert torch.equal(t["boxes"].as_subclass(torch.Tensor), tight)  # the masks' own boxes
    images, targets = collate([ds[0], ds[1]])
    assert len(images) == len(targets) == 2


@pytest.mark.parametrize("h, w", [(1080, 1920), (1920, 1080), (480, 640), (100, 1000), (500, 777)])
def test_zoom_for_model_outputs_what_the_models_own_resize_would_give(h, w):
    """Oracle: torchvision's GeneralizedRCNNTransform, the resize inside Mask R-CNN. Our
    output is the size it picks for the photo, and at that size it resizes no more."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    model_resize = GeneralizedRCNNTransform(640, 1024, [0.0] * 3, [1.0] * 3).eval()
    image = tv_tensors.Image(torch.zeros(3, h, w))
    picked = model_resize([image.as_subclass(torch.Tensor)])[0].image_sizes[0]
    assert model_working_size(h, w, 640, 1024) == tuple(picked)
    out = ZoomForModel(640, 1024, scale=(1.0, 1.0))(image)
    assert tuple(out.shape[1:]) == tuple(picked)
    again = model_resize([out.as_subclass(torch.Tensor)])[0].image_sizes[0]
    assert tuple(again) == tuple(picked)


@pytest.mark.parametrize("s", [0.8, 1.0, 1.25])
def test_zoom_for_model_is_random_affine_scale_then_the_models_resize(s):
    """Oracle: what the old path did, v2.RandomAffine(scale) about the centre at the
    photo's size, followed by the model's resize to its working size."""
    h, w = 216, 384
    masks = torch.zeros(3, h, w, dtype=torch.uint8)
    masks[0, 20:90, 30:200] = 1  # a box-shaped object near the top left
    masks[1, 100:210, 250:380] = 1  # one that a zoom-in pushes over the edge
    masks[2, 100:116, 180:200] = 1  # a small one at the centre
    image = tv_tensors.Image((masks * torch.tensor([60, 120, 180]).view(3, 1, 1)).to(torch.uint8))
    target = tv_tensors.Mask(masks)
    ours = ZoomForModel(96, 160, scale=(s, s))(image, target)[1]
    affine = v2.RandomAffine(degrees=0, scale=(s, s))(image, target)[1]
    out = model_working_size(h, w, 96, 160)
    old = torch.nn.functional.interpolate(affine[None].float(), size=out, mode="nearest")[0]
    assert ours.shape == old.shape == (3, *out)
    for a, b in zip(ours.bool(), old.bool()):
        iou = (a & b).sum() / (a | b).sum()
        assert iou > 0.9, f"IoU {iou:.3f} at scale {s}"
    area_ratio = ours[0].sum() / masks[0].sum() / (out[0] / h) ** 2
    assert area_ratio == pytest.approx(s * s, rel=0.08)  # s > 1 enlarges objects


def test_an_instance_zoomed_out_of_the_canvas_leaves_with_its_label():
    class Reader:
        def __len__(self):
            return 1

        def __getitem__(self, i):
            masks = np.zeros((3, 100, 200), bool)
            masks[0, 0:4, 0:4] = True  # in the corner: a zoom of 1.25 crops it away
            masks[1, 40:60, 90:120] = True
            masks[2, 10:30, 150:190] = True
            return {
                "image": np.full((100, 200, 3), 128, np.uint8),
                "masks": masks,
                "labels": np.array([7, 8, 9]),
                "ignore": np.zeros((100, 200), bool),
            }

    ds = LabPicsDetection(Reader(), train_transforms(100, 200, scale=(1.25, 1.25)))
    _, t = ds[0]
    assert t["labels"].tolist() == [8, 9]
    assert len(t["masks"]) == len(t["boxes"]) == len(t["area"]) == len(t["iscrowd"]) == 2
    assert t["masks"].flatten(1).any(1).all()


def test_zoom_for_model_rejects_a_bad_scale_range():
    with pytest.raises(ValueError, match="scale"):
        ZoomForModel(640, 1024, scale=(1.25, 0.8))


def test_area_after_the_training_transforms_is_each_masks_pixel_count():
    """COCO's area (small / medium / large objects) must describe the transformed masks,
    not the originals: a scale jitter of 1.25 changes an area by 1.56x."""
    ds = LabPicsDetection(
        LabPicsDataset(LABPICS, "Train"), train_transforms(**SIZES, scale=(1.25, 1.25))
    )
    changed = 0
    for seed in range(3):
        torch.manual_seed(seed)
        for i in range(len(ds)):
            _, t = ds[i]
            counted = t["masks"].flatten(1).sum(1).float()
            assert t["area"].tolist() == counted.tolist()
            original = LabPicsDataset(LABPICS, "Train")[i]["masks"]
            changed += int(len(counted) and counted.sum() != original.sum())
    assert changed > 0  # the transforms did change the masks


def test_instances_mostly_inside_ignore_are_left_out_of_training_targets():
    masks = np.zeros((2, 10, 10), bool)
    masks[0, :4, :4] = True
    masks[1, 5:, 5:] = True
    ignore = np.zeros((10, 10), bool)
    ignore[:3, :4] = True  # 12 of instance 0's 16 pixels
    assert ignored_instances(masks, ignore).tolist() == [True, False]

    class One:
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {
                "image": np.zeros((10, 10, 3), np.uint8),
                "masks": masks,
                "labels": np.ones(2, np.int64),
                "ignore": ignore,
            }

    _, target = LabPicsDetection(One(), eval_transforms())[0]
    assert len(target["labels"]) == 1 and target["masks"][0].bool().equal(
        torch.from_numpy(masks[1])
    )


def test_seeded_shuffle_gives_the_same_samples_for_any_number_of_workers():
    ds = LabPicsDetection(LabPicsDataset(LABPICS, "Train"), train_transforms(**SIZES))
    sampler = SeededShuffle(len(ds), seed=3)
    sampler.set_epoch(2)
    assert sorted(i for i, _ in sampler) == list(range(len(ds)))

    def batches(workers):
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=2,
            sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            generator=torch.Generator(),  # as train_maskrcnn: the loader's draws stay apart
        )
        return [(images, targets) for images, targets in loader]

    torch.manual_seed(0)
    before = torch.get_rng_state()
    main, two = batches(0), batches(2)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is left alone
    for (ia, ta), (ib, tb) in zip(main, two, strict=True):
        for a, b in zip(ia, ib):
            assert torch.equal(a, b)
        for a, b in zip(ta, tb):
            assert torch.equal(a["masks"], b["masks"]) and torch.equal(a["boxes"], b["boxes"])


def test_seeded_shuffle_deals_one_order_to_the_processes_as_distributed_sampler_does():
    whole = SeededShuffle(7, seed=2)
    whole.set_epoch(3)
    keys = list(whole)
    shares = []
    for rank in range(3):
        part = SeededShuffle(7, seed=2, rank=rank, world=3)
        part.set_epoch(3)
        shares.append(list(part))
        assert len(part) == len(shares[-1]) == 3  # equal shares: 7 padded to 9
    padded = keys + keys[:2]
    assert [k for r in range(3) for k in padded[r::3]] == [k for s in shares for k in s]
    # the same indices as torchvision's DistributedSampler deals out of the same order
    from torch.utils.data.distributed import DistributedSampler

    order = [i for i, _ in keys]
    for rank in range(3):
        ds = DistributedSampler(range(7), num_replicas=3, rank=rank, shuffle=False)
        assert [order[j] for j in ds] == [i for i, _ in shares[rank]]
    with pytest.raises(ValueError, match="rank 3"):
        SeededShuffle(7, rank=3, world=3)
