"""Running the course's command-line jobs from a notebook (notebook 06), their lines (one per
epoch, rank 0's) shown as they come, so that a cell running a job for minutes is never
silent.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class JobError(RuntimeError):
    """A job ended with a non-zero exit code; the message holds its last lines."""


def run_job(
    cmd: Sequence[str],
    *,
    name: str,
    cwd: str | Path | None = None,
    env: dict | None = None,
    echo: Callable[[str], object] = print,
) -> tuple[list[str], float]:
    """Run ``cmd`` (with ``PYTHONUNBUFFERED=1``) and pass each line of its output, stdout
    and stderr together, to ``echo`` as it is written, between lines saying that job
    ``name`` started and ended, and how long it took.

    Returns:
        ``(lines, seconds)``: every output line, without its newline, and the wall time.

    Raises:
        JobError: a non-zero exit code; the message names the job and holds its last 40 lines."""
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    echo(f"[{name}] started: {' '.join(map(str, cmd))}")
    t0 = time.perf_counter()
    lines: list[str] = []
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            echo(f"[{name}] {lines[-1]}")
        code = proc.wait()
    except BaseException:  # an interrupted cell stops its job too
        proc.kill()
        proc.wait()
        raise
    seconds = time.perf_counter() - t0
    if code:
        raise JobError(f"{name}: exit code {code}; its last lines:\n" + "\n".join(lines[-40:]))
    echo(f"[{name}] ended after {seconds:.0f} s")
    return lines, seconds
