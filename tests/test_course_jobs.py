"""Jobs run from a notebook show their lines while they run (notebook 06)."""

import sys

import pytest

from helpers.course.jobs import JobError, run_job


def test_a_jobs_lines_arrive_while_it_runs_not_at_its_end(tmp_path):
    """The job prints a line (no flush), then waits until the caller has shown it (a file
    the echo writes) before it prints the next: if lines arrived only at the job's end,
    the job would give up waiting and say so."""
    seen_first = tmp_path / "seen_first"
    code = (
        "import pathlib, time; print('first')\n"
        f"flag = pathlib.Path({str(seen_first)!r})\n"
        "for _ in range(600):\n"
        "    if flag.exists(): break\n"
        "    time.sleep(0.1)\n"
        "print('second' if flag.exists() else 'gave up waiting')"
    )
    seen = []

    def echo(line):
        seen.append(line)
        if line == "[job] first":
            seen_first.write_text("shown")

    lines, seconds = run_job(
        [sys.executable, "-c", code],
        name="job",
        env={},  # not even PYTHONUNBUFFERED from the caller: run_job sets it
        echo=echo,
    )
    assert lines == ["first", "second"]
    assert seen[0].startswith("[job] started") and seen[-1].startswith("[job] ended")
    assert seen[1:3] == ["[job] first", "[job] second"]
    assert seconds > 0


def test_a_failed_job_names_itself_and_shows_its_last_lines():
    code = "import sys; print('boom', file=sys.stderr); raise SystemExit(3)"
    with pytest.raises(JobError, match=r"(?s)^broken: exit code 3.*boom"):
        run_job([sys.executable, "-c", code], name="broken", echo=lambda s: None)
