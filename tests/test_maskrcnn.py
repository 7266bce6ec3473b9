"""Mask R-CNN pieces: heads, input contract, lazy data with v2 transforms, ignore policy,
COCO AP against pycocotools, checkpoint resume."""

import json

import numpy as np
import pytest
import torch
import torchvision
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision import tv_tensors
from torchvision.transforms import v2

from helpers import DATA_EXAMPLE, LabPicsDataset
from helpers.detection.coco_eval import coco_ap, coco_detections, coco_ground_truth, encode_mask
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
    build_maskrcnn,
    check_input_contract,
    coco_category_ids,
    map_to_vessel,
)
from helpers.detection.training import MaskRCNNTrainConfig, train_maskrcnn

LABPICS = DATA_EXAMPLE / "LabPicsMedical"
SIZES = dict(min_size=SMOKE_MODEL_KWARGS["min_size"], max_size=SMOKE_MODEL_KWARGS["max_size"])


def test_both_heads_are_replaced_for_background_plus_vessel():
    model = build_maskrcnn(num_classes=2, pretrained=False)
    assert model.roi_heads.box_predictor.cls_score.out_features == 2
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 2 * 4
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 2  # not COCO's 91


def test_vessel_like_coco_ids_come_from_torchvisions_category_list():
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    cats = MaskRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"]
    assert [cats[i] for i in coco_category_ids()] == ["bottle", "wine glass", "cup", "bowl", "vase"]
    pred = {
        "labels": torch.tensor([44, 1, 86]),
        "scores": torch.tensor([0.9, 0.8, 0.7]),
        "boxes": torch.zeros(3, 4),
        "masks": torch.zeros(3, 1, 4, 4),
    }
    mapped = map_to_vessel(pred)
    assert mapped["labels"].tolist() == [1, 1] and mapped["scores"].tolist() == pytest.approx(
        [0.9, 0.7]
    )


def test_input_contract_rejects_0_255_and_integer_images():
    check_input_contract([torch.rand(3, 8, 8)])
    bgr_0_255 = torch.full((3, 8, 8), 255.0)
    bgr_0_255[:, 0, 0] = 0.0
    with pytest.raises(
        ValueError, match=r"values in \[0.0, 255.0\]; Mask R-CNN expects RGB in \[0, 1\]"
    ):
        check_input_contract([bgr_0_255])
    with pytest.raises(ValueError, match="float tensor"):
        check_input_contract([torch.zeros(3, 8, 8, dtype=torch.uint8)])


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


def _pred(masks, scores):
    m = torch.from_numpy(np.stack(masks)).float()[:, None]
    boxes = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return {
        "masks": m,
        "scores": torch.tensor(scores),
        "labels": torch.ones(len(masks), dtype=torch.int64),
        "boxes": torch.tensor(boxes, dtype=torch.float32),
    }


def test_coco_ap_matches_the_hand_computed_value_and_pycocotools_from_files(tmp_path):
    gt_masks = np.zeros((2, 40, 40), bool)
    gt_masks[0, 2:12, 2:12] = True
    gt_masks[1, 20:35, 20:35] = True
    sample = {
        "image": np.zeros((40, 40, 3), np.uint8),
        "masks": gt_masks,
        "labels": np.ones(2, np.int64),
    }
    fp = np.zeros((40, 40), bool)
    fp[25:30, 0:8] = True
    dets = coco_detections(0, _pred([gt_masks[0], fp], [0.9, 0.8]))
    gt = coco_ground_truth([sample])
    ours = coco_ap(gt, dets, "segm")
    # one of two objects found first, at every IoU threshold: precision 1 up to recall 0.5,
    # then nothing: 51 of COCO's 101 recall points
    assert ours["AP"] == pytest.approx(51 / 101) and ours["AP50"] == pytest.approx(51 / 101)

    # the same through pycocotools' own file-based path
    def jsonable(rle):
        return {"size": rle["size"], "counts": rle["counts"].decode()}

    gt_file = tmp_path / "gt.json"
    gt_file.write_text(
        json.dumps(
            {
                "images": [{"id": 0, "height": 40, "width": 40}],
                "categories": [{"id": 1}],
                "annotations": [
                    dict(a, segmentation=jsonable(a["segmentation"]))
                    for a in gt.dataset["annotations"]
                ],
            }
        )
    )
    coco = COCO(str(gt_file))
    ev = COCOeval(
        coco,
        coco.loadRes([dict(d, segmentation=jsonable(d["segmentation"])) for d in dets]),
        "segm",
    )
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ours["AP"] == pytest.approx(ev.stats[0]) and ours["AP75"] == pytest.approx(ev.stats[2])


