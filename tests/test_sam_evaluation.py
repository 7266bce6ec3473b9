"""helpers.sam.evaluation: mIoU@k, NoC and box mIoU against the protocol written out plainly,
the widget's IoU click by click, and remembered evaluations."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracles import edge_scenes, iou_by_hand, next_click_by_hand, noc_by_hand
from scenes import edge_item
from torch.utils.data import Subset

import helpers.sam.evaluation as ev
from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.voc import VOCInstanceDataset
from helpers.sam.clicks import next_click
from helpers.sam.embeddings import EmbeddingCache
from helpers.sam.evaluation import click_ious, comparison_table, evaluate
from helpers.sam.items import prepare_items
from helpers.sam.model import build_tiny_sam
from helpers.views.compare import SamCompare


def _disc(shape, x, y, r):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (xx - x) ** 2 + (yy - y) ** 2 <= r * r


def stand_in_mask(instance, points, labels, radius):
    """The stand-in model's answer for one instance: after one prompt, the instance less
    the last 13% of its pixels plus a disc around the first positive click (spilling
    over: negative clicks to come); after two, less 6%; then the instance. Discs around
    negative clicks are removed. So IoUs cross thresholds between clicks and keep
    improving after a stop would have been allowed: an early stop at the wrong click or
    threshold changes the numbers. Used by the package's path (through predict_round)
    and by the written-out protocol alike: it is the model, not what is tested."""
    h, w = instance.shape
    positives = [(x, y) for (x, y), lab in zip(points, labels) if lab == 1]
    if not positives:
        return np.zeros((h, w), bool)
    cells = np.flatnonzero(instance)
    drop = {1: 0.13, 2: 0.06}.get(len(points), 0.0)
    flat = np.zeros(h * w, bool)
    flat[cells[: len(cells) - int(round(drop * len(cells)))]] = True
    m = flat.reshape(h, w)
    if len(points) == 1:
        m |= _disc((h, w), positives[0][0], positives[0][1], radius)
    for (x, y), lab in zip(points, labels):
        if lab == 0:
            m &= ~_disc((h, w), x, y, radius)
    return m


def fake_round(instances, radius):
    """A stand-in for predict_round: each row's mask from its prompts alone
    (:func:`stand_in_mask`; a box fills itself)."""

    def call(sam, emb, points=None, labels=None, boxes=None, mask_input=None, full_size=True):
        h, w = emb.original_size
        out = []
        n = len(points) if points is not None else len(boxes)
        for i in range(n):
            m = np.zeros((h, w), bool)
            if boxes is not None:
                x0, y0, x1, y1 = (int(v) for v in boxes[i])
                m[y0 : y1 + 1, x0 : x1 + 1] = True
            if points is not None:
                m = stand_in_mask(instances[i], points[i], labels[i], radius)
            out.append(m)
        masks = torch.from_numpy(np.stack(out))
        return {
            "chosen_masks": masks,
            "chosen_low_res": torch.zeros(n, 1, 64, 64),
            "chosen_iou": torch.ones(n),
        }

    return call


def protocol_by_hand(instances, void, max_clicks, radius, stop_at, min_clicks):
    """The protocol written out: per instance, clicks by the brute-force clicker, the
    stand-in's mask, IoU by counting; clicking stops for everyone once every instance
    reached ``stop_at`` after at least ``min_clicks`` clicks, later columns repeat."""
    h, w = void.shape
    n = len(instances)
    points = [[] for _ in range(n)]
    labels = [[] for _ in range(n)]
    pred = [np.zeros((h, w), bool) for _ in range(n)]
    clicked = [np.zeros((h, w), bool) for _ in range(n)]
    table = [[0.0] * max_clicks for _ in range(n)]
    for k in range(max_clicks):
        for i in range(n):
            click = next_click_by_hand(pred[i], instances[i], void, clicked[i])
            if click is None:
                points[i].append((0.0, 0.0))
                labels[i].append(-1)
            else:
                x, y, positive = click
                clicked[i][int(y), int(x)] = True
                points[i].append((x, y))
                labels[i].append(1 if positive else 0)
        for i in range(n):
            m = stand_in_mask(instances[i], points[i], labels[i], radius)
            pred[i] = m
            table[i][k] = iou_by_hand(m, instances[i], void)
        done = all(max(table[i][: k + 1]) >= stop_at for i in range(n))
        if k + 1 >= min_clicks and done:
            for i in range(n):
                for j in range(k + 1, max_clicks):
                    table[i][j] = table[i][k]
            break
    return table


@st.composite
def scenes(draw):
    h, w = draw(st.integers(10, 22)), draw(st.integers(10, 22))
    n = draw(st.integers(1, 3))
    instances = []
    for _ in range(n):
        y0, x0 = draw(st.integers(0, h - 2)), draw(st.integers(0, w - 2))
        y1, x1 = draw(st.integers(y0 + 1, h)), draw(st.integers(x0 + 1, w))
        m = np.zeros((h, w), bool)
        m[y0:y1, x0:x1] = True
        instances.append(m)
    void = np.zeros((h, w), bool)
    if draw(st.booleans()):  # a void band along one object's edge
        m = instances[0]
        void = m ^ np.pad(m, 1)[1:-1, 2:] & m
    return instances, void, draw(st.sampled_from([1.5, 2.5, 4.0]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scenes(),
    st.sampled_from([(0.85, 0.90), (0.5, 0.8), (0.9, 0.95)]),
    st.integers(1, 6),
    st.sampled_from([(1,), (1, 3), (1, 3, 5)]),
)
def test_evaluate_equals_the_protocol_written_out(scene, thresholds, max_k, ks):
    instances, void, radius = scene
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ev, "predict_round", fake_round(instances, radius))
        _check_evaluate(instances, void, radius, thresholds, max_k, ks)


def _check_evaluate(instances, void, radius, thresholds, max_k, ks):
    boxes = []
    for m in instances:
        ys, xs = np.nonzero(m)
        boxes.append(SimpleNamespace(box=np.array([xs.min(), ys.min(), xs.max(), ys.max()])))
    item = SimpleNamespace(
        image_id="x",
        masks=np.stack(instances),
        labels=np.ones(len(instances), np.int64),
        void=void,
        cands=boxes,
        emb=SimpleNamespace(original_size=void.shape),
    )
    ks = tuple(k for k in ks if k <= max_k)
    model = SimpleNamespace(eval=lambda: None)
    got = ev.evaluate(model, [item], max_clicks=max_k, ks=ks, thresholds=thresholds)
    table = protocol_by_hand(
        instances, void, max_k, radius, stop_at=max(thresholds), min_clicks=max(ks)
    )
    for k in ks:
        assert got[f"miou@{k}"] == pytest.approx(np.mean([row[k - 1] for row in table]))
    np.testing.assert_allclose(got["click_ious"], np.array(table))
    for t in thresholds:
        want = np.mean([noc_by_hand(row, t, max_k) for row in table])
        assert got[f"noc@{round(t * 100)}"] == pytest.approx(want)
    lo, hi = thresholds
    assert got[f"noc@{round(hi * 100)}"] >= got[f"noc@{round(lo * 100)}"]  # a higher bar
    box_masks = []
    for m in instances:
        ys, xs = np.nonzero(m)
        bm = np.zeros_like(m)
        bm[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
        box_masks.append(iou_by_hand(bm, m, void))
    assert got["box_miou"] == pytest.approx(np.mean(box_masks))


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
            "chosen_low_res": torch.zeros(1, 1, 64, 64),
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
            "chosen_low_res": torch.zeros(2, 1, 64, 64),
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


@pytest.fixture(scope="module")
def tiny_sam():
    return build_tiny_sam()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edge_scenes(h_max=40, w_max=40), st.integers(0, 2**16))
def test_the_protocol_measures_every_edge_instance(tiny_sam, scene, seed):
    """Clicks and box prompts on one-pixel, whole-image, border, ring and touching
    instances: an IoU in [0, 1] for every instance and click, and the box's."""
    sam = tiny_sam
    item = edge_item(sam, scene, seed)
    curves = click_ious(sam, item, max_clicks=3)
    assert curves.shape == (len(item.masks), 3) and np.isfinite(curves).all()
    assert (curves >= 0).all() and (curves <= 1).all()
    boxes = ev.box_ious(sam, item)
    assert boxes.shape == (len(item.masks),) and ((boxes >= 0) & (boxes <= 1)).all()
