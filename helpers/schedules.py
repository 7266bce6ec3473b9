"""Learning-rate schedules shared by the two fine-tuning notebooks (03 and 04)."""

from __future__ import annotations

import math


def warmup_cosine(
    step: int, total: int, warmup_frac: float = 0.05, min_lr_frac: float = 0.0
) -> float:
    """The learning-rate multiplier at ``step`` (0-based) of ``total``: linear warm-up from
    ``1 / warm`` to 1 over ``warm = max(1, round(warmup_frac * total))`` steps, then cosine
    decay from 1 to ``min_lr_frac`` at the last step. Use with ``LambdaLR``, stepped once
    per optimizer step."""
    warm = max(1, int(round(warmup_frac * total)))
    if step < warm:
        return (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return min_lr_frac + (1 - min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