def test_perfect_detections_score_one_and_none_score_zero():
    gt_masks = np.zeros((1, 30, 30), bool)
    gt_masks[0, 5:20, 8:25] = True
    gt = coco_ground_truth(
        [
            {
                "image": np.zeros((30, 30, 3), np.uint8),
                "masks": gt_masks,
                "labels": np.ones(1, np.int64),
            }
        ]
    )
    perfect = coco_detections(0, _pred([gt_masks[0]], [0.99]))
    assert coco_ap(gt, perfect, "segm")["AP"] == pytest.approx(1.0)
    assert coco_ap(gt, perfect, "bbox")["AP"] == pytest.approx(1.0)
    assert coco_ap(gt, [], "segm")["AP"] == 0.0


def test_detections_in_the_ignore_region_are_dropped_and_ignored_gt_is_crowd():
    masks = np.zeros((1, 20, 20), bool)
    masks[0, 2:8, 2:8] = True
    ignore = np.zeros((20, 20), bool)
    ignore[:10, :10] = True
    sample = {
        "image": np.zeros((20, 20, 3), np.uint8),
        "masks": masks,
        "labels": np.ones(1, np.int64),
        "ignore": ignore,
    }
    gt = coco_ground_truth([sample])
    assert gt.dataset["annotations"][0]["iscrowd"] == 1
    assert coco_detections(0, _pred([masks[0]], [0.9]), ignore) == []
    assert len(encode_mask(masks[0])["counts"]) > 0


def test_a_detection_inside_the_ignore_region_changes_no_ap_of_evaluate_detector():
    """Through evaluate_detector: one vessel found, plus a confident spurious detection
    lying in Ignore.png; AP is the same as without it (and lower when it lies outside)."""
    from helpers.detection.coco_eval import evaluate_detector

    h = w = 40
    vessel = np.zeros((h, w), bool)
    vessel[20:36, 22:36] = True
    ignore = np.zeros((h, w), bool)
    ignore[:15, :15] = True
    spurious_in = np.zeros((h, w), bool)
    spurious_in[2:12, 2:12] = True
    spurious_out = np.zeros((h, w), bool)
    spurious_out[2:12, 25:35] = True
    reader = [
        {
            "image": np.zeros((h, w, 3), np.uint8),
            "masks": vessel[None],
            "labels": np.ones(1, np.int64),
            "ignore": ignore,
        }
    ]

    class Fixed:
        def __init__(self, masks, scores):
            self.pred = _pred(masks, scores)

        def eval(self):
            return self

        def to(self, device):
            return self

        def __call__(self, images):
            return [self.pred]

    alone = evaluate_detector(Fixed([vessel], [0.5]), reader, show_progress=False)
    with_ignored = evaluate_detector(
        Fixed([vessel, spurious_in], [0.5, 0.9]), reader, show_progress=False
    )
    with_wrong = evaluate_detector(
        Fixed([vessel, spurious_out], [0.5, 0.9]), reader, show_progress=False
    )
    for kind in ("bbox", "segm"):
        assert with_ignored[kind]["AP"] == alone[kind]["AP"] == pytest.approx(1.0)
        assert with_wrong[kind]["AP"] < alone[kind]["AP"]


