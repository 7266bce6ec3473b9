"""Measuring a SAM decoder: the interactive protocol and box prompts (notebook 03).

For every instance: up to ``max_clicks`` simulated clicks
(:func:`helpers.sam.clicks.next_click`), each one round of
:func:`helpers.sam.predict.predict_round` (click 1 alone gets three masks and the IoU
head's best; later clicks send every click so far and the previous low-res logits), IoU
at the original size without void: **mIoU@k** after k clicks, **NoC@85 / NoC@90** the
clicks to reach IoU 0.85 / 0.90 (``max_clicks`` if never); the tight box alone, single
mask: **box mIoU**; per class, IoU at 1 click and with the box. An image's instances are
one decoder batch; one with no error left gets a padding point (label -1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling import Sam

from ..course.runtime import progress
from ..data.voc import VOC_CLASSES
from ..metrics import mask_iou
from ..remembered import fingerprint, remembered
from .clicks import next_click, noc
from .items import SamItem
from .model import encoder_fingerprint
from .predict import predict_round

#: Bump when the protocol changes what it measures: results remembered before are then
#: computed again (:func:`helpers.remembered.remembered`).
PROTOCOL_VERSION = "clicks-rittm-dt/stop-at-max-threshold/v1"


@torch.no_grad()
def click_ious(
    sam: Sam, item: SamItem, max_clicks: int = 20, stop_at: float | None = None, min_clicks: int = 5
) -> np.ndarray:
    """IoU after each simulated click, ``N x max_clicks`` for the ``N`` instances of
    ``item``. With ``stop_at``, clicking stops once every instance has reached that IoU
    and ``min_clicks`` were made; the remaining columns repeat the last IoU (they do not
    change any NoC at or below ``stop_at`` nor mIoU at ``min_clicks`` or fewer)."""
    n, (h, w) = len(item.masks), item.void.shape
    pred = np.zeros((n, h, w), bool)
    clicked = np.zeros((n, h, w), bool)
    points = np.zeros((n, 0, 2), np.float32)
    labels = np.zeros((n, 0), np.int64)
    ious = np.zeros((n, max_clicks))
    low = None
    for k in range(max_clicks):
        new_pts, new_labs = [], []
        for i in range(n):
            click = next_click(pred[i], item.masks[i], item.void, clicked[i])
            if click is None:  # nothing left to fix: a padding point
                new_pts.append((0.0, 0.0))
                new_labs.append(-1)
                continue
            x, y, positive = click
            clicked[i, int(y), int(x)] = True
            new_pts.append((x, y))
            new_labs.append(int(positive))
        points = np.concatenate([points, np.array(new_pts, np.float32)[:, None]], axis=1)
        labels = np.concatenate([labels, np.array(new_labs, np.int64)[:, None]], axis=1)
        out = predict_round(sam, item.emb, points, labels, mask_input=low)
        low = out["chosen_low_res"]
        pred = out["chosen_masks"].cpu().numpy()
        ious[:, k] = [mask_iou(pred[i], item.masks[i], item.void) for i in range(n)]
        if (
            stop_at is not None
            and k + 1 >= min_clicks
            and (ious[:, : k + 1].max(axis=1) >= stop_at).all()
        ):
            ious[:, k + 1 :] = ious[:, k : k + 1]
            break
    return ious


@torch.no_grad()
def box_ious(sam: Sam, item: SamItem) -> np.ndarray:
    """IoU of the one mask predicted from each instance's tight box (``N``)."""
    boxes = np.stack([c.box for c in item.cands])
    masks = predict_round(sam, item.emb, boxes=boxes)["chosen_masks"].cpu().numpy()
    return np.array([mask_iou(masks[i], item.masks[i], item.void) for i in range(len(masks))])


