"""SAM's prompt encoder + mask decoder as an ONNX file, run by onnxruntime (notebook 05).

An app keeps the heavy image encoder on a server (or runs it once per image) and answers
every click with the small decoder; ONNX lets that decoder run without PyTorch, in
onnxruntime on a CPU, in a browser (onnxruntime-web) or on a phone.

Model: segment-anything's own ``SamOnnxModel`` (prompt embedding written without data-
dependent control flow, SAM's post-processing inside the graph), with its padding crop
rewritten (:func:`exportable_decoder`). Exporter: ``torch.onnx.export(...,
dynamo=False)``, the TorchScript-based one that segment-anything's
``scripts/export_onnx_model.py`` uses, which needs nothing beyond ``onnx``. The rewritten
model is also accepted by ``torch.export``, the first step of the newer ``dynamo=True``
exporter (the stock ``SamOnnxModel`` is not: its crop has a data-dependent size), but
that exporter needs the ``onnxscript`` package, which the course does not install
(notebook 05 shows both).

The graph is exported with all four mask tokens (``return_single_mask=False``) and the
choice is made here, as :func:`helpers.sam.predict.predict` makes it: masks 1-3 for an
ambiguous prompt (``multimask=True``), mask 0 otherwise. Inputs in SAM's 1024 frame:
``point_coords`` ``1 x P x 2`` (x, y), ``point_labels`` ``1 x P`` (1 foreground,
0 background, 2 / 3 box corners, -1 padding), ``mask_input`` ``1 x 1 x 256 x 256`` logits
with ``has_mask_input`` 1 or 0, ``orig_im_size`` (H, W).

The file records the variant and the encoder fingerprint of the model it came from
(ONNX metadata), and :class:`OnnxDecoder` checks them against the model whose embeddings
it is given.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from ..checkpoints import CheckpointError, atomic_write
from .model import encoder_fingerprint, variant_of
from .predict import ImageEmbedding

INPUTS = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)
OUTPUTS = ("masks", "iou_predictions", "low_res_masks")
OPSET = 17  # as segment-anything's export script


def _set_metadata(path: Path, meta: dict) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(model, str(path))


def exportable_decoder(sam: Sam, **kwargs):
    """``SamOnnxModel`` with its padding crop made traceable for any image size.

    segment-anything's ``mask_postprocessing`` crops with ``int(...)`` of a tensor, which
    the TorchScript tracer records as a constant: the exported graph then crops every
    image as if it had the aspect ratio of the example used for the export (a landscape
    export gives a portrait photo wrong masks). Here the crop is an ``index_select`` with
    ``arange`` over the computed size, which the exporter keeps as a computation; the
    arithmetic is otherwise segment-anything's."""
    from segment_anything.utils.onnx import SamOnnxModel
    from torch.nn import functional as F

    class TraceableSamOnnxModel(SamOnnxModel):
        def mask_postprocessing(self, masks, orig_im_size):
            masks = F.interpolate(
                masks, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False
            )
            size = self.resize_longest_image_size(orig_im_size, self.img_size)
            masks = masks.index_select(2, torch.arange(size[0]))
            masks = masks.index_select(3, torch.arange(size[1]))
            orig_im_size = orig_im_size.to(torch.int64)
            h, w = orig_im_size[0], orig_im_size[1]
            return F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)

    return TraceableSamOnnxModel(sam, **kwargs)


def export_example(sam: Sam) -> tuple[torch.Tensor, ...]:
    """Example inputs of :data:`INPUTS` for tracing (CPU): an embedding of ``sam``'s
    size, 5 points, a mask prompt, a 480 x 640 image."""
    size = sam.prompt_encoder.image_embedding_size
    return (
        torch.zeros(1, sam.prompt_encoder.embed_dim, *size),
        torch.randint(0, 1024, (1, 5, 2), dtype=torch.float32),
        torch.randint(0, 4, (1, 5), dtype=torch.float32),
        torch.zeros(1, 1, 4 * size[0], 4 * size[1]),
        torch.tensor([1.0]),
        torch.tensor([480.0, 640.0]),
    )


