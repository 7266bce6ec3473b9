"""helpers.views.widget: the browser's messages reach the controller."""

import copy

import pytest
import torch

from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.voc import VOCInstanceDataset
from helpers.sam.model import build_tiny_sam
from helpers.views.widget import ClickCanvas, sam_compare_widget


def click(x, y, button=0, shift=False):
    return {"kind": "pointer", "x0": x, "y0": y, "x1": x, "y1": y, "button": button, "shift": shift}


@pytest.fixture(scope="module")
def models():
    before = build_tiny_sam()
    after = copy.deepcopy(before)
    after.image_encoder = before.image_encoder  # decoder-only fine-tuning: one encoder
    with torch.no_grad():
        after.mask_decoder.output_hypernetworks_mlps[0].layers[-1].weight.mul_(30)
        for mlp in after.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(30)
    return {"before": before, "after": after}


def test_the_browser_message_path_reaches_the_controller(models):
    ds = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")
    widget, ctl = sam_compare_widget(models, ds)
    canvases = [w for w in _walk(widget) if isinstance(w, ClickCanvas)]
    assert len(canvases) == 2 and all(c.src.startswith("data:image/jpeg;base64,") for c in canvases)
    before_src = canvases[1].src
    canvases[0]._handle(
        canvases[0], click(120.5, 200.5), []
    )  # what anywidget delivers on model.send
    assert ctl.state.points == [(120.0, 200.0, 1)]
    assert canvases[1].src != before_src  # both panels re-rendered


def _walk(w):
    yield w
    for child in getattr(w, "children", ()):
        yield from _walk(child)
