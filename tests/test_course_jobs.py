"""Jobs run from a notebook show their lines while they run (notebook 06)."""

import sys
import time

import pytest

from helpers.course.jobs import JobError, run_job


def test_a_jobs_lines_arrive_while_it_runs_not_at_its_end():
    code = "import time; print('first'); time.sleep(2); print('second')"  # no flush
    seen = []
    lines, seconds = run_job(
        [sys.executable, "-c", code],
        name="job",
        env={},  # not even PYTHONUNBUFFERED from the caller: run_job sets it
        echo=lambda s: seen.append((time.perf_counter(), s)),
    )
    assert lines == ["first", "second"]
    shown = [s for _, s in seen]
    assert shown[0].startswith("[job] started") and shown[-1].startswith("[job] ended")
    assert shown[1:3] == ["[job] first", "[job] second"]
    first_at, ended_at = seen[1][0], seen[-1][0]
    assert ended_at - first_at > 1.5  # "first" was on screen while the job slept
    assert seconds >= 2


def test_a_failed_job_names_itself_and_shows_its_last_lines():
    code = "import sys; print('boom', file=sys.stderr); raise SystemExit(3)"
    with pytest.raises(JobError, match=r"(?s)^broken: exit code 3.*boom"):
        run_job([sys.executable, "-c", code], name="broken", echo=lambda s: None)
