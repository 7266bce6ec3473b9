"""A standard mutation tool beside the course's own audit: mutmut over the pure modules.

``benchmarks/mutation_audit.py`` runs realistic bugs written by hand; this runs every
operator-level mutant that mutmut (3.x) generates, exhaustively, over the modules and
test files named in ``[tool.mutmut]`` of ``pyproject.toml``. A maintainer's check, run by
its own command, not by ``pytest``:

    python benchmarks/mutmut_report.py            # mutmut run, then the report
    python benchmarks/mutmut_report.py --report   # the report of the last run only

The report counts, per module, the mutants killed (a test failed or timed out), those
that survived, and the survivors listed as **equivalent** in
``benchmarks/mutmut_equivalent.toml`` (a mutant that no test can tell from the original,
each with why). It prints one JSON object and writes ``benchmarks/results/mutmut.json``;
every survivor that is not listed is in it with its diff (``mutmut show``), to be killed
by a new test or listed with its reason.
"""

import argparse
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from importlib.metadata import version
from pathlib import Path

from _results import save

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT = Path(__file__).with_name("mutmut_equivalent.toml")
LINE = re.compile(r"^\s+(\S+): (.+)$")
KILLED = {"killed", "timeout", "segfault", "caught by type check"}


def mutmut(*args: str, check: bool = True) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mutmut", *args], cwd=ROOT, capture_output=True, text=True
    )
    if check and done.returncode:
        tail = (done.stdout + done.stderr)[-3000:]
        raise SystemExit(f"mutmut {' '.join(args)} failed:\n{tail}")
    return done.stdout


def module_of(mutant: str) -> str:
    """``helpers.sam.clicks.x_next_click__mutmut_12`` -> ``helpers.sam.clicks``."""
    return mutant.rsplit(".", 1)[0] if ".x" in mutant else mutant.split("__mutmut")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", action="store_true", help="report the last run only")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    if not args.report:
        subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)],
            cwd=ROOT,
            check=True,
        )
    status = {}
    for line in mutmut("results", "--all", "true").splitlines():
        match = LINE.match(line)
        if match:
            status[match.group(1)] = match.group(2)
    if not status:
        raise SystemExit("mutmut has no results: run without --report first")
    equivalent = tomllib.loads(EQUIVALENT.read_text())["equivalent"] if EQUIVALENT.is_file() else {}
    stale = sorted(set(equivalent) - set(status))
    per_module: dict[str, Counter] = defaultdict(Counter)
    survivors = []
    for name, s in sorted(status.items()):
        module = module_of(name)
        if s in KILLED:
            per_module[module]["killed"] += 1
        elif s == "survived" and name in equivalent:
            per_module[module]["equivalent"] += 1
        elif s == "survived":
            per_module[module]["survived"] += 1
            survivors.append({"mutant": name, "diff": mutmut("show", name, check=False)[-1500:]})
        else:
            per_module[module][s] += 1
    totals = sum(per_module.values(), Counter())
    tried = sum(totals.values())
    save(
        "mutmut",
        {
            "tool": "mutmut " + version("mutmut"),
            "mutants": tried,
            "killed": totals["killed"],
            "equivalent": totals["equivalent"],
            "survived": totals["survived"],
            # the goal: survivors (equivalent or not) at most 10 %, none of them unexplained
            "survivor_share": round((totals["survived"] + totals["equivalent"]) / tried, 4),
            "modules": {m: dict(c) for m, c in sorted(per_module.items())},
            "survivors": survivors,
            "equivalent_listed_but_gone": stale,
        },
    )


if __name__ == "__main__":
    main()
