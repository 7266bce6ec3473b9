"""Every number the course reports, against a second implementation written plainly here
(loops, no vectorisation, none of the package's helpers) on many generated inputs:
non-square images in both orientations, void bands and void everywhere, empty and
perfect masks, ties. Properties that state a contract are checked with hypothesis.

What is checked: the protocol's clicker, mIoU@k / NoC@k / box mIoU through ``evaluate``,
mask IoU, BCE + Dice with void and padding, the IoU head's target, the training clicker,
prompt sampling and the SAM paper's box noise, the shard partition, automatic-mask
matching, and the ONNX agreement figures.
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import helpers.sam.evaluation as ev
from helpers.distributed import Place, shard
from helpers.metrics import mask_iou
from helpers.sam.automatic_masks import best_ious
from helpers.sam.clicks import error_clicks, next_click, noc
from helpers.sam.losses import bce_dice_per_mask, iou_of_logits
from helpers.sam.onnx_decoder import first_click_agreement
from helpers.sam.prompts import PromptConfig, instance_candidates, noisy_box, sample_prompts

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def masks(h_max=12, w_max=15):
    """Boolean H x W masks, H and W drawn separately (non-square, either orientation)."""
    shapes = st.tuples(st.integers(1, h_max), st.integers(1, w_max))
    return shapes.flatmap(lambda s: arrays(bool, s))


def same_shape(n, h_max=12, w_max=15):
    shapes = st.tuples(st.integers(1, h_max), st.integers(1, w_max))
    return shapes.flatmap(lambda s: st.tuples(*[arrays(bool, s) for _ in range(n)]))


# --- IoU ------------------------------------------------------------------------------


def iou_by_hand(a, b, ignore=None):
    inter = union = 0
    for r in range(a.shape[0]):
        for c in range(a.shape[1]):
            if ignore is not None and ignore[r, c]:
                continue
            inter += bool(a[r, c]) and bool(b[r, c])
            union += bool(a[r, c]) or bool(b[r, c])
    return 1.0 if union == 0 else inter / union


@FAST
@given(same_shape(3))
def test_mask_iou_is_the_plain_count_symmetric_and_one_on_itself(abv):
    a, b, void = abv
    assert mask_iou(a, b, void) == pytest.approx(iou_by_hand(a, b, void))
    assert mask_iou(a, b) == pytest.approx(mask_iou(b, a))
    assert mask_iou(a, a, void) == 1.0
    assert 0.0 <= mask_iou(a, b) <= 1.0


# --- the protocol's clicker -------------------------------------------------------------


def distances_by_hand(region):
    """Distance of each pixel of ``region`` to the nearest pixel outside it, the image
    border counting as outside (a one-pixel frame of outside around the image)."""
    h, w = region.shape
    outside = [(r, c) for r in range(-1, h + 1) for c in range(-1, w + 1)]
    outside = [(r, c) for r, c in outside if not (0 <= r < h and 0 <= c < w and region[r, c])]
    dist = np.zeros((h, w))
    for r in range(h):
        for c in range(w):
            if region[r, c]:
                dist[r, c] = min(math.hypot(r - orr, c - oc) for orr, oc in outside)
    return dist


def next_click_by_hand(pred, gt, void, clicked):
    fn = gt & ~pred & ~void
    fp = pred & ~gt & ~void
    dfn, dfp = distances_by_hand(fn), distances_by_hand(fp)
    dfn[clicked], dfp[clicked] = 0, 0
    if dfn.max() == 0 and dfp.max() == 0:
        return None
    positive = dfn.max() > dfp.max()
    d = dfn if positive else dfp
    best = None  # the first pixel in reading order with the largest distance
    for r in range(d.shape[0]):
        for c in range(d.shape[1]):
            if best is None or d[r, c] > d[best]:
                best = (r, c)
    return float(best[1]), float(best[0]), bool(positive)


@settings(max_examples=120, deadline=None)
@given(same_shape(4, h_max=10, w_max=13))
def test_the_clicker_is_the_deepest_error_pixel_by_brute_force(arrs):
    pred, gt, void, clicked = arrs
    got = next_click(pred, gt, void, clicked)
    want = next_click_by_hand(pred, gt, void, clicked)
    if want is None:
        assert got is None
        return
    assert got is not None
    assert got[2] == want[2]
    # the same depth (ties: any pixel of the deepest; the package takes the first)
    region = (gt & ~pred if want[2] else pred & ~gt) & ~void
    depth = distances_by_hand(region)
    depth[clicked] = 0
    x, y = int(got[0]), int(got[1])
    assert depth[y, x] == pytest.approx(depth.max())
    assert got[:2] == want[:2]


def test_a_tie_between_missed_and_spurious_is_a_negative_click():
    gt = np.zeros((5, 9), bool)
    pred = np.zeros((5, 9), bool)
    gt[2, 1] = True  # a missed pixel, depth 1
    pred[2, 7] = True  # a spurious pixel, depth 1
    assert next_click(pred, gt)[2] is False


# --- mIoU@k, NoC@k, box mIoU through evaluate -------------------------------------------


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
            "chosen_low_res": torch.zeros(n, 1, 256, 256),
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


def noc_by_hand(row, threshold, max_clicks):
    for k in range(max_clicks):
        if row[k] >= threshold:
            return k + 1
    return max_clicks


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


@FAST
@given(st.lists(st.floats(0, 1), min_size=1, max_size=25), st.integers(1, 25))
def test_noc_is_the_first_click_reaching_the_threshold(ious, max_clicks):
    for t in (0.85, 0.9):
        assert noc(ious, t, max_clicks) == noc_by_hand(ious + [0.0] * 25, t, max_clicks)
    assert noc(ious, 0.9, max_clicks) >= noc(ious, 0.85, max_clicks)


# --- losses with void and padding -------------------------------------------------------


def losses_by_hand(logits, target, valid, dice_weight, eps=1.0):
    bce_sum = n = p_sum = t_sum = inter = 0.0
    for r in range(logits.shape[0]):
        for c in range(logits.shape[1]):
            if not valid[r, c]:
                continue
            x, t = float(logits[r, c]), float(target[r, c])
            p = 1 / (1 + math.exp(-x))
            # log(sigmoid(x)) and log(1 - sigmoid(x)), stable for large |x|
            log_p = -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))
            log_q = -x - math.log1p(math.exp(-x)) if x > 0 else -math.log1p(math.exp(x))
            bce_sum += -(t * log_p + (1 - t) * log_q)
            n += 1
            p_sum += p
            t_sum += t
            inter += p * t
    bce = bce_sum / max(n, 1)
    dice = 1 - (2 * inter + eps) / (p_sum + t_sum + eps)
    return bce + dice_weight * dice, bce, dice


@FAST
@given(
    st.tuples(st.integers(1, 7), st.integers(1, 9)).flatmap(
        lambda s: st.tuples(
            arrays(np.float64, s, elements=st.floats(-30, 30)),
            arrays(bool, s),
            arrays(bool, s),
        )
    ),
    st.sampled_from([0.0, 1.0, 3.0]),
)
def test_bce_dice_equals_the_formula_pixel_by_pixel(data, dice_weight):
    logits, target, valid = data
    loss, bce, dice = bce_dice_per_mask(
        torch.from_numpy(logits)[None],
        torch.from_numpy(target)[None],
        torch.from_numpy(valid),
        dice_weight,
    )
    want = losses_by_hand(logits, target, valid, dice_weight)
    assert float(loss[0]) == pytest.approx(want[0], rel=1e-9, abs=1e-9)
    assert float(bce[0]) == pytest.approx(want[1], rel=1e-9, abs=1e-9)
    assert float(dice[0]) == pytest.approx(want[2], rel=1e-9, abs=1e-9)


@FAST
@given(same_shape(3, h_max=8, w_max=11), arrays(np.float64, 1, elements=st.floats(-3, 3)))
def test_the_iou_target_is_the_counted_iou_of_the_thresholded_logits(abv, shift):
    target, positive, valid = abv
    logits = np.where(positive, 1.0, -1.0) + shift[0] * 0.0
    got = iou_of_logits(
        torch.from_numpy(logits)[None], torch.from_numpy(target)[None], torch.from_numpy(valid)
    )
    assert float(got[0]) == pytest.approx(iou_by_hand(logits > 0, target, ~valid))


# --- the training clicker, prompts, box noise ------------------------------------------


@FAST
@given(same_shape(3, h_max=9, w_max=14), st.integers(0, 2**31))
def test_training_clicks_fall_in_the_error_region_with_the_right_sign(abv, seed):
    pred, target, valid = abv
    logits = torch.from_numpy(np.where(pred, 2.0, -2.0))[None]
    rows, cols, positive, has = error_clicks(
        logits, torch.from_numpy(target)[None], torch.from_numpy(valid), np.random.default_rng(seed)
    )
    missed = target & ~pred & valid
    spurious = pred & ~target & valid
    assert bool(has[0]) == bool((missed | spurious).any())
    if has[0]:
        r, c = int(rows[0]), int(cols[0])
        assert missed[r, c] or spurious[r, c]
        assert bool(positive[0]) == bool(missed[r, c])


@st.composite
def instance_scenes(draw):
    h, w = draw(st.integers(4, 40)), draw(st.integers(4, 40))
    y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
    y1, x1 = draw(st.integers(y0 + 1, h)), draw(st.integers(x0 + 1, w))
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    void = draw(arrays(bool, (h, w))) & draw(st.booleans())
    assume((mask & ~void).any())
    return mask, void


@FAST
@given(instance_scenes(), st.integers(0, 2**31))
def test_first_prompts_lie_where_they_belong(scene, seed):
    mask, void = scene
    cands = [instance_candidates(mask, void)]
    cfg = PromptConfig(n_pos=2, n_neg=1, p_points=0, p_box=0, p_both=1, box_noise=0.0)
    p = sample_prompts(cands, cfg, np.random.default_rng(seed))
    ys, xs = np.nonzero(mask)
    assert p["boxes"][0].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]  # tight, inclusive
    for (x, y), lab in zip(p["points"][0], p["labels"][0]):
        assert 0 <= x < mask.shape[1] and 0 <= y < mask.shape[0]
        assert not void[int(y), int(x)]  # never on void
        assert mask[int(y), int(x)] == (lab == 1)


def noisy_box_by_hand(box, shape, rng):
    """The SAM paper's box noise, written out: standard deviation 10% of the side, capped
    at 20 px of SAM's 1024 frame, i.e. 20 * (longest side / 1024) px of the image."""
    h, w = shape
    scale = 1024 / max(h, w)  # original pixels -> SAM's frame
    out = []
    for k, v in enumerate(box):
        side = (box[2] - box[0] + 1) if k % 2 == 0 else (box[3] - box[1] + 1)
        std_frame = min(0.1 * side * scale, 20.0)
        out.append(v + rng.normal() * std_frame / scale)
    x0 = min(max(out[0], 0), w - 1)
    y0 = min(max(out[1], 0), h - 1)
    x1 = max(min(max(out[2], 0), w - 1), x0)
    y1 = max(min(max(out[3], 0), h - 1), y0)
    return np.array([x0, y0, x1, y1])


