"""Which parts of SAM's mask decoder a fine-tuning run moved, and by how much.

Introduced in notebook 03, which compares the two recipes: the seed's loss reaches only
the single-mask output, so the three multimask outputs and the IoU head move by weight
decay alone; the SAM recipe trains all of them. :func:`decoder_groups` splits the
decoder's parameters by the output they serve, :func:`decoder_changes` measures each
group's relative change between two state dicts, and :func:`weight_decay_only_change` is
the change that AdamW's decoupled weight decay alone gives, the reference line.
"""

from __future__ import annotations

import math

import torch

from .training import SamTrainConfig, lr_factor


def decoder_groups(decoder: torch.nn.Module) -> dict[str, list[tuple[str, slice | int | None]]]:
    """The mask decoder's parameters by the output they serve: ``{group: [(parameter
    name, row or None for all of it)]}``.

    Mask token ``k`` and its hypernetwork MLP make output ``k``; the IoU head's last
    layer has one row per output (row ``k`` scores mask ``k``). Output 0 is the
    single-mask answer, outputs 1-3 the multimask answers (``MaskDecoder.forward`` slices
    ``1:`` for ``multimask_output=True``, ``0:1`` otherwise).
    """
    names = [n for n, _ in decoder.named_parameters()]
    last = f"iou_prediction_head.layers.{len(decoder.iou_prediction_head.layers) - 1}"
    groups: dict[str, list] = {
        "transformer": [(n, None) for n in names if n.startswith("transformer.")],
        "upscaling": [(n, None) for n in names if n.startswith("output_upscaling.")],
        "IoU token": [("iou_token.weight", None)],
        "IoU head, shared layers": [
            (n, None)
            for n in names
            if n.startswith("iou_prediction_head.") and not n.startswith(last)
        ],
    }
    for k in range(decoder.num_mask_tokens):
        which = "single mask" if k == 0 else f"multimask {k}"
        groups[f"mask token {k} ({which})"] = [("mask_tokens.weight", k)]
        groups[f"mask MLP {k} ({which})"] = [
            (n, None) for n in names if n.startswith(f"output_hypernetworks_mlps.{k}.")
        ]
        groups[f"IoU head row {k} ({which})"] = [(f"{last}.weight", k), (f"{last}.bias", k)]
    return groups


def decoder_changes(before: dict, after: dict, decoder: torch.nn.Module) -> dict[str, float]:
    """Relative change ``||after - before|| / ||before||`` of each group of
    :func:`decoder_groups`, from two ``mask_decoder`` state dicts (keys without the
    ``mask_decoder.`` prefix)."""
    changes = {}
    for group, entries in decoder_groups(decoder).items():
        diff = ref = 0.0
        for name, row in entries:
            a, b = before[name].double(), after[name].double()
            if row is not None:
                a, b = a[row], b[row]
            diff += float(((b - a) ** 2).sum())
            ref += float((a**2).sum())
        changes[group] = math.sqrt(diff) / max(math.sqrt(ref), 1e-12)
    return changes


def weight_decay_only_change(cfg: SamTrainConfig, steps: int) -> float:
    """The relative change of a parameter whose gradient was zero at each of ``steps``
    AdamW steps (the first ``steps`` of a run of ``steps`` in all): Adam's update is then
    0 and only the decoupled weight decay moves it, ``p <- p (1 - lr_t wd)``, so the change
    is ``1 - prod_t (1 - lr_t wd)``. (A parameter that gets no gradient at all, ``None``,
    is skipped by AdamW and does not move.)"""
    keep = 1.0
    for t in range(steps):
        keep *= 1 - cfg.lr * lr_factor(t, steps, cfg) * cfg.weight_decay
    return 1 - keep
