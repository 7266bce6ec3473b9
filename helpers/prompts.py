"""Prompts sampled from instance masks, the way the decoder is trained and evaluated.

Introduced in notebook 03. All coordinates are in original-image pixels: points
``(x, y)`` (x = column), boxes ``(x0, y0, x1, y1)`` on pixel edges.

What each prompt teaches the decoder: a **foreground point** says "the object under
here", a **background point** "not this", a **box** "the object filling this". The seed
recipe gives each instance 1 foreground + 1 background point and its tight box, and when
both kinds are on, drops one at random so that the decoder learns to answer either.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class PromptConfig:
    """How prompts are drawn. Defaults follow the seed recipe.

    Attributes:
        n_pos, n_neg: foreground / background points per instance.
        use_points, use_box: which kinds are on.
        both_prob: when both kinds are on, the probability of giving both; otherwise one
            kind is dropped, points or box with equal probability ``(1 - both_prob) / 2``
            each. The recipe's value is 0: always exactly one kind.
        box_jitter: each box edge moves by a uniform amount in ``[-j, j]`` times the box's
            width (x edges) or height (y edges), clipped to the image; 0 = tight box.
    """

    n_pos: int = 1
    n_neg: int = 1
    use_points: bool = True
    use_box: bool = True
    both_prob: float = 0.0
    box_jitter: float = 0.0


@dataclass
class InstanceCandidates:
    """Where an instance's points may go, computed once per instance.

    ``fg``: flat indices of foreground candidates (the interior: pixels at least 3 px, or
    half the largest distance, from the border; all mask pixels for tiny instances).
    ``bg``: flat indices of background candidates near the object (inside its box grown by
    half its size, not in the mask, not void); all non-mask, non-void pixels if none.
    ``box``: the tight box on pixel edges. ``shape``: ``(H, W)``.
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
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    interior = (dist >= min(3.0, dist.max() / 2)) & ~void
    fg = np.flatnonzero(interior) if interior.any() else np.flatnonzero(mask & ~void)
    if fg.size == 0:
        fg = np.flatnonzero(mask)
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
    bw, bh = box[2] - box[0], box[3] - box[1]
    near = np.zeros_like(mask)
    near[max(0, int(box[1] - bh / 2)) : int(box[3] + bh / 2), max(0, int(box[0] - bw / 2)) : int(box[2] + bw / 2)] = True
    outside = ~mask & ~void
    bg = np.flatnonzero(near & outside)
    if bg.size == 0:
        bg = np.flatnonzero(outside)
    return InstanceCandidates(fg, bg, box, (h, w))


def choose_kinds(cfg: PromptConfig, rng: np.random.Generator) -> tuple[bool, bool]:
    """(points?, box?) for one draw, following ``cfg`` (see :class:`PromptConfig`)."""
    if cfg.use_points and cfg.use_box:
        u = rng.random()
        if u < cfg.both_prob:
            return True, True
        return (True, False) if u < cfg.both_prob + (1 - cfg.both_prob) / 2 else (False, True)
    if not (cfg.use_points or cfg.use_box):
        raise ValueError("PromptConfig: at least one of use_points and use_box must be on")
    return cfg.use_points, cfg.use_box


def sample_prompts(cands: list[InstanceCandidates], cfg: PromptConfig, rng: np.random.Generator) -> dict:
    """Prompts for all instances of one image, one decoder batch.

    The prompt kind is drawn once for the image (a decoder batch needs one structure),
    points and jitter per instance.

    Returns:
        dict with ``points`` ``N x P x 2`` float32 ``(x, y)`` and ``labels`` ``N x P``
        int64 (``P = n_pos + n_neg``, foreground first), or None for both; ``boxes``
        ``N x 4`` float32 or None.
    """
    with_points, with_box = choose_kinds(cfg, rng)
    points = labels = boxes = None
    if with_points:
        # an object that fills the whole (non-void) image leaves no place for a negative
        n_neg = cfg.n_neg if all(c.bg.size for c in cands) else 0
        pts = []
        for c in cands:
            idx = np.concatenate([rng.choice(c.fg, cfg.n_pos), rng.choice(c.bg, n_neg)]).astype(np.int64)
            ys, xs = np.unravel_index(idx, c.shape)
            pts.append(np.stack([xs + 0.5, ys + 0.5], axis=1))  # a point at its pixel's centre
        points = np.stack(pts).astype(np.float32)
        labels = np.tile(np.array([1] * cfg.n_pos + [0] * n_neg, dtype=np.int64), (len(cands), 1))
    if with_box:
        boxes = np.stack([_jitter(c.box, c.shape, cfg.box_jitter, rng) for c in cands]).astype(np.float32)
    return {"points": points, "labels": labels, "boxes": boxes}


def _jitter(box: np.ndarray, shape: tuple[int, int], amount: float, rng: np.random.Generator) -> np.ndarray:
    if amount <= 0:
        return box.copy()
    h, w = shape
    bw, bh = box[2] - box[0], box[3] - box[1]
    out = box + rng.uniform(-amount, amount, 4) * np.array([bw, bh, bw, bh])
    out = np.clip(out, 0, [w, h, w, h])
    out[2] = max(out[2], out[0] + 1)
    out[3] = max(out[3], out[1] + 1)
    return out
