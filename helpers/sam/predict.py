"""One SAM prediction path for training, evaluation and the widgets.

Introduced in notebook 01. The image is encoded once (:func:`embed_image`); prompts in
*original-image* pixels then go through the prompt encoder and mask decoder as a batch
(:func:`predict`), and masks come back at the original size. It is the arithmetic of
``segment_anything.SamPredictor`` (tests compare the outputs with it) without its one-image
state, so a cached embedding and a batch of instances can be used directly.

Coordinates are SamPredictor's: points are pixel indices ``(x, y)`` in the original
image (x = column; the centre of pixel ``(col, row)`` is ``(col, row)``: SAM's prompt
encoder adds the half pixel itself); boxes are ``(x0, y0, x1, y1)`` in the same frame,
first and last column and row (inclusive); point labels are 1 (foreground), 0
(background) or -1 (padding: "no point here", SAM's own not-a-point token).

:func:`predict_round` is the interactive protocol's one round, shared by training
(:mod:`helpers.sam.training`), evaluation (:mod:`helpers.sam.evaluation`) and the widget
(:mod:`helpers.views.widget`): a single point alone is ambiguous and gets SAM's three masks,
the best by the IoU head kept; any other prompt (several points, a box, points + box, a
mask from the previous round) gets the single-mask output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide


@dataclass
class ImageEmbedding:
    """The image encoder's output for one image, and the two sizes needed to map prompts
    in and masks out.

    Attributes:
        embedding: ``1 x 256 x 64 x 64`` float (fp16 when read from the cache is fine:
            :func:`predict` casts to the decoder's dtype).
        original_size: ``(H, W)`` of the image as read from disk.
        input_size: ``(h, w)`` after resizing the longest side to 1024 (before padding).
    """

    embedding: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


def preprocess(sam: Sam, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """``H x W x 3`` uint8 RGB -> the encoder's ``1 x 3 x 1024 x 1024`` input
    (longest side resized to 1024, normalised with SAM's pixel mean/std, zero-padded at
    the bottom/right), and the resized size ``(h, w)``."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be H x W x 3 uint8 RGB, got {image.shape} {image.dtype}")
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    resized = transform.apply_image(image)
    x = torch.as_tensor(resized, device=sam.device).permute(2, 0, 1).contiguous()[None]
    return sam.preprocess(x), tuple(resized.shape[:2])


@torch.no_grad()
def embed_image(sam: Sam, image: np.ndarray) -> ImageEmbedding:
    """Run the image encoder once on ``image`` (``H x W x 3`` uint8 RGB)."""
    x, input_size = preprocess(sam, image)
    return ImageEmbedding(sam.image_encoder(x), tuple(image.shape[:2]), input_size)