def export_decoder(sam: Sam, path: str | Path) -> Path:
    """Export ``sam``'s prompt encoder + mask decoder (with SAM's post-processing) to
    ``path`` (written to a temporary file, then renamed). Returns ``path``.

    The embedding input is fixed at ``1 x 256 x 64 x 64``; the number of prompt points
    is dynamic. The file's metadata holds ``variant`` and ``encoder_fingerprint``."""
    path = Path(path)
    model = exportable_decoder(sam, return_single_mask=False).eval()
    dummy = export_example(sam)
    meta = {"variant": variant_of(sam), "encoder_fingerprint": encoder_fingerprint(sam)}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            # the TorchScript exporter's deprecation and tracer warnings (see the module
            # docstring for why it is the one used)
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model.cpu(),
                dummy,
                str(tmp),
                export_params=True,
                opset_version=OPSET,
                do_constant_folding=True,
                input_names=list(INPUTS),
                output_names=list(OUTPUTS),
                dynamic_axes={"point_coords": {1: "points"}, "point_labels": {1: "points"}},
                dynamo=False,
            )
        _set_metadata(tmp, meta)

    try:
        return atomic_write(path, write)
    finally:
        model.to(sam.device)


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    """Dynamic int8 quantisation (onnxruntime's ``quantize_dynamic``: weights stored as
    int8, activations quantised on the fly) of an :func:`export_decoder` file; the
    metadata is carried over. Returns ``dst``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    meta = _read_metadata(src)

    def write(tmp: Path) -> None:
        # quantize_dynamic logs a hint to run its pre-processing first; that step's
        # symbolic shape inference does not complete on this graph (the dynamic crop,
        # onnxruntime 1.32), so the hint is silenced rather than followed
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        _set_metadata(tmp, meta)

    return atomic_write(dst, write)


def _read_metadata(path: Path) -> dict:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError, OSError ... for a non-ONNX file
        raise CheckpointError(f"{path}: not a readable ONNX file ({err})") from None
    return {p.key: p.value for p in model.metadata_props}


#: How far outside the image a prompt may lie, in pixels (SAM accepts points a little
#: outside; farther away they are a mistake, e.g. coordinates of another image).
OUTSIDE_TOLERANCE = 0.5


def _numbers(values, what: str) -> np.ndarray:
    """``values`` as finite float32, or a ValueError that names ``what``."""
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


class OnnxDecoder:
    """An :func:`export_decoder` file in an onnxruntime session on the CPU.

    Args:
        path: the ``.onnx`` file (fp32 or int8).
        sam: the model whose embeddings it will be given; its variant and encoder
            fingerprint must be the file's (None: not checked).

    Raises:
        CheckpointError: not an ONNX file, not a decoder export (inputs differ), or made
            from another model (the message names both).
    """

    def __init__(self, path: str | Path, sam: Sam | None = None, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: file not found")
        self.meta = _read_metadata(self.path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        names = tuple(i.name for i in self.session.get_inputs())
        if names != INPUTS:
            raise CheckpointError(
                f"{self.path}: not a SAM decoder export (inputs {names}, expected {INPUTS})"
            )
        scores = self.session.get_outputs()[1].shape  # iou_predictions: 1 x masks
        if isinstance(scores[-1], int) and scores[-1] != 4:
            self._refuse_mask_count(scores[-1])
        self.embedding_shape = tuple(self.session.get_inputs()[0].shape)
        if sam is not None:
            mine = {"variant": variant_of(sam), "encoder_fingerprint": encoder_fingerprint(sam)}
            for key, here in mine.items():
                there = self.meta.get(key)
                if there != here:
                    raise CheckpointError(
                        f"{self.path}: exported from a model with {key} {there!r}, the model "
                        f"given has {here!r}: a decoder reads the embeddings of its own encoder"
                    )
        self.img_size = 1024  # SAM's input frame (ResizeLongestSide(1024))

    def _refuse_mask_count(self, n) -> None:
        # segment-anything's export with return_single_mask=True answers with one mask
        raise CheckpointError(
            f"{self.path}: answers {n} mask(s) per prompt; OnnxDecoder needs all four mask "
            "tokens (export_decoder writes them: SamOnnxModel with return_single_mask=False)"
        )

    def inputs(
        self,
        emb: ImageEmbedding,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | torch.Tensor | None = None,
    ) -> dict[str, np.ndarray]:
        """The feed of one prompt, as SamPredictor builds it: points and box corners
        moved into the 1024 frame, a padding point (label -1) when there is no box.

        Args:
            points: ``P x 2`` (x, y) original-image pixel indices; labels: ``P`` 1 / 0.
            box: ``4`` (x0, y0, x1, y1) original-image pixel indices.
            mask_input: ``1 x 256 x 256`` (or ``256 x 256``, or ``1 x 1 x 256 x 256``)
                low-res logits of an earlier answer.
        """
        embedding = emb.embedding.detach().float().cpu().numpy()
        if embedding.shape != self.embedding_shape:
            raise ValueError(
                f"image embedding of shape {embedding.shape}; {self.path.name} expects "
                f"{self.embedding_shape}"
            )
        h, w = (int(v) for v in emb.original_size)
        if h < 1 or w < 1:
            raise ValueError(f"original_size must be (H, W) of at least one pixel, got {(h, w)}")
        transform = ResizeLongestSide(self.img_size)
        coords, codes = np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
        if points is not None:
            points = _numbers(points, "points")
            if points.ndim != 2 or points.shape[1] != 2:
                raise ValueError(f"points must be P x 2 (x, y), got shape {points.shape}")
            _inside(points, h, w, "points")
            if labels is None or np.shape(labels) != (len(points),):
                raise ValueError(
                    f"labels must be one per point ({len(points)}), got shape "
                    f"{None if labels is None else np.shape(labels)}"
                )
            codes = _numbers(labels, "labels")
            if not np.isin(codes, (0.0, 1.0, -1.0)).all():
                raise ValueError(
                    f"point labels must be 1 (foreground), 0 (background) or -1 (padding), got "
                    f"{sorted(set(codes.tolist()))} (a box is given as box=, not as labels 2/3)"
                )
            coords = transform.apply_coords(points, emb.original_size)
        if box is not None:
            box = _numbers(box, "box")
            if box.shape != (4,):
                raise ValueError(f"box must be 4 numbers (x0, y0, x1, y1), got shape {box.shape}")
            _inside(box.reshape(2, 2), h, w, "box")
            if box[2] < box[0] or box[3] < box[1]:
                raise ValueError(f"box must have x0 <= x1 and y0 <= y1, got {box.tolist()}")
            corners = transform.apply_boxes(box[None], emb.original_size).reshape(2, 2)
            coords = np.concatenate([coords, corners])
            codes = np.concatenate([codes, np.array([2, 3], np.float32)])
        else:
            if points is None:
                raise ValueError("a prompt needs points or a box")
            coords = np.concatenate([coords, np.zeros((1, 2), np.float32)])
            codes = np.concatenate([codes, np.array([-1], np.float32)])
        if mask_input is None:
            mask = np.zeros((1, 1, 256, 256), np.float32)
            has_mask = np.zeros(1, np.float32)
        else:
            mask = _numbers(
                mask_input.detach().float().cpu() if torch.is_tensor(mask_input) else mask_input,
                "mask_input",
            )
            if mask.shape[-2:] != (256, 256) or mask.size != 256 * 256:
                raise ValueError(
                    "mask_input must be 256 x 256 low-res logits (or 1 x 256 x 256, 1 x 1 x 256 "
                    f"x 256), got shape {mask.shape}"
                )
            mask = mask.reshape(1, 1, 256, 256)
            has_mask = np.ones(1, np.float32)
        return {
            "image_embeddings": embedding,
            "point_coords": coords[None].astype(np.float32),
            "point_labels": codes[None].astype(np.float32),
            "mask_input": mask,
            "has_mask_input": has_mask,
            "orig_im_size": np.array(emb.original_size, np.float32),
        }

    def predict(
        self,
        emb: ImageEmbedding,
        points=None,
        labels=None,
        box=None,
        mask_input=None,
        multimask: bool = True,
        mask_threshold: float = 0.0,
    ) -> dict:
        """One prompt; the same dict as :func:`helpers.sam.predict.predict` for ``B = 1``
        (numpy): ``logits`` ``1 x M x H x W``, ``masks`` (bool), ``iou`` ``1 x M``,
        ``low_res`` ``1 x M x 256 x 256``; ``M`` 3 (``multimask``) or 1."""
        masks, iou, low_res = self.session.run(
            None, self.inputs(emb, points, labels, box, mask_input)
        )
        if iou.shape[-1] != 4:  # a graph whose mask count is not fixed in the file
            self._refuse_mask_count(iou.shape[-1])
        pick = slice(1, None) if multimask else slice(0, 1)
        logits = masks[:, pick]
        return {
            "logits": logits,
            "masks": logits > mask_threshold,
            "iou": iou[:, pick],
            "low_res": low_res[:, pick],
        }


def onnx_round(
    decoder: OnnxDecoder, emb: ImageEmbedding, points=None, labels=None, box=None, mask_input=None
) -> dict:
    """One round of the interactive protocol through onnxruntime, as
    :func:`helpers.sam.predict.predict_round` makes it for one prompt: a single point
    alone gets three masks and the one the IoU head scores best; any other prompt the
    single mask. Arguments as :meth:`OnnxDecoder.inputs`.

    Returns:
        ``chosen_masks`` ``H x W`` bool, ``chosen_logits`` ``H x W`` float,
        ``chosen_iou`` float, ``chosen_low_res`` ``1 x 1 x 256 x 256`` float32 (the next
        round's mask prompt), numpy.
    """
    multimask = points is not None and len(points) == 1 and box is None and mask_input is None
    out = decoder.predict(emb, points, labels, box, mask_input, multimask=multimask)
    pick = int(out["iou"][0].argmax()) if multimask else 0
    return {
        "chosen_masks": out["masks"][0, pick],
        "chosen_logits": out["logits"][0, pick],
        "chosen_iou": float(out["iou"][0, pick]),
        "chosen_low_res": out["low_res"][0, pick][None, None],
    }


def decoder_file_for(sam: Sam, folder: str | Path) -> Path:
    """``sam``'s decoder exported to ONNX, once: the file is named after the decoder's
    and prompt encoder's weights and the encoder's fingerprint, so a second call (a
    rerun of the notebook) finds it instead of exporting again. Returns its path."""
    from ..remembered import fingerprint

    key = fingerprint(sam.mask_decoder, sam.prompt_encoder)[:16]
    path = Path(folder) / f"decoder-{variant_of(sam)}-{key}-{encoder_fingerprint(sam)[:8]}.onnx"
    if not path.is_file():
        export_decoder(sam, path)
    return path


def click_latency(runners: dict, cases: list, clicks: int = 50) -> dict[str, float]:
    """Median milliseconds per click of each ``runners[name](emb, point)``, interleaved
    click by click (so that drift of a shared machine hits all alike), after one warm-up
    call each. ``cases``: ``(ImageEmbedding, 1 x 2 point)`` pairs, used in turn."""
    import statistics
    import time

    for run in runners.values():
        run(*cases[0])
    times: dict[str, list[float]] = {name: [] for name in runners}
    for c in range(clicks):
        emb, point = cases[c % len(cases)]
        for name, run in runners.items():
            t0 = time.perf_counter()
            run(emb, point)
            times[name].append(time.perf_counter() - t0)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def first_click_agreement(a: OnnxDecoder, b: OnnxDecoder, cases: list) -> dict:
    """How far ``b`` (e.g. the int8 file) answers a first click like ``a`` (fp32): the
    mask that ``a``'s IoU head ranks best of three, from each file. Returns ``miou``,
    ``min_iou`` and ``max_low_res_diff`` (largest change of a low-res logit)."""
    ious, diff = [], 0.0
    for emb, point in cases:
        x = a.predict(emb, points=point, labels=np.ones(len(point)))
        y = b.predict(emb, points=point, labels=np.ones(len(point)))
        best = int(x["iou"][0].argmax())
        ma, mb = x["masks"][0, best], y["masks"][0, best]
        union = (ma | mb).sum()
        ious.append((ma & mb).sum() / union if union else 1.0)
        diff = max(diff, float(np.abs(x["low_res"] - y["low_res"]).max()))
    return {"miou": float(np.mean(ious)), "min_iou": float(np.min(ious)), "max_low_res_diff": diff}
