"""How well the unit tests catch realistic bugs: a mutation audit of helpers/.

Each entry of ``mutations.toml`` (beside this file) is one bug a developer could plausibly make (an
off-by-one, swapped x/y, a dropped void mask, argmin for argmax, a missing detach, a
forgotten check ...): a module, an exact ``old`` snippet that occurs once in it, its
``new`` replacement, and a one-line description. For each, the unit tests run on a copy
of the module with that one bug in it; the bug is **caught** when they fail (pytest exit
code 1) and **escapes** when they pass (exit code 0). Anything else (timeout, collection
error, exit codes 2-5) is recorded apart with its reason. A mutation whose snippet is not
found exactly once is **invalid** (fix the list), never counted as caught.

Everything runs in a snapshot: the repository's committed HEAD exported into a temporary
folder (``git archive HEAD``), with ``PYTHONPATH`` and the working directory set to it,
so that uncommitted edits in the checkout are neither tested nor touched. The unmutated
snapshot must pass first (the baseline); bytecode is never written, so a mutation of the
same size within the same second cannot be served a stale ``.pyc``.

    python benchmarks/mutation_audit.py                    # all, JSON summary on stdout
    python benchmarks/mutation_audit.py --set new          # round 2's 40 only
    python benchmarks/mutation_audit.py --only clicks      # one module (repeatable)
    python benchmarks/mutation_audit.py --list             # the mutations, checked
    python benchmarks/mutation_audit.py --out audit.json   # the summary also to a file
    python benchmarks/mutation_audit.py --targeted         # only the tests naming the module
    python benchmarks/mutation_audit.py --jobs 2           # two at a time (two cores)

One line per mutation goes to stderr as it finishes. A full run takes about as many
test-suite runs as there are mutations (a caught one stops at the first failure: ``-x``).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from _results import save

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
#: slow and about other things: the real-browser widget test; and the check that the README
#: quotes benchmarks/results, which is out of step while the benchmarks (this audit among
#: them) are being run again (no mutation is in its module)
IGNORED_TEST_FILES = ("test_browser.py", "test_scripts_readme_results.py")
#: the torchrun jobs of tests/test_distributed.py (its unit tests run)
DESELECTED = (
    "tests/test_distributed.py::test_evaluation_gathered_on_rank_0_equals_one_process_and_a_nan_on_one_rank_stops_all",
    "tests/test_distributed.py::test_a_stalled_rank_ends_the_job_within_its_timeout_with_a_message_naming_the_rank",
)
PYTEST_ARGS = [
    "-m",
    "pytest",
    "-q",
    "-x",
    "-p",
    "no:cacheprovider",
    "-n",
    "0",  # one process: -x stops at the first failure, and the two cores are the audit's
    "tests",
    *[f"--ignore=tests/{name}" for name in IGNORED_TEST_FILES],
    *[f"--deselect={node}" for node in DESELECTED],
]


@dataclass(frozen=True)
class Mutation:
    module: str  # path relative to the repository root, e.g. "helpers/sam/clicks.py"
    old: str  # must occur exactly once in the module
    new: str
    description: str


#: The mutations, a data file beside this harness: ``original`` (the first 87) and ``new``
#: (round 2's 40, written before any test meant for them).
MUTATIONS_FILE = Path(__file__).with_name("mutations.toml")


def load_mutations(path: Path = MUTATIONS_FILE) -> dict[str, list[Mutation]]:
    """``{set name: [Mutation, ...]}`` from the data file."""
    table = tomllib.loads(path.read_text())
    return {name: [Mutation(**entry) for entry in entries] for name, entries in table.items()}


def module_name(path: str) -> str:
    """``helpers/sam/clicks.py`` -> ``helpers.sam.clicks`` (the module's import path)."""
    return ".".join(Path(path).with_suffix("").parts)


def make_snapshot(dest: Path) -> None:
    """Export the committed HEAD of the repository into ``dest``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "HEAD"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def committed(module: str) -> str | None:
    """``module``'s text at the committed HEAD (what a snapshot holds), or None."""
    show = subprocess.run(
        ["git", "-C", str(REPO), "show", f"HEAD:{module}"], capture_output=True, text=True
    )
    return show.stdout if show.returncode == 0 else None


def tests_for(module: str, snapshot: Path) -> list[str]:
    """The test files that can see ``module``: those naming ``helpers.<sub>.<module>`` or one of
    the module's top-level functions or classes. Running only these (``--targeted``)
    makes the audit minutes instead of hours; a bug caught only by an unrelated test file
    then counts as escaped, so the measured share can only be lower than the whole
    suite's."""
    source = (snapshot / module).read_text()
    names = set(re.findall(r"^(?:def|class) (\w+)", source, re.M))
    names = {n for n in names if not n.startswith("_")}
    pattern = re.compile(
        rf"\b{re.escape(module_name(module))}\b|\b(?:{'|'.join(map(re.escape, names))})\b"
    )
    files = []
    for path in sorted((snapshot / "tests").glob("test_*.py")):
        if path.name in IGNORED_TEST_FILES:
            continue
        if pattern.search(path.read_text()):
            files.append(f"tests/{path.name}")
    # the module's own test file first, then those importing the module by name: -x
    # stops at the first failure, so a bug is caught sooner; the same tests run in all
    # (an escaped bug passes every one of them), so no outcome depends on this order
    stem = Path(module).stem
    direct = re.compile(rf"\b{re.escape(module_name(module))}\b")
    return sorted(
        files,
        key=lambda f: (stem not in Path(f).stem, not direct.search((snapshot / f).read_text())),
    )


def run_tests(
    snapshot: Path,
    python: str,
    timeout: float,
    files: list[str] | None = None,
    one_thread: bool = False,
) -> dict:
    """Run the unit tests in ``snapshot`` (only ``files`` when given). Returns ``rc``
    (None on timeout), ``seconds`` and ``tail`` (the last lines of the output)."""
    env = dict(os.environ, PYTHONPATH=str(snapshot), PYTHONDONTWRITEBYTECODE="1")
    if one_thread:  # runs side by side: one thread each, or their thread pools fight
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    args = PYTEST_ARGS if not files else [a for a in PYTEST_ARGS if a != "tests"] + files
    proc = subprocess.Popen(
        [python, *args],
        cwd=snapshot,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout kills its children too
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        rc = None
    return {"rc": rc, "seconds": round(time.perf_counter() - t0, 1), "tail": out[-3000:]}


def first_failure(tail: str) -> str | None:
    """The first ``FAILED``/``ERROR`` line of pytest's short summary, if any."""
    for line in tail.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line[:200]
    return None


def check(mutation: Mutation, source: str) -> str | None:
    """Why ``mutation`` cannot be applied to ``source``, or None when it can."""
    if mutation.old == mutation.new:
        return "old and new are the same"
    n = source.count(mutation.old)
    return None if n == 1 else f"old snippet found {n} times (must be exactly once)"


def audit_one(
    mutation: Mutation,
    snapshot: Path,
    python: str,
    timeout: float,
    targeted: bool = False,
    one_thread: bool = False,
) -> dict:
    """Apply ``mutation`` in ``snapshot``, run the tests (with ``targeted``, only
    :func:`tests_for` the module), restore the file."""
    path = snapshot / mutation.module
    record = {"module": mutation.module, "description": mutation.description}
    if not path.is_file():
        return {**record, "outcome": "invalid", "reason": "module not found"}
    original = path.read_text()
    problem = check(mutation, original)
    if problem:
        return {**record, "outcome": "invalid", "reason": problem}
    try:
        files = tests_for(mutation.module, snapshot) if targeted else None
        if files == []:
            return {**record, "outcome": "escaped", "reason": "no test file names it"}
        path.write_text(original.replace(mutation.old, mutation.new))
        result = run_tests(snapshot, python, timeout, files, one_thread)
    finally:
        path.write_text(original)
    rc = result["rc"]
    if rc == 1:
        outcome, reason = "caught", first_failure(result["tail"])
    elif rc == 0:
        outcome, reason = "escaped", None
    elif rc is None:
        outcome, reason = "other", f"timeout after {timeout:.0f} s"
    else:
        last = result["tail"].strip().splitlines()[-1:] or [""]
        outcome, reason = "other", f"pytest exit code {rc}: {last[0][:200]}"
    return {**record, "outcome": outcome, "reason": reason, "seconds": result["seconds"]}


def summarise(records: list[tuple[Mutation, dict]]) -> dict:
    modules: dict[str, dict] = {}
    for mutation, r in records:
        m = modules.setdefault(
            mutation.module,
            {"tried": 0, "caught": 0, "escaped": 0, "invalid": 0, "other": 0, "escaped_list": []},
        )
        if r["outcome"] == "invalid":
            m["invalid"] += 1
            continue
        m["tried"] += 1
        m[r["outcome"]] += 1
        if r["outcome"] == "escaped":
            m["escaped_list"].append(
                {"description": mutation.description, "old": mutation.old, "new": mutation.new}
            )
    totals = {k: sum(m[k] for m in modules.values()) for k in ("tried", "caught", "escaped")}
    totals["invalid"] = sum(m["invalid"] for m in modules.values())
    totals["other"] = sum(m["other"] for m in modules.values())
    return {
        "modules": modules,
        "totals": totals,
        # of the mutations that ran (invalid ones excluded; "other" counts as not caught)
        "caught_share": round(totals["caught"] / totals["tried"], 3) if totals["tried"] else None,
        "invalid_or_other": [
            {"module": r["module"], "description": r["description"], "reason": r["reason"]}
            for _, r in records
            if r["outcome"] in ("other", "invalid")
        ],
        "results": [
            {k: r.get(k) for k in ("module", "description", "outcome", "reason", "seconds")}
            for _, r in records
        ],
    }


def selected(only: list[str] | None, which: str = "all") -> list[Mutation]:
    """The mutations of ``which`` set (``original``: the first 87, ``new``: round 2's,
    ``all``), limited to modules named in ``only`` (``sam.clicks`` or ``clicks``)."""
    sets = load_mutations()
    pool = sets["original"] + sets["new"] if which == "all" else sets[which]
    if not only:
        return list(pool)

    def named(m: Mutation, o: str) -> bool:
        name = module_name(m.module)
        return name == o or name.endswith("." + o)

    unknown = [o for o in only if not any(named(m, o) for m in pool)]
    if unknown:
        raise SystemExit(f"no mutations for: {', '.join(sorted(unknown))}")
    return [m for m in pool if any(named(m, o) for o in only)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="MODULE", help="e.g. clicks")
    parser.add_argument("--list", action="store_true", help="print the mutations and exit")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per test run")
    parser.add_argument("--python", default=sys.executable, help="interpreter running pytest")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="mutations tried at once, each in its own snapshot on one thread (e.g. the cores)",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON summary here")
    parser.add_argument(
        "--targeted",
        action="store_true",
        help="run only the test files that name the mutated module (tests_for)",
    )
    parser.add_argument(
        "--set",
        dest="which",
        choices=("original", "new", "all"),
        default="all",
        help="the first 87 mutations, round 2's 40, or both (default)",
    )
    args = parser.parse_args()
    mutations = selected(args.only, args.which)

    if args.list:
        for i, m in enumerate(mutations, 1):
            source = committed(m.module)
            problem = "module not found at HEAD" if source is None else check(m, source)
            status = "ok" if problem is None else f"INVALID: {problem}"
            print(f"{i:3d}. {m.module}: {m.description} [{status}]")
            print(f"     - {m.old!r}\n     + {m.new!r}")
        print(f"{len(mutations)} mutations (checked against the committed HEAD)")
        return

    jobs = max(1, args.jobs)
    tmp = Path(tempfile.mkdtemp(prefix="mutation-audit-"))
    try:
        snapshots = [tmp / f"repo{j}" for j in range(jobs)]
        for snapshot in snapshots:
            snapshot.mkdir()
            make_snapshot(snapshot)
        baseline = run_tests(snapshots[0], args.python, args.timeout, one_thread=jobs > 1)
        print(f"baseline: exit code {baseline['rc']} in {baseline['seconds']} s", file=sys.stderr)
        if baseline["rc"] != 0:
            print(baseline["tail"], file=sys.stderr)
            raise SystemExit("the unmutated snapshot does not pass its tests: nothing measured")
        free: queue.Queue = queue.Queue()
        for snapshot in snapshots:
            free.put(snapshot)

        def one(m: Mutation) -> dict:
            snapshot = free.get()  # a snapshot no other mutation is using
            try:
                return audit_one(
                    m, snapshot, args.python, args.timeout, args.targeted, one_thread=jobs > 1
                )
            finally:
                free.put(snapshot)

        records = []
        pool = ThreadPoolExecutor(jobs)
        for i, (m, r) in enumerate(zip(mutations, pool.map(one, mutations)), 1):
            records.append((m, r))
            extra = f" ({r['reason']})" if r.get("reason") else ""
            secs = f" {r['seconds']} s" if "seconds" in r else ""
            print(
                f"[{i}/{len(mutations)}] {r['outcome'].upper():8s}{secs} {m.module}: "
                f"{m.description}{extra}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    summary = {
        "baseline_seconds": baseline["seconds"],
        "jobs": jobs,
        "targeted": args.targeted,
        "set": args.which,
        **summarise(records),
    }
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    save(f"mutation_audit_{args.which}" + ("_targeted" if args.targeted else ""), summary)


if __name__ == "__main__":
    main()
