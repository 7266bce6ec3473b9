"""helpers.detection.model: Mask R-CNN with both predictors replaced, its input contract,
and the COCO weights fetched into the course's cache."""

import pytest
import torch

from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.labpics import LabPicsDataset
from helpers.detection.data import (
    LabPicsDetection,
    collate,
    eval_transforms,
)
from helpers.detection.model import (
    SMOKE_MODEL_KWARGS,
    build_maskrcnn,
    check_input_contract,
    coco_category_ids,
    map_to_vessel,
)


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
