"""SAM's prompt encoder + mask decoder as an ONNX file, run by onnxruntime (notebook 05): an
app encodes each image once and answers each click with the small decoder, no PyTorch.

Model: segment-anything's ``SamOnnxModel`` with its padding crop rewritten
(:func:`exportable_decoder`); exporter: ``torch.onnx.export(..., dynamo=False)``, as
segment-anything's ``scripts/export_onnx_model.py`` (``dynamo=True`` needs ``onnxscript``).
The graph keeps all four mask tokens; the choice is :func:`helpers.sam.predict.predict`'s.
Inputs, in SAM's input frame: ``point_coords`` ``1 x P x 2`` (x, y), ``point_labels``
``1 x P`` (1, 0, 2 / 3 box corners, -1 padding), ``mask_input`` ``1 x 1 x h x w`` with
``has_mask_input``, ``orig_im_size`` (H, W). The file's metadata records the variant and
encoder fingerprint of its model, which :class:`OnnxDecoder` checks.
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
from .model import check_same_encoder, encoder_fingerprint, encoder_identity, variant_of
from .predict import ImageEmbedding, check_prompts, finite_numbers

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
    size, 5 points in its input frame, a mask prompt, a 480 x 640 image."""
    size = sam.prompt_encoder.image_embedding_size
    return (
        torch.zeros(1, sam.prompt_encoder.embed_dim, *size),
        torch.randint(0, sam.image_encoder.img_size, (1, 5, 2), dtype=torch.float32),
        torch.randint(0, 4, (1, 5), dtype=torch.float32),
        torch.zeros(1, 1, 4 * size[0], 4 * size[1]),
        torch.tensor([1.0]),
        torch.tensor([480.0, 640.0]),
    )


def export_decoder(sam: Sam, path: str | Path) -> Path:
    """Export ``sam``'s prompt encoder + mask decoder (with SAM's post-processing) to
    ``path`` (written to a temporary file, then renamed). Returns ``path``.

    The embedding input is fixed at ``sam``'s (``1 x 256 x 64 x 64`` for vit_b); the
    number of prompt points is dynamic. The file's metadata holds ``variant``,
    ``encoder_fingerprint`` and ``img_size`` (the input frame the prompts are mapped to)."""
    path = Path(path)
    model = exportable_decoder(sam, return_single_mask=False).eval()
    dummy = export_example(sam)
    meta = {**encoder_identity(sam), "img_size": sam.image_encoder.img_size}

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
            check_same_encoder(self.path, self.meta, sam)
        if not self.meta.get("img_size", "").isdigit():
            raise CheckpointError(f"{self.path}: its metadata names no input frame (img_size)")
        self.img_size = int(self.meta["img_size"])  # the input frame prompts are mapped to
        self.low_res = 4 * self.embedding_shape[-1]  # the mask prompt's side

    def _refuse_mask_count(self, n) -> None:  # segment-anything's return_single_mask=True
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
        moved into the input frame, a padding point (label -1) when there is no box.

        Args:
            points: ``P x 2`` (x, y) original-image pixel indices; labels: ``P`` 1 / 0.
            box: ``4`` (x0, y0, x1, y1) original-image pixel indices.
            mask_input: ``h x w`` low-res logits of an earlier answer (or with leading axes
                of one: ``1 x 1 x h x w``), ``h = w =`` :attr:`low_res`.
        """
        embedding = emb.embedding.detach().float().cpu().numpy()
        if embedding.shape != self.embedding_shape:
            raise ValueError(
                f"image embedding of shape {embedding.shape}; {self.path.name} expects "
                f"{self.embedding_shape}"
            )
        if points is not None and (np.ndim(points) != 2 or np.shape(points)[1] != 2):
            raise ValueError(f"points must be P x 2 (x, y), got shape {np.shape(points)}")
        if box is not None and np.shape(box) != (4,):
            raise ValueError(f"box must be 4 numbers (x0, y0, x1, y1), got shape {np.shape(box)}")
        points, labels, box = check_prompts(emb.original_size, points, labels, box, "box")
        if points is None and box is None:
            raise ValueError("a prompt needs points or a box")
        transform = ResizeLongestSide(self.img_size)
        coords, codes = np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
        if points is not None:
            coords = transform.apply_coords(points, emb.original_size)
            codes = labels.astype(np.float32)
        if box is not None:
            corners = transform.apply_boxes(box[None], emb.original_size).reshape(2, 2)
            coords = np.concatenate([coords, corners])
            codes = np.concatenate([codes, np.array([2, 3], np.float32)])
        else:  # no box: SamPredictor's padding point
            coords = np.concatenate([coords, np.zeros((1, 2), np.float32)])
            codes = np.concatenate([codes, np.array([-1], np.float32)])
        side = self.low_res
        if mask_input is None:
            mask = np.zeros((1, 1, side, side), np.float32)
            has_mask = np.zeros(1, np.float32)
        else:
            mask = finite_numbers(mask_input, "mask_input")
            if mask.shape[-2:] != (side, side) or mask.size != side * side:
                raise ValueError(
                    f"mask_input must be {side} x {side} low-res logits (or 1 x 1 x {side} x "
                    f"{side}), got shape {mask.shape}"
                )
            mask = mask.reshape(1, 1, side, side)
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
        ``low_res`` ``1 x M x h x w``; ``M`` 3 (``multimask``) or 1."""
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
        ``chosen_iou`` float, ``chosen_low_res`` ``1 x 1 x h x w`` float32 (the next
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
