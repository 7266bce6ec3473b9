"""How long the README's test command takes here, and where the time goes.

Runs ``pytest`` exactly as the README says (its own configuration: every unit test and
notebook, the worker processes of ``pyproject.toml``), with ``--durations=10`` added, and
records the wall time, the counts and the ten slowest items. The README quotes the
result (``python -m scripts.readme_results``). Run it on a quiet machine, after
every other benchmark has written its results file.

One file is left out: ``tests/test_scripts_readme_results.py`` checks that the README quotes the
results files, including the one this run is about to write, so it cannot pass before
this run ends (its three tests take well under a second).

    python benchmarks/test_suite.py
"""

import re
import subprocess
import sys
import time
from pathlib import Path

from _results import save

REPO = Path(__file__).resolve().parent.parent
IGNORED = "tests/test_scripts_readme_results.py"  # checks the file this run writes


def main() -> None:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--durations=10", f"--ignore={IGNORED}"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t0
    out = done.stdout
    if done.returncode != 0:
        sys.exit(out[-4000:] + done.stderr[-2000:])
    counts = {
        k: int(v) for v, k in re.findall(r"(\d+) (passed|skipped|failed)", out.splitlines()[-1])
    }
    slowest = re.findall(r"^([\d.]+)s (call|setup|teardown)\s+(.+?)\s*$", out, re.M)
    # the worker processes: pytest-xdist's -n in the configuration the command reads
    addopts = re.search(r"^addopts = (.*)$", (REPO / "pyproject.toml").read_text(), re.M)
    workers = re.search(r"(?:\s|\")-n\s*(\d+)", addopts.group(1)) if addopts else None
    save(
        "test_suite",
        {
            "seconds": round(seconds, 1),
            "passed": counts.get("passed", 0),
            "skipped": counts.get("skipped", 0),
            "ignored": IGNORED,
            "workers": int(workers.group(1)) if workers else 1,
            "slowest": [{"seconds": float(s), "when": w, "item": i} for s, w, i in slowest],
        },
    )


if __name__ == "__main__":
    main()
