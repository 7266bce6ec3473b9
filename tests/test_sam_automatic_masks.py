"""helpers.sam.automatic_masks: the best IoU of each instance against a plain count, and the
measurement of a generator's masks."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from oracles import FAST, iou_by_hand
from pycocotools import mask as mask_utils

from helpers.sam.automatic_masks import automatic_table, best_ious, measure_automatic_masks


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


def _rle(masks):
    return [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]


def test_best_iou_per_instance_equals_pycocotools():
    rng = np.random.default_rng(0)
    h, w = 40, 60
    gt, gen = [], []
    for _ in range(5):
        m = np.zeros((h, w), bool)
        y, x = rng.integers(0, 30), rng.integers(0, 45)
        m[y : y + rng.integers(5, 10), x : x + rng.integers(5, 15)] = True
        gt.append(m)
    for _ in range(9):
        m = np.zeros((h, w), bool)
        y, x = rng.integers(0, 30), rng.integers(0, 45)
        m[y : y + rng.integers(4, 12), x : x + rng.integers(4, 16)] = True
        gen.append(m)
    gen.append(gt[2].copy())  # one instance found exactly
    oracle = mask_utils.iou(_rle(gen), _rle(gt), [0] * len(gt))  # G x N
    got = best_ious(np.stack(gt), gen)
    np.testing.assert_allclose(got, oracle.max(axis=0), atol=1e-6)
    assert got[2] == 1.0


def test_void_counts_on_neither_side_and_nothing_generated_is_zero():
    gt = np.zeros((1, 10, 10), bool)
    gt[0, 2:6, 2:6] = True  # 16 pixels
    pred = np.zeros((10, 10), bool)
    pred[2:7, 2:6] = True  # 4 more, on the void row
    void = np.zeros((10, 10), bool)
    void[6] = True
    assert best_ious(gt, [pred], void)[0] == 1.0
    assert best_ious(gt, [pred])[0] == pytest.approx(16 / 20)
    assert best_ious(gt, [])[0] == 0.0
    with pytest.raises(ValueError, match="size"):
        best_ious(gt, [np.zeros((5, 5), bool)])


def test_measure_counts_recall_and_masks_per_image():
    h, w = 20, 20
    a = np.zeros((h, w), bool)
    a[:10, :10] = True
    b = np.zeros((h, w), bool)
    b[10:, 10:] = True  # 100 pixels
    half_b = np.zeros((h, w), bool)
    half_b[10:, 10:15] = True  # IoU 0.5 with b: on the threshold, which counts
    reader = [
        {"image": np.zeros((h, w, 3), np.uint8), "masks": np.stack([a, b])},
        {"image": np.ones((h, w, 3), np.uint8), "masks": np.stack([b])},
    ]

    class Known:  # image 0: a found exactly, b at 0.5; image 1: nothing
        def generate(self, image):
            if image.max() == 0:
                return [{"segmentation": a}, {"segmentation": half_b}, {"segmentation": ~a}]
            return []

    r = measure_automatic_masks(Known(), reader, show_progress=False, keep_examples=1)
    np.testing.assert_allclose(r["best_ious"], [1.0, 0.5, 0.0])
    assert r["mean_best_iou"] == pytest.approx(0.5)
    assert r["recall@0.5"] == pytest.approx(2 / 3) and r["recall@0.75"] == pytest.approx(1 / 3)
    assert r["instances"] == 3 and r["images"] == 2 and r["masks_per_image"] == 1.5
    assert len(r["examples"]) == 1 and r["examples"][0][0] == 0
    table = automatic_table({"before": r})
    assert "before" in table and "0.500" in table and "0.667" in table