def evaluate(
    sam: Sam,
    items: list[SamItem],
    max_clicks: int = 20,
    ks=(1, 3, 5),
    thresholds=(0.85, 0.90),
    class_names=VOC_CLASSES,
    show_progress: bool = True,
    cache: str | Path | None = None,
) -> dict:
    """The before/after numbers for one model on ``items``.

    With ``cache`` (a folder), a result computed before for the same decoder and prompt
    encoder weights, encoder, settings and items is read back instead of computed again
    (:func:`helpers.remembered.remembered`): a rerun after a disconnect skips finished
    evaluations.

    Returns:
        dict with ``miou@k`` for each k, ``noc@85``/``noc@90`` (means), ``box_miou``,
        ``instances`` (count), ``per_class`` (``{name: {"iou@1", "box_iou", "n"}}``) and
        the raw ``click_ious`` (``instances x max_clicks``) and ``box_ious``.
    """
    if cache is None:
        return _evaluate(sam, items, max_clicks, ks, thresholds, class_names, show_progress)
    key = fingerprint(
        "sam-evaluate",
        PROTOCOL_VERSION,
        sam.mask_decoder,
        sam.prompt_encoder,
        encoder_fingerprint(sam),
        max_clicks,
        ks,
        thresholds,
        class_names,
        [(it.image_id, it.masks, it.labels, it.void, it.emb.original_size) for it in items],
    )
    return remembered(
        cache,
        "sam-evaluation",
        key,
        lambda: _evaluate(sam, items, max_clicks, ks, thresholds, class_names, show_progress),
    )


def _evaluate(sam, items, max_clicks, ks, thresholds, class_names, show_progress) -> dict:
    sam.eval()
    curves, boxes, labels = [], [], []
    for item in progress(items, show=show_progress, desc="evaluating", leave=False):
        curves.append(
            click_ious(sam, item, max_clicks, stop_at=max(thresholds), min_clicks=max(ks))
        )
        boxes.append(box_ious(sam, item))
        labels.append(item.labels)
    curves, boxes, labels = np.concatenate(curves), np.concatenate(boxes), np.concatenate(labels)
    result = {f"miou@{k}": float(curves[:, k - 1].mean()) for k in ks if k <= max_clicks}
    for t in thresholds:
        result[f"noc@{round(t * 100)}"] = float(np.mean([noc(c, t, max_clicks) for c in curves]))
    result["box_miou"] = float(boxes.mean())
    result["instances"] = len(curves)
    result["per_class"] = {
        class_names[c - 1]: {
            "iou@1": float(curves[labels == c, 0].mean()),
            "box_iou": float(boxes[labels == c].mean()),
            "n": int((labels == c).sum()),
        }
        for c in np.unique(labels)
    }
    result["click_ious"], result["box_ious"] = curves, boxes
    return result


def comparison_table(results: dict[str, dict]) -> str:
    """A plain-text table of :func:`evaluate` results side by side (e.g. before, after):
    the summary metrics, then IoU at 1 click and box IoU per class. mIoU: higher is
    better; NoC: lower is better. Columns widen to fit the run names."""
    names = list(results)
    width = max(12, *(len(n) + 2 for n in names))
    keys = [k for k in next(iter(results.values())) if k.startswith(("miou@", "noc@", "box_miou"))]
    lines = [f"{'metric':20s}" + "".join(f"{n:>{width}s}" for n in names)]
    for k in keys:
        lines.append(f"{k:20s}" + "".join(f"{results[n][k]:{width}.3f}" for n in names))
    classes = sorted(set().union(*(r["per_class"] for r in results.values())))
    for key, title in (("iou@1", "per class, IoU at 1 click"), ("box_iou", "per class, box IoU")):
        lines += [
            "",
            title,
            f"{'class (instances)':20s}" + "".join(f"{n:>{width}s}" for n in names),
        ]
        for c in classes:
            n_inst = next(r["per_class"][c]["n"] for r in results.values() if c in r["per_class"])
            row = f"{c + f' ({n_inst})':20s}"
            for n in names:
                row += f"{results[n]['per_class'].get(c, {}).get(key, float('nan')):{width}.3f}"
            lines.append(row)
    return "\n".join(lines)
