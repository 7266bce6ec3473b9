"""Test-suite set-up shared by tests/ and the notebooks that nbval runs.

Smoke mode is switched on here, before any kernel starts, so that the notebooks' kernels
inherit it. An explicit SEGCOURSE_SMOKE=0 in the environment is respected: that is how a
full-mode run of the notebooks through pytest is asked for (on a machine with the data).
"""

import os

os.environ.setdefault("SEGCOURSE_SMOKE", "1")
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