def predict(
    sam: Sam,
    emb: ImageEmbedding,
    points: np.ndarray | torch.Tensor | None = None,
    labels: np.ndarray | torch.Tensor | None = None,
    boxes: np.ndarray | torch.Tensor | None = None,
    mask_input: torch.Tensor | None = None,
    multimask: bool = True,
    full_size: bool = True,
) -> dict:
    """Masks for a batch of ``B`` prompts on one embedded image.

    Args:
        points: ``B x P x 2`` ``(x, y)`` original-image pixel indices, or None.
        labels: ``B x P`` 1 = foreground, 0 = background, -1 = padding (required with
            ``points``).
        boxes: ``B x 4`` ``(x0, y0, x1, y1)`` original-image pixel indices (first and last
            column and row), or None.
        mask_input: ``B x 1 x 256 x 256`` low-res logits from an earlier call (the
            mask-as-prompt refinement), or None.
        multimask: 3 masks per prompt (ambiguity) instead of 1.
        full_size: also return ``logits``/``masks`` at the original size (training
            needs only ``low_res`` and skips the upsampling).

    Returns:
        dict with ``logits`` ``B x M x H x W`` float (original size), ``masks`` the same
        thresholded at ``sam.mask_threshold`` (bool), ``iou`` ``B x M`` predicted IoU,
        ``low_res`` ``B x M x 256 x 256`` logits (feed one back as ``mask_input``);
        ``M`` is 3 or 1. Gradients flow (call under ``torch.no_grad()`` to evaluate).
    """
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    device = sam.device
    point_arg = None
    if points is not None:
        if labels is None:
            raise ValueError("points need labels (1 foreground, 0 background)")
        pts = torch.as_tensor(
            np.asarray(points, dtype=np.float32) if not torch.is_tensor(points) else points,
            dtype=torch.float32,
            device=device,
        )
        if pts.ndim != 3 or pts.shape[-1] != 2:
            raise ValueError(f"points must be B x P x 2 (x, y), got {tuple(pts.shape)}")
        pts = transform.apply_coords_torch(pts, emb.original_size)
        lab = torch.as_tensor(labels, dtype=torch.int64, device=device)
        point_arg = (pts, lab)
    box_arg = None
    if boxes is not None:
        bx = torch.as_tensor(
            np.asarray(boxes, dtype=np.float32) if not torch.is_tensor(boxes) else boxes,
            dtype=torch.float32,
            device=device,
        )
        if bx.ndim != 2 or bx.shape[-1] != 4:
            raise ValueError(f"boxes must be B x 4 (x0, y0, x1, y1), got {tuple(bx.shape)}")
        box_arg = transform.apply_boxes_torch(bx, emb.original_size)
    sparse, dense = sam.prompt_encoder(points=point_arg, boxes=box_arg, masks=mask_input)
    embedding = emb.embedding.to(device=device, dtype=sparse.dtype)
    low_res, iou = sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )
    out = {"iou": iou, "low_res": low_res}
    if full_size:
        out["logits"] = sam.postprocess_masks(low_res, emb.input_size, emb.original_size)
        out["masks"] = out["logits"] > sam.mask_threshold
    return out


def is_ambiguous(points, boxes, mask_input) -> bool:
    """True for the prompt SAM answers with three masks: exactly one point per row, no
    box, no mask prompt. Points are ``B x P x 2`` (or None)."""
    return boxes is None and mask_input is None and points is not None and points.shape[1] == 1


def predict_round(
    sam: Sam,
    emb: ImageEmbedding,
    points=None,
    labels=None,
    boxes=None,
    mask_input: torch.Tensor | None = None,
    full_size: bool = True,
) -> dict:
    """One round of the interactive protocol on a batch of ``B`` prompts (arguments as
    :func:`predict`; ``mask_input`` is the previous round's ``chosen_low_res``).

    An ambiguous prompt (:func:`is_ambiguous`) gets the three multimask outputs and the
    one with the highest predicted IoU is chosen; any other gets the single-mask output.

    Returns:
        :func:`predict`'s ``low_res`` (``B x M x 256 x 256``) and ``iou`` (``B x M``),
        ``M`` = 3 or 1, and ``multimask`` (bool), ``pick`` (``B`` int64, the chosen
        output), ``chosen_low_res`` ``B x 1 x 256 x 256`` (the next round's mask prompt),
        ``chosen_iou`` ``B``; with ``full_size`` also ``chosen_logits`` ``B x H x W`` and
        ``chosen_masks`` ``B x H x W`` bool at the original size (only the chosen mask is
        upsampled). Gradients flow, as in :func:`predict`.
    """
    multimask = is_ambiguous(points, boxes, mask_input)
    out = predict(sam, emb, points, labels, boxes, mask_input, multimask=multimask, full_size=False)
    n = out["iou"].shape[0]
    rows = torch.arange(n, device=out["iou"].device)
    pick = (
        out["iou"].argmax(dim=1)
        if multimask
        else torch.zeros(n, dtype=torch.int64, device=rows.device)
    )
    out.update(multimask=multimask, pick=pick, chosen_iou=out["iou"][rows, pick])
    out["chosen_low_res"] = out["low_res"][rows, pick][:, None]
    if full_size:
        logits = sam.postprocess_masks(
            out["chosen_low_res"].float(), emb.input_size, emb.original_size
        )
        out["chosen_logits"] = logits[:, 0]
        out["chosen_masks"] = out["chosen_logits"] > sam.mask_threshold
    return out
