"""The learning-rate schedule of both fine-tuning loops, against its formula by hand."""

import math

import pytest

from helpers.schedules import warmup_cosine


def test_warm_up_starts_at_one_step_of_it_and_reaches_the_full_rate():
    total, warm = 100, 10  # warmup_frac 0.1
    f = [warmup_cosine(s, total, 0.1) for s in range(total)]
    assert f[0] == pytest.approx(1 / warm)  # the first step already learns
    assert f[warm - 1] == pytest.approx(1.0)


def test_the_cosine_starts_where_the_warm_up_ends_and_ends_at_the_floor():
    total, warm, floor = 100, 10, 0.2
    f = [warmup_cosine(s, total, 0.1, floor) for s in range(total + 1)]
    assert f[warm] == pytest.approx(1.0)  # the cosine's first step: the full rate
    mid = warm + (total - warm) // 2
    assert f[mid] == pytest.approx(floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f[total] == pytest.approx(floor)
    assert max(f) == pytest.approx(1.0)  # never above the base rate
