"""Click-to-prompt before/after widgets: SAM decoders and Mask R-CNN detectors (notebooks 03
to 07). The controllers (what a click does) are :mod:`helpers.views.compare`; this is the
browser side: a canvas that reports clicks (``click_canvas.js``) and the ipywidgets layout.

The canvas is an anywidget (a plain ES module): it turns Colab's custom-widget manager on
by itself and runs in JupyterLab, Notebook 7 and VS Code alike, where ipympl needs
``enable_custom_widget_manager()`` in Colab and ipyevents and ipycanvas have open reports of
events not reaching Python there. It reports mouse-down/up positions in image pixels.
"""

from __future__ import annotations

import base64
import html
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .compare import DetectionCompare, SamCompare

try:  # the widgets need anywidget/ipywidgets; the controllers do not
    import anywidget
    import ipywidgets as W
    import traitlets
except ImportError:  # pragma: no cover
    anywidget = None

#: The canvas's browser side (an ES module, anywidget's format).
CLICK_CANVAS_JS = Path(__file__).with_name("click_canvas.js")


def image_data_url(image: np.ndarray, quality: int = 90) -> str:
    """``H x W x 3`` uint8 RGB as a JPEG data URL, what the canvas shows (JPEG: a few ms
    to encode and decode, where PNG takes several times longer)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


if anywidget is not None:

    class ClickCanvas(anywidget.AnyWidget):
        """An image that reports mouse-down/up pairs in image pixels to ``on_pointer``."""

        _esm = CLICK_CANVAS_JS
        src = traitlets.Unicode("").tag(sync=True)
        busy = traitlets.Bool(False).tag(sync=True)

        def __init__(self, on_pointer, **kwargs):
            super().__init__(**kwargs)
            self._on_pointer = on_pointer
            self.on_msg(self._handle)

        def _handle(self, _widget, content, _buffers):
            if isinstance(content, dict) and content.get("kind") == "pointer":
                self._on_pointer(content)


STATUS_STYLE = "white-space: normal; overflow-wrap: anywhere; line-height: 1.4; margin: 2px 0"


def panel_urls(controller, names, pool: ThreadPoolExecutor | None = None) -> dict[str, str]:
    """Each panel of ``controller`` drawn and JPEG-encoded as a data URL
    (:func:`image_data_url`): side by side in ``pool``'s threads (OpenCV, NumPy and
    Pillow let go of Python's lock while they work), one after another without one."""

    def work(name):
        return image_data_url(controller.render(name))

    return dict(zip(names, pool.map(work, names) if pool is not None else map(work, names)))


def _status_html(text: str) -> str:
    """A panel's status line as HTML that wraps inside its panel instead of being cut."""
    return f'<div style="{STATUS_STYLE}">{html.escape(text)}</div>'


def _panels(controller, names, title_class: str):
    """One panel per model, side by side in equal columns with a gap: the model's name,
    its canvas, and its status text under its own image, wrapping."""
    canvases, labels = {}, {}

    def busy(doing: str) -> None:
        """Say at once what is being done (each message leaves the kernel as it is set,
        before the work starts)."""
        for name in names:
            canvases[name].busy = True
            labels[name].value = _status_html(f"{name}: {doing}")

    def on_pointer(event) -> None:
        busy("predicting…")
        try:
            controller.on_pointer(event)
        finally:
            refresh()

    for name in names:
        canvases[name] = ClickCanvas(on_pointer)
        labels[name] = W.HTML(
            _status_html(controller.describe(name)), layout=W.Layout(width="100%")
        )
        labels[name].add_class(f"{title_class}-{name.replace(' ', '-')}")

    pool = ThreadPoolExecutor(len(names), thread_name_prefix="panel")

    def refresh():
        urls = panel_urls(controller, names, pool)
        for name in names:
            canvases[name].src = urls[name]
            labels[name].value = _status_html(controller.describe(name))
            canvases[name].busy = False

    refresh()
    panels = [
        W.VBox(
            [W.HTML(f"<b>{html.escape(name)}</b>"), canvases[name], labels[name]],
            layout=W.Layout(min_width="0", overflow="hidden"),
        )
        for name in names
    ]
    grid = W.GridBox(
        panels,
        layout=W.Layout(
            grid_template_columns=f"repeat({len(names)}, minmax(0, 1fr))",
            grid_gap="0 18px",
            width="100%",
            padding="0 12px 0 0",  # the last image clear of the output area's edge
        ),
    )
    return grid, refresh, busy


