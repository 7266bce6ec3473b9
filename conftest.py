"""Test-suite set-up shared by tests/ and the notebooks that nbval runs.

Smoke mode is switched on here, before any kernel starts, so that the notebooks' kernels
inherit it. The test suite runs in smoke mode only: it gives each run a throw-away
cache, each cell a time limit and runs two notebooks at once. A full-mode run of the
notebooks, on a machine with a GPU and the data, is ``python -m scripts.run_notebooks``.
"""

import os

if os.environ.get("SEGCOURSE_SMOKE", "1").strip().lower() in ("", "0", "false", "no", "off"):
    raise SystemExit(
        "SEGCOURSE_SMOKE asks for full mode, but the test suite runs in smoke mode only. "
        "To run the notebooks in full mode: python -m scripts.run_notebooks"
    )
os.environ["SEGCOURSE_SMOKE"] = "1"
# Progress bars change stream outputs from run to run; smoke runs keep them quiet.
os.environ.setdefault("TQDM_DISABLE", "1")
# Under pytest-xdist's workers (pyproject.toml: two), one thread each, inherited by the
# notebooks' kernels and the torchrun jobs: two workers of two threads would fight over
# two cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

# Downloads and caches of a test run go to a throw-away folder, never the user's cache.
if "SEGCOURSE_CACHE" not in os.environ:
    import tempfile

    os.environ["SEGCOURSE_CACHE"] = tempfile.mkdtemp(prefix="segcourse-test-cache-")

# The longest files first. pytest-xdist hands each worker whole files (``--dist
# loadfile``) in the order collected (``--no-loadscope-reorder``); without this order it
# sorts files by their number of tests, which left a one-minute browser test and the
# torchrun notebook to the end, one core idle meanwhile. Measured with
# ``pytest --durations=0``; the rest keep their collected order.
SLOW_FIRST = (
    "notebooks/03_finetune_sam_decoder_voc.ipynb",
    "notebooks/06_beyond_one_gpu.ipynb",
    "notebooks/05_using_and_shipping_the_decoder.ipynb",
    "tests/test_browser.py",
    "tests/test_sam_training.py",
    "notebooks/04_finetune_maskrcnn_labpics.ipynb",
    "tests/test_distributed.py",
    "tests/test_detection_training.py",
    "tests/test_data_downloads.py",
)


def pytest_collection_modifyitems(session, config, items):
    import pytest

    root = config.rootpath
    missing = [p for p in SLOW_FIRST if not (root / p).is_file()]
    if missing:
        raise pytest.UsageError(f"{__file__}: SLOW_FIRST names files that are gone: {missing}")
    rank = {path: i for i, path in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(SLOW_FIRST)))
