"""helpers.sam.onnx_comparison: the agreement figures of two decoder files, against a plain
count."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from oracles import FAST, iou_by_hand

from helpers.sam.onnx_comparison import first_click_agreement


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
