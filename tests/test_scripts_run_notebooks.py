"""scripts.run_notebooks: the full-mode run of the notebooks the README offers, one at a
time, to the end, in the learner's own cache."""

import pytest

from scripts import run_notebooks


def test_the_notebooks_run_in_course_order_one_by_one_and_any_can_be_picked():
    every = run_notebooks.chosen([])
    assert [nb.name[:2] for nb in every] == sorted(nb.name[:2] for nb in every)
    assert len(every) >= 7 and every[0].name.startswith("00_")
    assert [nb.name[:2] for nb in run_notebooks.chosen(["5", "03"])] == ["03", "05"]
    with pytest.raises(SystemExit, match="no notebook numbered 42"):
        run_notebooks.chosen(["42"])


def test_a_notebook_runs_without_a_cell_time_limit_into_its_own_copy(tmp_path):
    nb = run_notebooks.chosen(["03"])[0]
    cmd = run_notebooks.command(nb, tmp_path)
    assert cmd[1:5] == ["-m", "jupyter", "nbconvert", "--to"] and "--execute" in cmd
    assert "--ExecutePreprocessor.timeout=-1" in cmd and f"--output-dir={tmp_path}" in cmd
    assert cmd[-1] == str(nb)  # the committed notebook is read, the copy written elsewhere


def test_it_leaves_the_mode_and_the_cache_to_the_learners_environment(tmp_path, monkeypatch):
    """Nothing in the command sets SEGCOURSE_SMOKE or SEGCOURSE_CACHE: the notebooks run
    in the shell's mode and the learner's cache (pytest's throw-away cache is not used)."""
    runs = []
    monkeypatch.setattr(run_notebooks.subprocess, "run", lambda cmd, **kw: runs.append((cmd, kw)))
    run_notebooks.main(["00", "01", "--out", str(tmp_path)])
    assert [cmd[-1][-30:] for cmd, _ in runs] == [
        str(nb)[-30:] for nb in run_notebooks.chosen(["00", "01"])
    ]
    assert all("env" not in kw and kw["check"] for _, kw in runs)
