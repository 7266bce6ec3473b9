"""Run the course's notebooks from the command line, in order, each to the end.

    python -m scripts.run_notebooks              # every notebook, in the mode of this shell
    python -m scripts.run_notebooks 03 05        # some of them (by number)

Full mode (the default; ``SEGCOURSE_SMOKE`` unset) is what this is for: on a machine with
a GPU, the real checkpoints and data sets in the course's cache (``SEGCOURSE_CACHE`` or its
default, as the notebooks use it). Each notebook runs with no cell time limit, one at a
time (03's training would take the GPU that a second notebook needs), and its executed
copy, outputs included, is written to ``--out`` (default ``executed/``, beside the working
notebooks, left alone). ``pytest`` is not the way: it runs the notebooks in smoke mode,
in a throw-away cache, with a per-cell time limit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def chosen(numbers: list[str]) -> list[Path]:
    """The notebooks named by their numbers (``03``), in course order; all without any."""
    every = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not numbers:
        return every
    picked = [nb for nb in every if nb.name[:2] in {n.zfill(2) for n in numbers}]
    unknown = {n.zfill(2) for n in numbers} - {nb.name[:2] for nb in picked}
    if unknown:
        raise SystemExit(f"no notebook numbered {', '.join(sorted(unknown))} in {NOTEBOOKS}")
    return picked


def command(notebook: Path, out: Path) -> list[str]:
    """The nbconvert command that runs ``notebook`` to its end, writing it to ``out``."""
    return [
        sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
        "--ExecutePreprocessor.timeout=-1",  # no cell time limit: training takes hours
        f"--output-dir={out}", str(notebook),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("numbers", nargs="*", help="notebook numbers, e.g. 03 05 (default: all)")
    parser.add_argument("--out", default=str(NOTEBOOKS / "executed"), help="executed copies")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mode = (
        "smoke"
        if os.environ.get("SEGCOURSE_SMOKE", "0").lower() in ("1", "true", "yes", "on")
        else "full"
    )
    for notebook in chosen(args.numbers):  # one at a time
        print(f"running {notebook.name} ({mode} mode) -> {out / notebook.name}", flush=True)
        subprocess.run(command(notebook, out), check=True)


if __name__ == "__main__":
    main()