def test_evaluate_detector_copies_one_uint8_mask_at_a_time_to_the_cpu():
    """A model's output stays on its device; what crosses to the host (``.cpu()``,
    ``.numpy()``, ``.tolist()``, recorded by a TorchFunctionMode) is never more than one
    ``H x W`` uint8 mask, whatever the number of detections: CPU memory bounded by one
    image's mask, not ``K`` float masks (830 MB for 100 at 1920 x 1080). The scores match
    evaluating a host copy of the same output."""
    from torch.overrides import TorchFunctionMode

    from helpers.detection.coco_eval import evaluate_detector

    class HostCopies(TorchFunctionMode):
        largest = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in (torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.tolist):
                t = args[0]
                HostCopies.largest = max(HostCopies.largest, t.numel() * t.element_size())
            return func(*args, **(kwargs or {}))

    h, w, k = 135, 240, 30
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(k):
        m = np.zeros((h, w), bool)
        y, x = rng.integers(0, h - 30), rng.integers(0, w - 30)
        m[y : y + rng.integers(10, 30), x : x + rng.integers(10, 30)] = True
        masks.append(m)
    ignore = np.zeros((h, w), bool)
    ignore[:40, :60] = True
    half = np.zeros((h, w), bool)
    half[:20, 50:70] = True  # exactly half inside: kept (dropped only when more than half)
    masks.append(half)
    k += 1
    reader = [
        {
            "image": np.zeros((h, w, 3), np.uint8),
            "masks": np.stack(masks[:5]),
            "labels": np.ones(5, np.int64),
            "ignore": ignore,
        }
    ]
    scores = rng.uniform(0.1, 1.0, k).tolist()
    pred = _pred(masks, scores)

    class Fixed:
        def eval(self):
            return self

        def to(self, device):
            return self

        def __call__(self, images):
            return [pred]

    with HostCopies():
        ap = evaluate_detector(Fixed(), reader, show_progress=False)
    assert 0 < HostCopies.largest <= h * w, HostCopies.largest
    # the same detections as the numpy rule keeps, with the same masks, and so the same AP
    kept = np.flatnonzero(~ignored_instances(np.stack(masks), ignore))
    assert 0 < len(kept) < k  # some detections lie in the ignore region
    dets = coco_detections(0, pred, ignore)
    assert [d["score"] for d in dets] == pytest.approx([scores[i] for i in kept])
    for d, i in zip(dets, kept):
        assert d["segmentation"] == mask_utils.encode(np.asfortranarray(masks[i], np.uint8))
    assert ap["segm"] == coco_ap(coco_ground_truth(reader), dets, "segm")


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


def test_resumed_detector_training_matches_an_uninterrupted_run(tmp_path):
    """Also across data-loading workers: the straight run loads in the main process, the
    interrupted one with 2 worker processes and its resumption with 1 (SeededShuffle)."""
    three = torch.utils.data.Subset(LabPicsDataset(LABPICS, "Test"), range(3))
    kwargs = dict(SMOKE_MODEL_KWARGS, min_size=128, max_size=160)

    keys = []

    class Recorded(LabPicsDetection):
        def __getitem__(self, key):
            keys.append(tuple(key))
            return super().__getitem__(key)

    def run(out, workers, **kw):
        torch.manual_seed(0)
        model = build_maskrcnn(pretrained=False, **kwargs)
        cfg = MaskRCNNTrainConfig(epochs=2, batch_size=2, lr=0.002, num_workers=workers)
        train_maskrcnn(
            model,
            Recorded(three, train_transforms(128, 160)),
            None,
            cfg,
            out,
            show_progress=False,
            **kw,
        )
        return model

    straight = run(tmp_path / "a", 0)
    # the schedule counts every step, the last, partial batch included: 3 images in
    # batches of 2 are 2 steps an epoch, 4 in all
    from helpers.schedules import warmup_cosine

    history = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["history"]
    defaults = MaskRCNNTrainConfig()
    expected = [
        0.002 * warmup_cosine(s, 4, defaults.warmup_frac, defaults.min_lr_frac) for s in (2, 4)
    ]
    assert [r["lr"] for r in history] == pytest.approx(expected)
    # each epoch its own order and augmentation seeds, as SeededShuffle makes them
    expected = []
    for epoch in (1, 2):
        sampler = SeededShuffle(3, seed=0)
        sampler.set_epoch(epoch)
        expected += list(sampler)
    assert keys == expected and keys[:3] != keys[3:]
    run(tmp_path / "b", 2, until_epoch=1)
    resumed = run(tmp_path / "b", 1)  # another worker count: not a setting that must match
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    from helpers.checkpoints import OPTIONAL_STATE_KEYS, TRAINING_STATE_KEYS

    assert state["epoch"] == 2 and set(state) == set(TRAINING_STATE_KEYS) | set(OPTIONAL_STATE_KEYS)


