import pytest

from helpers import runtime


@pytest.mark.parametrize(
    "value,smoke", [("1", True), ("true", True), ("ON", True), ("0", False), ("", False)]
)
def test_smoke_switch_reads_the_one_variable(monkeypatch, value, smoke):
    monkeypatch.setenv(runtime.SMOKE_ENV, value)
    assert runtime.is_smoke() is smoke


def test_smoke_switch_unset_means_full_mode(monkeypatch):
    monkeypatch.delenv(runtime.SMOKE_ENV, raising=False)
    assert runtime.is_smoke() is False


def test_smoke_switch_typo_is_an_error_not_a_silent_mode(monkeypatch):
    monkeypatch.setenv(runtime.SMOKE_ENV, "smoke")
    with pytest.raises(ValueError, match="SEGCOURSE_SMOKE='smoke' is not understood"):
        runtime.is_smoke()


def test_test_suite_runs_in_smoke_mode():
    assert runtime.is_smoke()


def test_cache_dir_follows_its_variable_and_is_created(monkeypatch, tmp_path):
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "c"))
    assert runtime.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    assert str(tmp_path / "c") in runtime.describe()
