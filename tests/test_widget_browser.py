"""End to end in a real browser: JupyterLab on localhost, headless Chromium driven by
Playwright (Debian's chromium, no browser download), a notebook that shows the SAM
before/after widget and the Mask R-CNN one on smoke-mode models; clicks on an object
and checks that the "after" panels answered.

Needs /usr/bin/chromium and the playwright package. Without them the test is skipped,
unless SEGCOURSE_REQUIRE_BROWSER=1 (set by .ci/run, which installs both): then it fails.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REQUIRED = os.environ.get("SEGCOURSE_REQUIRE_BROWSER") == "1"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

NOTEBOOK_CODE = """\
import copy
import torch
import helpers
from helpers.sam_model import build_tiny_sam
from helpers.widget import sam_compare_widget

before = build_tiny_sam()
after = copy.deepcopy(before)
after.image_encoder = before.image_encoder
with torch.no_grad():
    for mlp in after.mask_decoder.output_hypernetworks_mlps:
        mlp.layers[-1].weight.mul_(30)
ds = helpers.VOCInstanceDataset(helpers.DATA_EXAMPLE / "VOCdevkit", "train")
widget, controller = sam_compare_widget({"before": before, "after": after}, ds)
widget
"""

DETECTION_CODE = """from helpers.maskrcnn import (
    SMOKE_MODEL_KWARGS, build_coco_maskrcnn, build_maskrcnn, map_to_vessel
)
from helpers.widget import detection_compare_widget

torch.manual_seed(0)
lab = helpers.LabPicsDataset(helpers.DATA_EXAMPLE / "LabPicsMedical", "Test")
det_widget, det_controller = detection_compare_widget(
    {"before": (build_coco_maskrcnn(pretrained=False, **SMOKE_MODEL_KWARGS), map_to_vessel),
     "after": (build_maskrcnn(pretrained=False, **SMOKE_MODEL_KWARGS), None)}, lab)
det_widget
"""


def _requirements_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return None


@pytest.fixture(scope="module")
def lab_url(tmp_path_factory):
    missing = _requirements_missing()
    if missing:
        if REQUIRED:
            pytest.fail(f"SEGCOURSE_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    root = tmp_path_factory.mktemp("lab")
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"cell{i}",
                "metadata": {},
                "outputs": [],
                "source": code,
            }
            for i, code in enumerate((NOTEBOOK_CODE, DETECTION_CODE))
        ],
        "metadata": {
            "kernelspec": {
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
                "name": "python3",
            }
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (root / "widget.ipynb").write_text(json.dumps(nb))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ)
    for var in (
        "JUPYTER_CONFIG_DIR",
        "JUPYTERLAB_SETTINGS_DIR",
        "JUPYTERLAB_WORKSPACES_DIR",
        "JUPYTER_RUNTIME_DIR",
    ):
        env[var] = str(tmp_path_factory.mktemp(var.lower()))
    log = open(root / "lab.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--allow-root",
            "--IdentityProvider.token=",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.disable_check_xsrf=True",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api", timeout=2)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.terminate()
                pytest.fail(f"JupyterLab did not start:\n{(root / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_clicks_update_the_after_panels_of_both_widgets_in_jupyterlab(lab_url, tmp_path):
    from playwright.sync_api import sync_playwright

    from helpers import DATA_EXAMPLE, VOCInstanceDataset

    instance = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")[0]["masks"][0]
    ys, xs = np.nonzero(instance)
    ix, iy = float(xs[len(xs) // 2]) + 0.5, float(ys[len(ys) // 2]) + 0.5  # a pixel of the object

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        try:
            page.goto(f"{lab_url}/lab/tree/widget.ipynb", timeout=60_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell .jp-InputArea-editor", timeout=60_000)
            # the kernel must be connected and idle before a run request is accepted
            page.wait_for_function(
                "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
                ".some(e => e.innerText.includes('| Idle'))",
                timeout=90_000,
            )
            page.click("li.lm-MenuBar-item:has-text('Run')")
            page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
            img = page.wait_for_selector(".segcourse-canvas img", timeout=120_000)
            label = page.wait_for_selector(".segcourse-sam-after", timeout=30_000)
            assert label.inner_text() == "after: no prompt yet"
            page.wait_for_function(
                "() => document.querySelector('.segcourse-canvas img').naturalWidth > 0"
            )
            natural_w, natural_h = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
            box = img.bounding_box()
            sx, sy = (
                box["x"] + ix * box["width"] / natural_w,
                box["y"] + iy * box["height"] / natural_h,
            )
            page.mouse.click(sx, sy)
            page.wait_for_function(
                "() => document.querySelector('.segcourse-sam-after')"
                ".innerText.includes('mask area')",
                timeout=30_000,
            )
            after_text = label.inner_text()
            assert "IoU vs ground truth" in after_text and "SAM score" in after_text
            # a right click adds a negative point and does not open JupyterLab's menu
            before_label = page.query_selector(".segcourse-sam-before")
            first = before_label.inner_text()
            page.mouse.click(box["x"] + 5, box["y"] + 5, button="right")
            page.wait_for_function(
                "(t) => document.querySelector('.segcourse-sam-before').innerText !== t",
                arg=first,
                timeout=30_000,
            )
            assert not page.query_selector(".lm-Menu.lm-MenuBar-menu, .jp-ContextMenu")

            # Mask R-CNN mode: a click reports what lies under it, in each panel
            det_label = page.wait_for_selector(".segcourse-det-after", timeout=120_000)
            assert (
                "detections with score >=" in det_label.inner_text()
                and "under the click" not in det_label.inner_text()
            )
            det_img = page.query_selector_all(".segcourse-canvas img")[
                2
            ]  # SAM's two panels come first
            det_img.scroll_into_view_if_needed()
            b = det_img.bounding_box()
            page.mouse.click(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
            page.wait_for_function(
                "() => document.querySelector('.segcourse-det-after')"
                ".innerText.includes('under the click')",
                timeout=30_000,
            )
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"))
            print("screenshot:", tmp_path / "failure.png")
            raise
        finally:
            browser.close()