def test_best_pt_holds_the_epoch_of_the_best_validation_mask_ap(tmp_path, monkeypatch):
    """The validation runs every epoch (evaluate_detector, on a real reader) and best.pt
    keeps the weights of the epoch whose mask AP was highest, not the last ones."""
    import helpers.detection.training as mt
    from helpers.detection.training import load_best

    two = torch.utils.data.Subset(LabPicsDataset(LABPICS, "Test"), range(2))
    cfg = MaskRCNNTrainConfig(epochs=3, batch_size=2, lr=0.002)
    kwargs = dict(SMOKE_MODEL_KWARGS, min_size=128, max_size=160)
    real = mt.evaluate_detector
    calls = []

    def scripted(model, reader, device="cpu", **kw):  # a real evaluation, then a chosen AP
        result = real(model, reader, device, **kw)
        calls.append(len(reader))
        ap = [0.2, 0.6, 0.4][len(calls) - 1]
        box_ap = [0.7, 0.1, 0.9][len(calls) - 1]  # box AP would choose another epoch
        return {"bbox": dict(result["bbox"], AP=box_ap), "segm": dict(result["segm"], AP=ap)}

    monkeypatch.setattr(mt, "evaluate_detector", scripted)

    def run(out, **kw):
        torch.manual_seed(0)
        model = build_maskrcnn(pretrained=False, **kwargs)
        history = mt.train_maskrcnn(
            model,
            LabPicsDetection(two, train_transforms(**SIZES)),
            two,
            cfg,
            out,
            show_progress=False,
            **kw,
        )
        return model, history

    model, history = run(tmp_path / "full")
    assert calls == [2, 2, 2] and [r["val_segm_ap"] for r in history] == [0.2, 0.6, 0.4]
    calls.clear()
    after_two, _ = run(tmp_path / "two", until_epoch=2)  # the weights after epoch 2
    best = build_maskrcnn(pretrained=False, **kwargs)
    assert load_best(best, tmp_path / "full")["epoch"] == 2
    for (k, a), b in zip(best.state_dict().items(), after_two.state_dict().values()):
        assert torch.equal(a, b), k
    assert any(
        not torch.equal(a, b)
        for a, b in zip(best.state_dict().values(), model.state_dict().values())
    )


def test_a_best_pt_of_another_model_is_a_clear_error(tmp_path):
    from helpers.checkpoints import CheckpointError, save_weights
    from helpers.detection.training import load_best

    save_weights(
        build_maskrcnn(num_classes=3, pretrained=False), tmp_path / "best.pt", {"epoch": 1}
    )
    with pytest.raises(
        CheckpointError, match=r"best.pt: does not fit this Mask R-CNN: .*shape mismatch"
    ):
        load_best(build_maskrcnn(num_classes=2, pretrained=False), tmp_path)


def test_keeping_cocos_mask_predictor_trains_only_the_ground_truth_channel_and_breaks_loading():
    """What helpers.detection.model says of the seed's model (box predictor replaced, COCO's
    91-channel mask predictor kept): the mask loss reaches only channel 1 (the vessel's
    label, COCO's "person"), and its weights do not load into a 2-class Mask R-CNN."""
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    from helpers.detection.model import build_coco_maskrcnn

    torch.manual_seed(0)
    seed_style = build_coco_maskrcnn(pretrained=False, **SMOKE_MODEL_KWARGS)
    seed_style.roi_heads.box_predictor = FastRCNNPredictor(
        seed_style.roi_heads.box_predictor.cls_score.in_features, 2
    )
    ds = LabPicsDetection(
        LabPicsDataset(DATA_EXAMPLE / "LabPicsMedical", "Train"), eval_transforms()
    )
    images, targets = collate([ds[0], ds[1]])
    seed_style.train()
    seed_style(list(images), list(targets))["loss_mask"].backward()
    grad = seed_style.roi_heads.mask_predictor.mask_fcn_logits.weight.grad[:, :, 0, 0]
    assert grad.shape[0] == 91
    assert grad[1].abs().sum() > 0 and grad[[0, *range(2, 91)]].abs().sum() == 0
    with pytest.raises(
        RuntimeError, match="size mismatch for roi_heads.mask_predictor.mask_fcn_logits"
    ):
        build_maskrcnn(num_classes=2, pretrained=False, **SMOKE_MODEL_KWARGS).load_state_dict(
            seed_style.state_dict()
        )


