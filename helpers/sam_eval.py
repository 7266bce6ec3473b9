"""Measuring a SAM decoder: the interactive protocol and box prompts.

Introduced in notebook 03. For every instance of every image:

- **clicks**: up to ``max_clicks`` simulated clicks (:mod:`helpers.clicks`); click 1 asks
  for 3 masks and keeps the best by predicted IoU; every later click passes all clicks so
  far plus the previous low-res logits as ``mask_input`` and asks for 1 mask. IoU is
  measured at the original size with void pixels left out. Reported: mIoU at 1, 3 and 5
  clicks, and NoC@85 / NoC@90 (clicks to reach that IoU; ``max_clicks`` if never);
- **box**: the tight box as the only prompt, one mask: box mIoU;
- **per class**: mean IoU at 1 click and with the box, per VOC class.

All instances of an image go through the decoder as one batch at every click.
"""

from __future__ import annotations

import numpy as np
import torch
from segment_anything.modeling import Sam

from .clicks import next_click, noc
from .metrics import mask_iou
from .runtime import progress
from .sam_predict import predict
from .sam_training import SamItem
from .voc import VOC_CLASSES


@torch.no_grad()
def click_ious(sam: Sam, item: SamItem, max_clicks: int = 20, stop_at: float | None = None, min_clicks: int = 5) -> np.ndarray:
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
            if click is None:  # nothing left to fix: repeat the last click (a no-op prompt)
                click = (*points[i, -1], bool(labels[i, -1])) if k else (0.5, 0.5, False)
            x, y, positive = click
            clicked[i, int(y), int(x)] = True
            new_pts.append((x, y))
            new_labs.append(int(positive))
        points = np.concatenate([points, np.array(new_pts, np.float32)[:, None]], axis=1)
        labels = np.concatenate([labels, np.array(new_labs, np.int64)[:, None]], axis=1)
        out = predict(sam, item.emb, points, labels, mask_input=low, multimask=k == 0)
        pick = out["iou"].argmax(dim=1) if k == 0 else torch.zeros(n, dtype=torch.int64)
        rows = torch.arange(n)
        low = out["low_res"][rows, pick][:, None]
        pred = out["masks"][rows, pick].cpu().numpy()
        ious[:, k] = [mask_iou(pred[i], item.masks[i], item.void) for i in range(n)]
        if stop_at is not None and k + 1 >= min_clicks and (ious[:, : k + 1].max(axis=1) >= stop_at).all():
            ious[:, k + 1 :] = ious[:, k : k + 1]
            break
    return ious


@torch.no_grad()
def box_ious(sam: Sam, item: SamItem) -> np.ndarray:
    """IoU of the one mask predicted from each instance's tight box (``N``)."""
    boxes = np.stack([c.box for c in item.cands])
    out = predict(sam, item.emb, boxes=boxes, multimask=False)
    masks = out["masks"][:, 0].cpu().numpy()
    return np.array([mask_iou(masks[i], item.masks[i], item.void) for i in range(len(masks))])


def evaluate(sam: Sam, items: list[SamItem], max_clicks: int = 20, ks=(1, 3, 5), thresholds=(0.85, 0.90),
             class_names=VOC_CLASSES, show_progress: bool = True) -> dict:  # fmt: skip
    """The before/after numbers for one model on ``items``.

    Returns:
        dict with ``miou@k`` for each k, ``noc@85``/``noc@90`` (means), ``box_miou``,
        ``instances`` (count), ``per_class`` (``{name: {"iou@1", "box_iou", "n"}}``) and
        the raw ``click_ious`` (``instances x max_clicks``) and ``box_ious``.
    """
    sam.eval()
    curves, boxes, labels = [], [], []
    for item in progress(items, show=show_progress, desc="evaluating", leave=False):
        curves.append(click_ious(sam, item, max_clicks, stop_at=max(thresholds), min_clicks=max(ks)))
        boxes.append(box_ious(sam, item))
        labels.append(item.labels)
    curves, boxes, labels = np.concatenate(curves), np.concatenate(boxes), np.concatenate(labels)
    result = {f"miou@{k}": float(curves[:, k - 1].mean()) for k in ks if k <= max_clicks}
    for t in thresholds:
        result[f"noc@{round(t * 100)}"] = float(np.mean([noc(c, t, max_clicks) for c in curves]))
    result["box_miou"] = float(boxes.mean())
    result["instances"] = len(curves)
    result["per_class"] = {
        class_names[c - 1]: {"iou@1": float(curves[labels == c, 0].mean()), "box_iou": float(boxes[labels == c].mean()), "n": int((labels == c).sum())}
        for c in np.unique(labels)
    }
    result["click_ious"], result["box_ious"] = curves, boxes
    return result


def comparison_table(results: dict[str, dict]) -> str:
    """A plain-text table of :func:`evaluate` results side by side (e.g. before, after).
    mIoU: higher is better; NoC: lower is better."""
    names = list(results)
    keys = [k for k in next(iter(results.values())) if k.startswith(("miou@", "noc@", "box_miou"))]
    lines = [f"{'metric':12s}" + "".join(f"{n:>12s}" for n in names)]
    for k in keys:
        lines.append(f"{k:12s}" + "".join(f"{results[n][k]:12.3f}" for n in names))
    classes = sorted(set().union(*(r["per_class"] for r in results.values())))
    lines.append("")
    lines.append(f"{'class (n)':20s}" + "".join(f"{n + ' @1':>12s}{n + ' box':>12s}" for n in names))
    for c in classes:
        n_inst = next(r["per_class"][c]["n"] for r in results.values() if c in r["per_class"])
        row = f"{c + f' ({n_inst})':20s}"
        for n in names:
            pc = results[n]["per_class"].get(c, {"iou@1": float("nan"), "box_iou": float("nan")})
            row += f"{pc['iou@1']:12.3f}{pc['box_iou']:12.3f}"
        lines.append(row)
    return "\n".join(lines)
