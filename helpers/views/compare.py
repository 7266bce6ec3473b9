"""Click-to-prompt comparisons as plain Python: prompts in, masks and labels out.

Introduced in notebook 03 (SAM) and 04 (Mask R-CNN). The controllers behind the widgets
of :mod:`helpers.views.widget`, testable without a browser: :class:`PromptState` (clicks in,
prompts out), :class:`SamCompare` and :class:`DetectionCompare` (prompts in, masks and
labels out). The browser calls the same ``on_pointer`` handlers the tests call; drawing
is :mod:`helpers.views.plotting`'s.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch

from ..course.runtime import cache_dir, usable_cpus
from ..metrics import mask_iou
from ..sam.predict import embed_image, predict_round
from .plotting import draw_detections_rgb, draw_mask_rgb, draw_prompts_rgb

DRAG_PIXELS = 6  # a mouse-down/up pair further apart than this is a drag (a box)


@dataclass
class PromptState:
    """SAM prompts built by clicks: a list of points and an optional box, with undo.

    Coordinates are original-image pixel indices ``(x, y)`` (SamPredictor's convention,
    see :mod:`helpers.sam.predict`); labels 1 (positive) / 0 (negative).
    """

    points: list[tuple[float, float, int]] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None
    _undo: list = field(default_factory=list, repr=False)

    def _save(self) -> None:
        self._undo.append((list(self.points), self.box))

    def add_point(self, x: float, y: float, positive: bool) -> None:
        self._save()
        self.points.append((float(x), float(y), int(positive)))

    def set_box(self, x0: float, y0: float, x1: float, y1: float) -> None:
        self._save()
        self.box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    def can_undo(self) -> bool:
        return bool(self._undo)

    def undo(self) -> None:
        if self._undo:
            self.points, self.box = self._undo.pop()

    def reset(self) -> None:
        self.points, self.box, self._undo = [], None, []

    def empty(self) -> bool:
        return not self.points and self.box is None

    def as_prompts(self) -> dict:
        """Arguments for :func:`helpers.sam.predict.predict` (a batch of one)."""
        pts = (
            np.array([[p[0], p[1]] for p in self.points], np.float32)[None] if self.points else None
        )
        labs = np.array([[p[2] for p in self.points]], np.int64) if self.points else None
        box = np.array([self.box], np.float32) if self.box is not None else None
        return {"points": pts, "labels": labs, "boxes": box}


def interpret_pointer(event: dict, box_mode: bool) -> tuple:
    """What a mouse-down/up pair means: ``("box", x0, y0, x1, y1)`` for a drag in box mode,
    else ``("point", x, y, positive)``: left click positive; right click or shift+click
    negative.

    The canvas reports positions on the image's continuous axis (pixel ``k`` spans
    ``[k, k + 1)``); they are returned as pixel indices (centre of pixel ``k`` at ``k``,
    SamPredictor's convention), i.e. shifted by half a pixel."""
    x0, y0, x1, y1 = (event[k] - 0.5 for k in ("x0", "y0", "x1", "y1"))
    dragged = abs(x1 - x0) + abs(y1 - y0) > DRAG_PIXELS
    if box_mode and dragged:
        return ("box", x0, y0, x1, y1)
    positive = event.get("button", 0) == 0 and not event.get("shift", False)
    return ("point", x1, y1, positive)


_LIVE: weakref.WeakSet = weakref.WeakSet()  # every SamCompare not yet collected


@atexit.register
def _close_live() -> None:
    for controller in list(_LIVE):
        controller.close()


class SamCompare:
    """Several SAM models answering the same prompts on the same image.

    Args:
        models: ``{name: Sam}``; models that share an image encoder share its embedding.
        samples: a reader (``image``; ``masks`` and ``void`` or ``ignore`` for the IoU).
        backend: ``"torch"``; ``"onnx"``, each decoder exported once (into ``onnx_folder``,
            default ``<cache>/onnx``) and run by onnxruntime, side by side; ``"auto"`` (the
            default), onnxruntime for models on a CPU, exported in a thread while PyTorch
            answers. ``backends[name]`` says which each model uses now.

    Each prompt is one round of :func:`helpers.sam.predict.predict_round`; undo goes back a
    round, logits included. ``results[name]``: ``mask`` (``H x W`` bool), ``score``, ``gt_iou``
    (with the instance under the first positive click, or None), ``area``, ``ms``, ``low_res``."""

    def __init__(
        self,
        models: dict,
        samples,
        box_mode: bool = False,
        fast: bool = True,
        backend: str = "auto",
        onnx_folder=None,
    ):
        if backend not in ("auto", "torch", "onnx"):
            raise ValueError(f"backend must be 'auto', 'torch' or 'onnx', got {backend!r}")
        self.models = models
        self.fast = fast
        self.samples = samples
        self.state = PromptState()
        self.box_mode = box_mode
        self.results: dict[str, dict] = {}
        self._rounds: list[dict[str, dict]] = []  # one entry per prompt, for undo
        self._embeddings: dict = {}
        self.onnx: dict = {}  # name -> OnnxDecoder, for the models run by onnxruntime
        self._threads = None  # the decoders' threads (_pool), made at the first click
        self._preparing = None  # the thread that exports the decoders (backend "auto")
        self.backends = {name: "PyTorch" for name in models}
        _LIVE.add(self)  # closed at interpreter exit (_close_live)
        if backend == "onnx":
            self._use_onnx(backend, onnx_folder)
        elif backend == "auto":
            self._preparing = threading.Thread(
                target=self._use_onnx, args=(backend, onnx_folder), daemon=True
            )
            self._preparing.start()
        self.select_image(0)

    def close(self) -> None:
        """Wait for the decoders' export, stop their threads, drop the onnxruntime sessions
        (PyTorch answers from then on). Run at interpreter exit: a thread left inside
        onnxruntime or the exporter then aborts the process (SIGABRT) before its report."""
        if self._preparing is not None:
            self._preparing.join()
        if self._threads is not None:
            self._threads.shutdown(wait=True)
            self._threads = None
        self.onnx.clear()
        self.backends = {name: "PyTorch" for name in self.models}

    def _use_onnx(self, backend: str, onnx_folder) -> None:
        try:
            import onnxruntime  # noqa: F401

            from ..sam.onnx_decoder import OnnxDecoder, decoder_file_for
        except ImportError:
            if backend == "onnx":
                raise
            return  # auto: PyTorch
        folder = onnx_folder or cache_dir() / "onnx"
        chosen = {
            name: model
            for name, model in self.models.items()
            if backend == "onnx" or model.device.type == "cpu"
        }
        # the decoders answer a click side by side (_predict): the cores shared among them
        threads = max(1, usable_cpus() // max(1, len(chosen)))
        for name, model in chosen.items():
            self.backends[name] = "PyTorch; onnxruntime being prepared"
            try:
                self.onnx[name] = OnnxDecoder(
                    decoder_file_for(model, folder), model, threads=threads
                )
                self.backends[name] = "onnxruntime"
            except Exception as err:  # an export that fails: this model stays on PyTorch
                self.backends[name] = f"PyTorch; no ONNX export ({type(err).__name__})"
                if backend == "onnx":
                    raise

    def select_image(self, index: int) -> None:
        """Show image ``index``: its embeddings (one per distinct image encoder), no prompts."""
        self.index = index
        self.sample = self.samples[index]
        self._embeddings = {}
        for model in self.models.values():
            key = id(model.image_encoder)
            if key not in self._embeddings:
                self._embeddings[key] = embed_image(model, self.sample["image"])
        self.reset()

    def on_pointer(self, event: dict) -> None:
        """The browser's mouse-down/up pair (see :func:`interpret_pointer`)."""
        action = interpret_pointer(event, self.box_mode)
        if action[0] == "box":
            self.state.set_box(*action[1:])
        else:
            self.state.add_point(*action[1:])
        self._rounds.append(self._predict())
        self._show()

    def undo(self) -> None:
        if self.state.can_undo():
            self.state.undo()
            self._rounds.pop()
        self._show()

    def reset(self) -> None:
        self.state.reset()
        self._rounds = []
        self._show()

    def _show(self) -> None:
        h, w = self.sample["image"].shape[:2]
        empty = {
            "mask": np.zeros((h, w), bool),
            "score": None,
            "gt_iou": None,
            "area": 0,
            "ms": 0.0,
            "low_res": None,
        }
        self.results = (
            dict(self._rounds[-1]) if self._rounds else {name: empty for name in self.models}
        )

    def _gt_instance(self):
        masks = self.sample.get("masks")
        positives = [p for p in self.state.points if p[2]]
        if masks is None or not len(masks) or not positives:
            return None
        x, y = round(positives[0][0]), round(positives[0][1])
        h, w = masks.shape[1:]
        if not (0 <= x < w and 0 <= y < h):
            return None
        hit = np.flatnonzero(masks[:, y, x])
        return masks[hit[0]] if len(hit) else None

    @torch.no_grad()
    def _predict(self) -> dict[str, dict]:
        """One round for every model, from the current prompts and each model's
        previous logits. Models run by onnxruntime answer at the same time, one thread
        each (onnxruntime lets go of Python's lock while it computes); PyTorch models
        one after another."""
        gt = self._gt_instance()
        previous = self._rounds[-1] if self._rounds else {}

        def one(name: str) -> dict:
            model = self.models[name]
            t0 = time.perf_counter()
            emb = self._embeddings[id(model.image_encoder)]
            prev = previous.get(name, {}).get("low_res")
            if name in self.onnx:
                mask, score, low = self._onnx_round(name, emb, prev)
            else:
                with self._autocast(model):
                    out = predict_round(model, emb, **self.state.as_prompts(), mask_input=prev)
                mask = out["chosen_masks"][0].cpu().numpy()
                score, low = float(out["chosen_iou"][0]), out["chosen_low_res"].float()
            return {
                "mask": mask,
                "score": score,
                "area": int(mask.sum()),
                "gt_iou": None
                if gt is None
                else mask_iou(mask, gt, self.sample.get("void", self.sample.get("ignore"))),
                "ms": (time.perf_counter() - t0) * 1000,
                "low_res": low,
            }

        together = [name for name in self.models if name in self.onnx]
        results = {}
        if len(together) > 1:
            results.update(zip(together, self._pool().map(one, together)))
        for name in self.models:
            if name not in results:
                results[name] = one(name)
        return {name: results[name] for name in self.models}

    def _pool(self):
        """The threads that run the onnxruntime decoders side by side (made once)."""
        if self._threads is None:
            from concurrent.futures import ThreadPoolExecutor

            self._threads = ThreadPoolExecutor(len(self.models), thread_name_prefix="decoder")
        return self._threads

    def _onnx_round(self, name: str, emb, prev):
        """One round through onnxruntime (:func:`helpers.sam.onnx_decoder.onnx_round`)."""
        from ..sam.onnx_decoder import onnx_round

        p = self.state.as_prompts()
        out = onnx_round(
            self.onnx[name],
            emb,
            points=None if p["points"] is None else p["points"][0],
            labels=None if p["labels"] is None else p["labels"][0],
            box=None if p["boxes"] is None else p["boxes"][0],
            mask_input=prev,
        )
        return out["chosen_masks"], out["chosen_iou"], torch.from_numpy(out["chosen_low_res"])

    def _autocast(self, model):
        """With ``fast``: fp16 autocast on CUDA (masks may differ from fp32 in a few border
        pixels; evaluation, notebook 03, always runs in fp32)."""
        return torch.autocast(
            "cuda", dtype=torch.float16, enabled=self.fast and model.device.type == "cuda"
        )

    def render(self, name: str) -> np.ndarray:
        """Panel ``name``: image, its mask, the prompts (RGB array)."""
        r = self.results[name]
        shown = draw_mask_rgb(self.sample["image"], r["mask"])
        return draw_prompts_rgb(shown, self.state.points, self.state.box)

    def describe(self, name: str) -> str:
        r = self.results[name]
        if r["score"] is None:
            return f"{name}: no prompt yet"
        fields = [f"mask area {r['area']} px", f"SAM score {r['score']:.3f}"]
        if r["gt_iou"] is not None:
            fields.append(f"IoU vs ground truth {r['gt_iou']:.3f}")
        fields.append(f"{r['ms']:.0f} ms ({self.backends[name]})")
        # a line wraps between fields only: inside one, non-breaking spaces
        return f"{name}: " + " | ".join(f.replace(" ", "\u00a0") for f in fields)


class DetectionCompare:
    """Several detectors on the same images: predictions above a score threshold, and
    what lies under a click.

    Args:
        models: ``{name: (model, postprocess or None)}``; ``postprocess`` maps an output
            dict (e.g. :func:`helpers.detection.model.map_to_vessel` for a COCO model).
        samples: a reader (``image``, ``masks``).
        class_names: label -> name, e.g. ``("background", "vessel")``.
    """

    def __init__(
        self,
        models: dict,
        samples,
        class_names=("background", "vessel"),
        threshold: float = 0.5,
        device="cpu",
    ):
        self.models, self.samples, self.class_names = models, samples, class_names
        self.threshold, self.device = threshold, device
        self.clicked: tuple[float, float] | None = None
        self.predictions: dict[str, dict] = {}
        self.select_image(0)

    @torch.no_grad()
    def select_image(self, index: int) -> None:
        self.index = index
        self.sample = self.samples[index]
        self.clicked = None
        x = torch.from_numpy(self.sample["image"]).permute(2, 0, 1).float().div(255).to(self.device)
        for name, (model, post) in self.models.items():
            model.eval()
            out = {k: v.cpu() for k, v in model([x])[0].items()}
            self.predictions[name] = post(out) if post is not None else out

    def set_threshold(self, value: float) -> None:
        self.threshold = float(value)

    def on_pointer(self, event: dict) -> None:
        """The browser's mouse-down/up pair: the release point, as a pixel index."""
        self.clicked = (event["x1"] - 0.5, event["y1"] - 0.5)

    def kept(self, name: str) -> dict:
        p = self.predictions[name]
        keep = p["scores"] >= self.threshold
        return {k: v[keep] for k, v in p.items()}

    def under_click(self, name: str) -> list[tuple[str, float]]:
        """``(class name, score)`` of the kept detections whose mask covers the click,
        highest score first."""
        if self.clicked is None:
            return []
        p = self.kept(name)
        x, y = round(self.clicked[0]), round(self.clicked[1])
        masks = p["masks"][:, 0] > 0.5
        if not (0 <= y < masks.shape[-2] and 0 <= x < masks.shape[-1]):
            return []
        hits = torch.nonzero(masks[:, y, x]).flatten().tolist()
        found = [
            (
                self.class_names[int(p["labels"][i])]
                if int(p["labels"][i]) < len(self.class_names)
                else str(int(p["labels"][i])),
                float(p["scores"][i]),
            )
            for i in hits
        ]
        return sorted(found, key=lambda t: -t[1])

    def render(self, name: str) -> np.ndarray:
        out = draw_detections_rgb(self.sample["image"], self.predictions[name], self.threshold)
        if self.clicked is not None:
            out = draw_prompts_rgb(out, [(*self.clicked, 1)])
        return out

    def describe(self, name: str) -> str:
        n = int((self.predictions[name]["scores"] >= self.threshold).sum())
        hits = self.under_click(name)
        at = (
            ""
            if self.clicked is None
            else (
                " | under the click: "
                + (", ".join(f"{c} {s:.2f}" for c, s in hits) if hits else "nothing")
            )
        )
        return f"{name}: {n} detections with score >= {self.threshold:.2f}{at}"