def _coco_layout_state_dict(seed: int = 0) -> dict:
    """A COCO Mask R-CNN's state dict in the real key layout (FrozenBatchNorm2d, as
    torchvision builds the model when weights are asked for), random values."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.resnet import resnet50
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(seed)
    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3)
    return MaskRCNN(backbone, num_classes=91).state_dict()


def test_coco_weights_offline_name_the_file_its_place_and_smoke_mode(tmp_path, monkeypatch):
    import helpers.detection.model as maskrcnn
    from helpers.data.downloads import DownloadError

    real_name = maskrcnn.COCO_WEIGHTS_URL.rsplit("/", 1)[-1]
    assert real_name.startswith("maskrcnn_resnet50_fpn_coco-")
    monkeypatch.setenv("SEGCOURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # not where they go
    monkeypatch.setattr(maskrcnn, "COCO_WEIGHTS_URL", f"http://127.0.0.1:9/{real_name}")
    place = tmp_path / "cache" / "torch" / "hub" / "checkpoints"
    for build in (maskrcnn.build_maskrcnn, maskrcnn.build_coco_maskrcnn):
        with pytest.raises(DownloadError) as err:
            build(pretrained=True)
        message = str(err.value)
        for part in (real_name, str(place), "SEGCOURSE_SMOKE=1"):
            assert part in message, (part, message)
    assert not place.exists() or list(place.iterdir()) == []


def test_coco_weights_are_fetched_sha256_checked_and_loaded_by_torchvision(tmp_path, monkeypatch):
    import hashlib
    import http.server
    import threading
    from functools import partial

    import helpers.detection.model as maskrcnn
    from helpers.data.downloads import DownloadError

    monkeypatch.setenv("SEGCOURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # not where they go
    served = tmp_path / "served"
    served.mkdir()
    weights = _coco_layout_state_dict()
    torch.save(weights, served / "w.pth")
    digest = hashlib.sha256((served / "w.pth").read_bytes()).hexdigest()
    (served / "w.pth").rename(served / f"maskrcnn_coco-{digest[:8]}.pth")
    (served / "maskrcnn_coco-00000000.pth").hardlink_to(served / f"maskrcnn_coco-{digest[:8]}.pth")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        got = maskrcnn.ensure_coco_weights(f"{base}/maskrcnn_coco-{digest[:8]}.pth")
        place = tmp_path / "cache" / "torch" / "hub" / "checkpoints"  # with the course's files
        assert got == place / f"maskrcnn_coco-{digest[:8]}.pth"
        with pytest.raises(DownloadError, match="SHA-256 is .* expected 00000000"):
            maskrcnn.ensure_coco_weights(f"{base}/maskrcnn_coco-00000000.pth")
        assert sorted(p.name for p in got.parent.iterdir() if p.suffix == ".pth") == [got.name]
    finally:
        httpd.shutdown()

    # under the real name: a copy that was never checked is refused (a partial copy?) ...
    real = maskrcnn.coco_weights_file()
    got.replace(real)
    with pytest.raises(DownloadError, match="is there but its SHA-256 is .* Delete it"):
        maskrcnn.build_coco_maskrcnn(pretrained=True)
    # ... one whose hash was checked when it was downloaded loads from there, offline
    prefix = real.stem.rsplit("-", 1)[1]  # the SHA-256 prefix torch.hub names files with
    real.with_name(real.name + ".md5-ok").write_text(f"sha256:{prefix}\n")  # as fetch stamps
    coco = maskrcnn.build_coco_maskrcnn(pretrained=True, **SMOKE_MODEL_KWARGS)
    assert all(torch.equal(v, weights[k]) for k, v in coco.state_dict().items())
    ours = maskrcnn.build_maskrcnn(pretrained=True, **SMOKE_MODEL_KWARGS)
    trunk = {k: v for k, v in ours.state_dict().items() if not k.startswith("roi_heads.")}
    assert all(torch.equal(v, weights[k]) for k, v in trunk.items())


def test_a_finished_detector_evaluation_is_read_back_unless_its_inputs_change(
    tmp_path, monkeypatch
):
    import sys
    from pathlib import Path

    import helpers.detection.coco_eval as coco_eval

    sys.path.insert(0, str(Path(__file__).parent))
    from distributed_eval_job import reader_and_model

    reader, model = reader_and_model()
    first = coco_eval.evaluate_detector(model, reader, show_progress=False, cache=tmp_path)

    def no_detections(*a, **k):
        raise AssertionError("evaluated although the result was remembered")

    monkeypatch.setattr(coco_eval, "coco_detections", no_detections)
    again = coco_eval.evaluate_detector(model, reader, show_progress=False, cache=tmp_path)
    assert again == first
    with pytest.raises(AssertionError, match="evaluated although"):  # another input contract
        coco_eval.evaluate_detector(
            model,
            reader,
            transform=lambda im: torch.from_numpy(im).permute(2, 0, 1).float(),
            show_progress=False,
            cache=tmp_path,
        )