@FAST
@given(
    st.tuples(st.integers(20, 1200), st.integers(20, 1200)),
    st.floats(0.01, 0.9),
    st.floats(0.01, 0.9),
    st.integers(0, 2**31),
)
def test_box_noise_is_the_papers_in_sams_frame_for_any_aspect_ratio(shape, fw, fh, seed):
    h, w = shape
    bw, bh = max(1, int(fw * w)), max(1, int(fh * h))
    box = np.array([w // 4, h // 4, min(w - 1, w // 4 + bw), min(h - 1, h // 4 + bh)], float)
    got = noisy_box(box, shape, PromptConfig(), np.random.default_rng(seed))
    draws = np.random.default_rng(seed).normal(0.0, 1.0, 4)  # the same four draws
    rng = iter(draws)
    want = noisy_box_by_hand(box, shape, SimpleNamespace(normal=lambda: next(rng)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


# --- the shard partition ----------------------------------------------------------------


@FAST
@given(st.integers(0, 200), st.integers(1, 16))
def test_shards_cover_every_index_once_and_differ_by_at_most_one(n, world):
    shares = [list(shard(n, Place(rank=r, world=world))) for r in range(world)]
    assert sorted(i for s in shares for i in s) == list(range(n))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


# --- automatic-mask matching and the ONNX agreement figures -----------------------------


@FAST
@given(
    st.tuples(st.integers(1, 8), st.integers(1, 9), st.integers(0, 3), st.integers(0, 4)).flatmap(
        lambda s: st.tuples(
            arrays(bool, (s[2], s[0], s[1])),
            arrays(bool, (s[3], s[0], s[1])),
            arrays(bool, (s[0], s[1])),
        )
    )
)
def test_best_ious_is_the_best_counted_iou_per_instance(data):
    gt, generated, void = data
    got = best_ious(gt, list(generated), void)
    assert got.shape == (len(gt),)
    for i in range(len(gt)):
        if len(generated) == 0:
            want = 1.0 if not (gt[i] & ~void).any() else 0.0
        else:
            want = max(iou_by_hand(g, gt[i], void) for g in generated)
        assert got[i] == pytest.approx(want)


class FakeDecoder:
    """A stand-in for OnnxDecoder.predict: three masks and their scores from a table."""

    def __init__(self, answers):
        self.answers = answers

    def predict(self, emb, points=None, labels=None):
        masks, scores, low = self.answers[emb]
        return {"masks": masks[None], "iou": scores[None], "low_res": low[None]}


@FAST
@given(st.integers(1, 6), st.integers(0, 2**31))
def test_the_onnx_agreement_figures_are_the_plain_ones(n_cases, seed):
    rng = np.random.default_rng(seed)
    a_answers, b_answers, cases = {}, {}, []
    for c in range(n_cases):
        ma, mb = rng.random((3, 6, 7)) > 0.5, rng.random((3, 6, 7)) > 0.5
        sa, sb = rng.random(3), rng.random(3)  # b's own scores must not decide
        la, lb = rng.normal(size=(3, 4, 4)), rng.normal(size=(3, 4, 4))
        a_answers[c], b_answers[c] = (ma, sa, la), (mb, sb, lb)
        cases.append((c, np.zeros((1, 2))))
    got = first_click_agreement(FakeDecoder(a_answers), FakeDecoder(b_answers), cases)
    ious, diff = [], 0.0
    for c in range(n_cases):
        ma, sa, la = a_answers[c]
        mb, _, lb = b_answers[c]
        best = max(range(3), key=lambda k: sa[k])  # a's IoU head chooses, for both files
        ious.append(iou_by_hand(ma[best], mb[best]))
        diff = max(diff, float(np.max(np.abs(la - lb))))  # the largest, not the mean
    assert got["miou"] == pytest.approx(np.mean(ious))
    assert got["min_iou"] == pytest.approx(min(ious))
    assert got["max_low_res_diff"] == pytest.approx(diff)


class Clock:
    """A clock that moves only when told: reading a sample costs 1 s, generating 0.25 s."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class ReaderOnTheClock:
    """A reader whose samples cost a second of the clock and carry LabPics' ``ignore``."""

    def __init__(self, samples, clock):
        self.samples, self.clock = samples, clock

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        self.clock.now += 1.0
        return self.samples[i]


class TableGenerator:
    """A stand-in for SamAutomaticMaskGenerator: its masks for an image by a pixel tag."""

    def __init__(self, answers, clock):
        self.answers, self.clock = answers, clock

    def generate(self, image):
        self.clock.now += 0.25
        return [{"segmentation": m} for m in self.answers[int(image[0, 0, 0])]]


def test_automatic_masks_leave_ignore_out_keep_the_first_examples_and_time_generation(
    monkeypatch,
):
    import helpers.sam.automatic_masks as automatic

    clock = Clock()
    monkeypatch.setattr(automatic.time, "perf_counter", clock)
    rng = np.random.default_rng(0)
    samples, answers = [], {}
    for i in range(5):
        gt = rng.random((2, 9, 12)) > 0.6
        ignore = np.zeros((9, 12), bool)
        ignore[:, :4] = True  # a third of the image is LabPics' "ignore"
        image = np.full((9, 12, 3), i, np.uint8)
        samples.append({"image": image, "masks": gt, "ignore": ignore})
        answers[i] = [rng.random((9, 12)) > 0.5 for _ in range(3)]
    got = automatic.measure_automatic_masks(
        TableGenerator(answers, clock),
        ReaderOnTheClock(samples, clock),
        indices=[3, 1, 4],
        keep_examples=2,
        show_progress=False,
    )
    want = []
    for i in (3, 1, 4):
        for g in samples[i]["masks"]:
            want.append(max(iou_by_hand(m, g, samples[i]["ignore"]) for m in answers[i]))
    np.testing.assert_allclose(got["best_ious"], want)
    assert got["mean_best_iou"] == pytest.approx(np.mean(want))
    assert got["recall@0.5"] == pytest.approx(np.mean(np.array(want) >= 0.5))
    assert [i for i, _ in got["examples"]] == [3, 1]  # the first two by position
    assert got["images"] == 3 and got["masks_per_image"] == 3
    assert got["seconds_per_image"] == pytest.approx(0.25)  # generating, not reading
