"""Where a benchmark's figures go: printed as JSON and kept in ``benchmarks/results/``.

Every benchmark ends with :func:`save`: one JSON object on stdout, and the same object,
with the command that made it and when, in ``benchmarks/results/<name>.json``
(committed). The README's figures are generated from these files
(``python -m scripts.readme_results``), and a test fails when the README and a
file disagree, so no figure is typed by hand.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _script() -> str:
    path = Path(sys.argv[0]).resolve()
    try:
        return path.relative_to(RESULTS.parent.parent).as_posix()
    except ValueError:
        return path.as_posix()


def save(name: str, results: dict) -> Path:
    """Print ``results`` as JSON and write them to ``benchmarks/results/<name>.json``
    (a temporary file, then renamed), with the command, the date and the machine."""
    import torch

    print(json.dumps(results))
    record = {
        "command": " ".join(["python", _script(), *sys.argv[1:]]),
        "measured": datetime.date.today().isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)
    return path
