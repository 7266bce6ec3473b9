"""One SAM prediction path for training, evaluation and the widgets (notebook 01).

The image is encoded once (:func:`embed_image`); prompts in original-image pixels go
through the prompt encoder and mask decoder as a batch (:func:`predict`), masks come back
at the original size: ``SamPredictor``'s arithmetic (the tests compare them) without its
one-image state. :func:`predict_round` is the interactive protocol's round: a single
point alone is ambiguous and gets three masks, the IoU head's best kept.

Coordinates are SamPredictor's: points are pixel indices ``(x, y)`` (x = column; SAM's
prompt encoder adds the half pixel itself), boxes ``(x0, y0, x1, y1)`` the first and last
column and row, point labels 1 (foreground), 0 (background) or -1 (padding).
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
        embedding: ``1 x C x g x g`` float, the image encoder's output (``1 x 256 x 64 x 64``
            for the official models; fp16 from the cache is fine: :func:`predict` casts).
        original_size: ``(H, W)`` of the image as read from disk.
        input_size: ``(h, w)`` after resizing the longest side to the encoder's input side
            (``sam.image_encoder.img_size``: 1024 for the official models), before padding.
    """

    embedding: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


def preprocess(sam: Sam, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """``H x W x 3`` uint8 RGB -> the encoder's ``1 x 3 x F x F`` input (``F`` =
    ``sam.image_encoder.img_size``: longest side resized to ``F``, normalised with SAM's
    pixel mean/std, zero-padded at the bottom/right), and the resized size ``(h, w)``."""
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


#: How far outside the image a prompt may lie, in pixels (SAM accepts points a little
#: outside; farther away they are a mistake, e.g. coordinates of another image).
OUTSIDE_TOLERANCE = 0.5


def finite_numbers(values, what: str) -> np.ndarray:
    """``values`` as finite float32, or a ValueError that names ``what``."""
    if torch.is_tensor(values):
        values = values.detach().cpu()
    try:
        array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numbers, got {values!r}") from None
    if not np.isfinite(array).all():
        raise ValueError(f"{what} must be finite, got {array.tolist()}")
    return array


def _inside(xy: np.ndarray, h: int, w: int, what: str) -> None:
    """ValueError unless every ``(x, y)`` lies on the ``h x w`` image (pixel indices)."""
    lo, hi = -OUTSIDE_TOLERANCE, np.array([w - 1, h - 1]) + OUTSIDE_TOLERANCE
    if (xy < lo).any() or (xy > hi).any():
        raise ValueError(
            f"{what} {xy.tolist()} lie outside the {w} x {h} image (x in 0..{w - 1}, "
            f"y in 0..{h - 1})"
        )


def check_prompts(
    original_size: tuple[int, int], points=None, labels=None, boxes=None, box_name: str = "boxes"
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Prompts checked before they reach a decoder, PyTorch's (:func:`predict`) or
    onnxruntime's (:class:`helpers.sam.onnx_decoder.OnnxDecoder`).

    Args:
        original_size: ``(H, W)`` of the image; points: ``... x 2`` ``(x, y)`` pixel
            indices; labels: the points' shape less its last axis, 1, 0 or -1 (padding,
            whose place is not read); boxes: ``... x 4`` ``(x0, y0, x1, y1)``.

    Returns:
        ``(points float32, labels int64, boxes float32)`` numpy, None where not given.

    Raises:
        ValueError, naming the prompt: a value that is not finite, a label other than 1, 0,
            -1, a label count unlike the point count, a point or corner more than
            :data:`OUTSIDE_TOLERANCE` off the image, a box with swapped corners."""
    h, w = (int(v) for v in original_size)
    if h < 1 or w < 1:
        raise ValueError(f"original_size must be (H, W) of at least one pixel, got {(h, w)}")
    if points is not None:
        points = finite_numbers(points, "points")
        if labels is None:
            raise ValueError("points need labels (1 foreground, 0 background, -1 padding)")
        codes = finite_numbers(labels, "labels")
        if points.ndim < 1 or points.shape[-1] != 2 or codes.shape != points.shape[:-1]:
            raise ValueError(
                f"labels must be one per point: points of shape {points.shape}, labels of "
                f"shape {codes.shape}"
            )
        if not np.isin(codes, (0.0, 1.0, -1.0)).all():
            raise ValueError(
                f"point labels must be 1 (foreground), 0 (background) or -1 (padding), got "
                f"{sorted(set(codes.ravel().tolist()))} (a box is given as a box, not as "
                "labels 2/3)"
            )
        _inside(points[codes != -1], h, w, "points")
        labels = codes.astype(np.int64)
    if boxes is not None:
        boxes = finite_numbers(boxes, box_name)
        if boxes.ndim < 1 or boxes.shape[-1] != 4:
            raise ValueError(f"{box_name} must be (x0, y0, x1, y1), got shape {boxes.shape}")
        _inside(boxes.reshape(-1, 2), h, w, box_name)
        if (boxes[..., 2] < boxes[..., 0]).any() or (boxes[..., 3] < boxes[..., 1]).any():
            raise ValueError(f"{box_name} must have x0 <= x1 and y0 <= y1, got {boxes.tolist()}")
    return points, labels, boxes


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
        points: ``B x P x 2`` ``(x, y)`` original-image pixel indices, or None; labels:
            ``B x P``, 1 foreground, 0 background, -1 padding (required with ``points``).
        boxes: ``B x 4`` ``(x0, y0, x1, y1)`` pixel indices (first and last column and row).
        mask_input: ``B x 1 x h x w`` low-res logits of an earlier call, or None.
        multimask: 3 masks per prompt (ambiguity) instead of 1.
        full_size: also return ``logits``/``masks`` at the original size (training skips it).

    Returns:
        dict with ``logits`` ``B x M x H x W`` float, ``masks`` those above
        ``sam.mask_threshold`` (bool), ``iou`` ``B x M`` predicted IoU and ``low_res``
        ``B x M x h x w`` logits (feed one back as ``mask_input``); ``M`` is 3 or 1.
        Gradients flow (wrap in ``torch.no_grad()`` to evaluate).

    Raises:
        ValueError: prompts of the wrong shape, or that :func:`check_prompts` refuses."""
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    device = sam.device
    points, labels, boxes = check_prompts(emb.original_size, points, labels, boxes)
    point_arg = box_arg = None
    if points is not None:
        if points.ndim != 3:
            raise ValueError(f"points must be B x P x 2 (x, y), got {tuple(points.shape)}")
        pts = torch.as_tensor(points, device=device)
        pts = transform.apply_coords_torch(pts, emb.original_size)
        point_arg = (pts, torch.as_tensor(labels, device=device))
    if boxes is not None:
        if boxes.ndim != 2:
            raise ValueError(f"boxes must be B x 4 (x0, y0, x1, y1), got {tuple(boxes.shape)}")
        box_arg = transform.apply_boxes_torch(
            torch.as_tensor(boxes, device=device), emb.original_size
        )
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
    :func:`predict`; ``mask_input``: the previous round's ``chosen_low_res``). An ambiguous
    prompt (:func:`is_ambiguous`) gets the 3 multimask outputs, the one of highest
    predicted IoU chosen; any other the single-mask output.

    Returns:
        :func:`predict`'s ``low_res`` (``B x M x h x w``) and ``iou`` (``B x M``), ``M`` = 3
        or 1; ``multimask`` (bool), ``pick`` (``B`` int64), ``chosen_low_res``
        ``B x 1 x h x w``, ``chosen_iou`` ``B``; with ``full_size`` also ``chosen_logits``
        and ``chosen_masks`` (bool) ``B x H x W`` (only the chosen mask is upsampled)."""
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
