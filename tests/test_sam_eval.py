"""The interactive protocol: the evaluation, checked against the widget and an oracle."""

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

import helpers.sam.evaluation as ev
from helpers import DATA_EXAMPLE, VOCInstanceDataset
from helpers.sam.clicks import next_click
from helpers.sam.embeddings import EmbeddingCache
from helpers.sam.evaluation import click_ious, comparison_table, evaluate
from helpers.sam.items import prepare_items
from helpers.sam.model import build_tiny_sam
from helpers.views.compare import SamCompare


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny SAM whose decoder gives non-empty masks, and one data_example image."""
    sam = build_tiny_sam()
    with torch.no_grad():
        for mlp in sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(30)
    ds = Subset(VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train"), range(1))
    items, _ = prepare_items(
        ds, EmbeddingCache(tmp_path_factory.mktemp("emb"), sam), show_progress=False
    )
    return sam, ds, items[0]


def test_evaluation_and_the_widget_give_the_same_iou_click_by_click(setup):
    """One protocol, one code path: clicking in the widget where the simulated user
    clicks gives the evaluation's IoU at every click (first click: three masks, the best
    by score; later: all clicks + the previous logits, single mask)."""
    sam, ds, item = setup
    curves = click_ious(sam, item, max_clicks=3)
    for i in range(len(item.masks)):
        ctl = SamCompare({"model": sam}, ds, fast=False, backend="torch")
        clicked = np.zeros_like(item.masks[i])
        pred = np.zeros_like(item.masks[i])
        for k in range(3):
            x, y, positive = next_click(pred, item.masks[i], item.void, clicked)
            clicked[int(y), int(x)] = True
            ctl.on_pointer(
                {
                    "x0": x + 0.5,
                    "y0": y + 0.5,
                    "x1": x + 0.5,
                    "y1": y + 0.5,
                    "button": 0 if positive else 2,
                }
            )
            pred = ctl.results["model"]["mask"]
            assert ctl.results["model"]["gt_iou"] == pytest.approx(curves[i, k], abs=0.005), (i, k)
    assert len(set(np.round(curves.ravel(), 3))) > 3  # the IoUs differ: not a trivial match


def _oracle_item(setup):
    """An item with one 10-row instance whose predictions improve click by click, and a
    void band where a wrong prediction is not counted."""
    _, _, item = setup
    h, w = item.void.shape
    gt = np.zeros((h, w), bool)
    gt[20:30, 40:60] = True
    void = np.zeros((h, w), bool)
    void[0:5, :] = True
    return ev.SamItem(
        "oracle",
        item.emb,
        gt[None],
        np.array([3]),
        void,
        item.cands[:1],
        item.targets[:1],
        item.valid,
    )


def test_evaluation_reads_each_click_and_leaves_void_out(setup, monkeypatch):
    item = _oracle_item(setup)
    gt = item.masks[0]
    calls = []

    def oracle(sam, emb, points=None, labels=None, boxes=None, mask_input=None, full_size=True):
        k = 0 if points is None else points.shape[1]  # clicks so far
        calls.append(k)
        pred = np.zeros_like(gt)
        if boxes is not None:
            pred[20:30, 40:50] = True  # box: IoU 0.5
        else:
            pred[20 : 20 + min(2 * k, 10), 40:60] = True  # click k: IoU k / 5, then 1
            pred[0:5, :] = True  # spurious, but void: never counted
        out = torch.from_numpy(pred)[None]
        return {
            "chosen_masks": out,
            "chosen_low_res": torch.zeros(1, 1, 256, 256),
            "chosen_iou": torch.ones(1),
        }

    monkeypatch.setattr(ev, "predict_round", oracle)
    curve = click_ious(None, item, max_clicks=6)
    assert curve[0].tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    assert calls == [1, 2, 3, 4, 5, 6]  # one more click per round: every click is sent
    result = evaluate(
        type("M", (), {"eval": lambda self: None})(), [item], max_clicks=6, show_progress=False
    )
    assert result["miou@1"] == pytest.approx(0.2) and result["miou@3"] == pytest.approx(0.6)
    assert result["miou@5"] == pytest.approx(1.0)
    assert (
        result["noc@85"] == 5 and result["noc@90"] == 5 and result["box_miou"] == pytest.approx(0.5)
    )
    assert result["per_class"]["bird"]["iou@1"] == pytest.approx(0.2) and result["instances"] == 1
    table = comparison_table({"before": result, "a long run name": result})
    lines = table.splitlines()
    assert lines[0].endswith("  a long run name")  # columns widen to fit the names
    assert any(
        line.startswith("miou@3") and line.split()[1:] == ["0.600", "0.600"] for line in lines
    )
    assert any(line.startswith("bird (1)") and "0.200" in line for line in lines)
    assert any(
        line.startswith("noc@85") and line.split()[1:] == ["5.000", "5.000"] for line in lines
    )


def test_a_clicked_pixel_is_never_clicked_again_and_clicking_stops_when_every_instance_is_done(
    setup, monkeypatch
):
    """Two instances: a model that never changes its answer for the first (so the clicker
    must move on from pixels it already clicked) and one that is right after one click
    for the second; with ``stop_at`` the clicking goes on until *every* instance reached it."""
    _, _, item = setup
    h, w = item.void.shape
    gt = np.zeros((2, h, w), bool)
    gt[0, 20:30, 40:60] = True
    gt[1, 50:60, 10:20] = True
    two = ev.SamItem(
        "two",
        item.emb,
        gt,
        np.array([3, 3]),
        np.zeros((h, w), bool),
        item.cands[:1] * 2,
        item.targets[:1].repeat(2, 1, 1),
        item.valid,
    )
    sent = []

    def oracle(sam, emb, points=None, labels=None, boxes=None, mask_input=None, full_size=True):
        sent.append(points.copy())
        k = points.shape[1]
        pred = np.zeros((2, h, w), bool)  # instance 0: nothing found, ever ...
        pred[0, 20:30, 40 : 40 + (20 if k >= 4 else 0)] = True  # ... until click 4
        pred[1] = gt[1]  # instance 1: right at once
        return {
            "chosen_masks": torch.from_numpy(pred),
            "chosen_low_res": torch.zeros(2, 1, 256, 256),
            "chosen_iou": torch.ones(2),
        }

    monkeypatch.setattr(ev, "predict_round", oracle)
    curve = click_ious(None, two, max_clicks=8, stop_at=0.85, min_clicks=1)
    assert curve[0].tolist() == [0, 0, 0, 1, 1, 1, 1, 1]  # instance 0 waited for click 4
    assert len(sent) == 4  # then it stopped: every instance had reached 0.85
    clicks_0 = [tuple(p) for p in sent[-1][0]]
    assert len(set(clicks_0)) == 4  # four different pixels, none clicked twice
    assert all(gt[0, int(y), int(x)] for x, y in clicks_0)


def test_a_finished_evaluation_is_read_back_and_any_change_computes_it_again(
    setup, tmp_path, monkeypatch
):
    """A rerun after a disconnect: the same decoder, settings and items give the result
    remembered on disk without one prediction; other weights or settings are computed."""
    sam, _, item = setup
    first = evaluate(sam, [item], max_clicks=3, show_progress=False, cache=tmp_path)
    assert len(list(tmp_path.glob("sam-evaluation-*.pt"))) == 1

    def no_prediction(*a, **k):
        raise AssertionError("predicted although the result was remembered")

    monkeypatch.setattr(ev, "predict_round", no_prediction)
    again = evaluate(sam, [item], max_clicks=3, show_progress=False, cache=tmp_path)
    assert again.keys() == first.keys() and again["miou@1"] == first["miou@1"]
    np.testing.assert_array_equal(again["click_ious"], first["click_ious"])
    with pytest.raises(AssertionError, match="predicted although"):  # other settings
        evaluate(sam, [item], max_clicks=2, show_progress=False, cache=tmp_path)
    other = build_tiny_sam()  # the same architecture, other decoder weights
    with torch.no_grad():
        other.mask_decoder.iou_token.weight.add_(1e-3)
    with pytest.raises(AssertionError, match="predicted although"):
        evaluate(other, [item], max_clicks=3, show_progress=False, cache=tmp_path)