def _controls(*widgets) -> W.Box:
    """A row of controls that wraps as a whole when the notebook is narrow."""
    return W.Box(
        list(widgets), layout=W.Layout(display="flex", flex_flow="row wrap", align_items="center")
    )


def _image_names(samples, image_names):
    return image_names or [str(x) for x in getattr(samples, "ids", range(len(samples)))]


def sam_compare_widget(models: dict, samples, image_names=None):
    """The SAM before/after widget: left click adds a positive point, right click or
    shift+click a negative one; in box mode, drag a box. Undo, reset, image picker; each
    panel shows its mask, SAM's score, the IoU with the instance under the first positive
    click and the time taken. Returns ``(widget, controller)``."""
    controller = SamCompare(models, samples)
    grid, refresh, busy = _panels(controller, list(models), "segcourse-sam")
    names = _image_names(samples, image_names)
    picker = W.Dropdown(
        options=[(n, i) for i, n in enumerate(names)],
        value=0,
        description="image",
        layout=W.Layout(width="220px"),
    )
    mode = W.ToggleButtons(
        options=["points", "box"],
        value="points",
        style={"button_width": "64px"},
        layout=W.Layout(width="auto", margin="0 12px 0 4px"),
    )
    undo = W.Button(description="undo", layout=W.Layout(width="80px"))
    reset = W.Button(description="reset", layout=W.Layout(width="80px"))
    picker.observe(
        lambda ch: (busy("encoding the image…"), controller.select_image(ch["new"]), refresh()),
        names="value",
    )
    mode.observe(lambda ch: setattr(controller, "box_mode", ch["new"] == "box"), names="value")
    undo.on_click(lambda _b: (controller.undo(), refresh()))
    reset.on_click(lambda _b: (controller.reset(), refresh()))
    help_text = W.HTML(
        "left click: object · right click or shift+click: not object · box mode: drag"
    )
    mode_label = W.Label("mode", layout=W.Layout(margin="0 0 0 12px"))
    mode_label.add_class("segcourse-mode-label")
    return W.VBox([_controls(picker, mode_label, mode, undo, reset), help_text, grid]), controller


def detection_compare_widget(
    models: dict, samples, class_names=("background", "vessel"), device="cpu", image_names=None
):
    """The Mask R-CNN before/after widget: detections above a score threshold (slider),
    an image picker, and the class and score of what lies under a click.
    Returns ``(widget, controller)``."""
    controller = DetectionCompare(models, samples, class_names, device=device)
    grid, refresh, busy = _panels(controller, list(models), "segcourse-det")
    names = _image_names(samples, image_names)
    picker = W.Dropdown(
        options=[(n, i) for i, n in enumerate(names)],
        value=0,
        description="image",
        layout=W.Layout(width="260px"),
    )
    slider = W.FloatSlider(
        value=controller.threshold,
        min=0.0,
        max=1.0,
        step=0.05,
        description="score ≥",
        layout=W.Layout(width="320px", margin="0 12px"),
    )
    picker.observe(
        lambda ch: (busy("detecting…"), controller.select_image(ch["new"]), refresh()),
        names="value",
    )
    slider.observe(lambda ch: (controller.set_threshold(ch["new"]), refresh()), names="value")
    return W.VBox([_controls(picker, slider), grid]), controller
