"""Prompts sampled from instance masks: the first prompt of each training image.

Introduced in notebook 03. Coordinates follow ``SamPredictor``: points are pixel indices
``(x, y)`` (SAM's prompt encoder adds the half pixel itself, so nothing here does); boxes
``(x0, y0, x1, y1)`` the first and last column and row of the object, as
``segment_anything.utils.amg.batched_mask_to_box`` gives them. A foreground point says
"the object under here", a background point "not this", a box "the object filling this".

Two schemes (:class:`PromptConfig`): the course's default, after the SAM paper's first
prompt (appendix A): a foreground point or the box with equal probability, the box with
noise of a tenth of its side, at most 20 px of SAM's 1024 frame (the kind drawn once per
image, since an image's instances are one decoder batch; points from the instance's
interior); and the seed recipe's (:meth:`PromptConfig.seed`): 1 foreground + 1
background point and the tight box, points alone with probability 0.09375, the box alone
0.125, both 0.78125.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .clicks import inner_distance


@dataclass
class PromptConfig:
    """How the first prompt of an image is drawn.

    Attributes:
        n_pos, n_neg: foreground / background points per instance (when points are given).
        p_points, p_box, p_both: probabilities of points only, box only, both; they must
            sum to 1. The kind is drawn once per image (a decoder batch has one structure).
        box_noise: each box coordinate moves by a normal draw of standard deviation
            ``box_noise`` times the box's width (x) or height (y) ...
        box_noise_max: ... at most this many pixels of SAM's 1024 frame (see
            :func:`noisy_box`); the box is then clipped to the image. ``box_noise=0``:
            the tight box.
    """

    n_pos: int = 1
    n_neg: int = 0
    p_points: float = 0.5
    p_box: float = 0.5
    p_both: float = 0.0
    box_noise: float = 0.1
    box_noise_max: float = 20.0

    def __post_init__(self):
        probs = (self.p_points, self.p_box, self.p_both)
        if min(probs) < 0 or abs(sum(probs) - 1) > 1e-9:
            raise ValueError(
                f"PromptConfig: p_points, p_box, p_both must be >= 0 and sum to 1, got {probs}"
            )
        if self.n_pos < 0 or self.n_neg < 0 or (self.n_pos + self.n_neg == 0 and self.p_box < 1):
            raise ValueError(
                "PromptConfig: point prompts need n_pos + n_neg >= 1, "
                f"got {self.n_pos} + {self.n_neg}"
            )

    @classmethod
    def seed(cls) -> PromptConfig:
        """The seed recipe's scheme (notebook 03 derives it from the seed's code): 1 + 1
        points and the tight box; the points dropped with probability 0.5 x 0.25 = 0.125,
        the box with 0.5 x 0.75 x 0.25 = 0.09375, both kept otherwise (0.78125)."""
        drop_points = 0.5 * 0.25
        drop_box = 0.5 * 0.75 * 0.25
        return cls(
            n_pos=1,
            n_neg=1,
            p_points=drop_box,
            p_box=drop_points,
            p_both=1 - drop_points - drop_box,
            box_noise=0.0,
        )


@dataclass
class InstanceCandidates:
    """Where an instance's points may go, computed once per instance.

    ``fg``: flat indices of foreground candidates (the interior: pixels at least 3 px, or
    half the largest distance, from the border; all mask pixels for tiny instances).
    ``bg``: flat indices of background candidates near the object (inside its box grown by
    half its size, not in the mask, not void); all non-mask, non-void pixels if none.
    ``box``: ``(x0, y0, x1, y1)`` float32, the first and last column and row of the mask
    (inclusive pixel indices). ``shape``: ``(H, W)``.
    """

    fg: np.ndarray
    bg: np.ndarray
    box: np.ndarray
    shape: tuple[int, int]


def instance_candidates(mask: np.ndarray, void: np.ndarray | None = None) -> InstanceCandidates:
    """Candidates for one ``H x W`` bool instance mask (non-empty); ``void`` pixels are
    never used."""
    if not mask.any():
        raise ValueError("instance_candidates: empty mask")
    h, w = mask.shape
    void = np.zeros_like(mask) if void is None else void.astype(bool)
    dist = inner_distance(mask)
    interior = (dist >= min(3.0, dist.max() / 2)) & ~void
    fg = np.flatnonzero(interior) if interior.any() else np.flatnonzero(mask & ~void)
    if fg.size == 0:
        fg = np.flatnonzero(mask)
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)
    bw, bh = box[2] - box[0] + 1, box[3] - box[1] + 1
    near = np.zeros_like(mask)
    r0, r1 = max(0, int(box[1] - bh / 2)), int(box[3] + 1 + bh / 2)
    c0, c1 = max(0, int(box[0] - bw / 2)), int(box[2] + 1 + bw / 2)
    near[r0:r1, c0:c1] = True
    outside = ~mask & ~void
    bg = np.flatnonzero(near & outside)
    if bg.size == 0:
        bg = np.flatnonzero(outside)
    return InstanceCandidates(fg, bg, box, (h, w))


def choose_kinds(cfg: PromptConfig, rng: np.random.Generator) -> tuple[bool, bool]:
    """(points?, box?) for one draw, following ``cfg`` (see :class:`PromptConfig`)."""
    u = rng.random()
    if u < cfg.p_points:
        return True, False
    if u < cfg.p_points + cfg.p_box:
        return False, True
    return True, True


def sample_prompts(
    cands: list[InstanceCandidates], cfg: PromptConfig, rng: np.random.Generator
) -> dict:
    """The first prompt for all instances of one image, one decoder batch.

    The prompt kind is drawn once for the image (a decoder batch needs one structure),
    points and box noise per instance.

    Returns:
        dict with ``points`` ``N x P x 2`` float32 pixel indices ``(x, y)`` and ``labels``
        ``N x P`` int64 (``P = n_pos + n_neg``, foreground first), or None for both;
        ``boxes`` ``N x 4`` float32 ``(x0, y0, x1, y1)`` inclusive pixel indices, or None.
    """
    with_points, with_box = choose_kinds(cfg, rng)
    points = labels = boxes = None
    if with_points:
        # an object that fills the whole (non-void) image leaves no place for a negative
        n_neg = cfg.n_neg if all(c.bg.size for c in cands) else 0
        pts = []
        for c in cands:
            idx = np.concatenate([rng.choice(c.fg, cfg.n_pos), rng.choice(c.bg, n_neg)]).astype(
                np.int64
            )
            ys, xs = np.unravel_index(idx, c.shape)
            pts.append(np.stack([xs, ys], axis=1))
        points = np.stack(pts).astype(np.float32)
        labels = np.tile(np.array([1] * cfg.n_pos + [0] * n_neg, dtype=np.int64), (len(cands), 1))
    if with_box:
        boxes = np.stack([noisy_box(c.box, c.shape, cfg, rng) for c in cands]).astype(np.float32)
    return {"points": points, "labels": labels, "boxes": boxes}


def noisy_box(
    box: np.ndarray, shape: tuple[int, int], cfg: PromptConfig, rng: np.random.Generator
) -> np.ndarray:
    """``box`` with the SAM paper's noise: each coordinate moves by a normal draw whose
    standard deviation is ``box_noise`` times the box's width (x) or height (y), capped at
    ``box_noise_max`` pixels of SAM's 1024 input frame (our reading of "standard deviation
    equal to 10% of the box sidelength, to a maximum of 20 pixels"; in the original image
    the cap is ``box_noise_max * max(H, W) / 1024``). Then clipped into the image, keeping
    ``x0 <= x1`` and ``y0 <= y1``."""
    if cfg.box_noise <= 0:
        return box.copy()
    h, w = shape
    cap = cfg.box_noise_max * max(h, w) / 1024
    bw, bh = box[2] - box[0] + 1, box[3] - box[1] + 1
    std = np.minimum(cfg.box_noise * np.array([bw, bh, bw, bh]), cap)
    out = box + rng.normal(0.0, 1.0, 4) * std
    out = np.clip(out, 0, [w - 1, h - 1, w - 1, h - 1])
    out[2], out[3] = max(out[2], out[0]), max(out[3], out[1])
    return out
