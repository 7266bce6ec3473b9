"""helpers.course.runtime: smoke or full mode from one variable, the cache and data folders,
the line a notebook prints about where it runs."""

import pytest

from helpers.course import runtime


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


def test_cache_dir_defaults_to_drive_in_colab_and_to_the_home_cache_elsewhere(
    monkeypatch, tmp_path
):
    monkeypatch.delenv(runtime.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    drive = tmp_path / "drive" / "MyDrive"
    monkeypatch.setattr(runtime, "COLAB_DRIVE", drive)
    assert runtime.cache_dir() == tmp_path / "home" / ".cache" / "segcourse"  # not in Colab
    monkeypatch.setattr(runtime, "in_colab", lambda: True)
    assert runtime.cache_dir() == tmp_path / "home" / ".cache" / "segcourse"  # Drive not mounted
    drive.mkdir(parents=True)
    assert runtime.cache_dir() == drive / "segcourse-cache"
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "mine"))
    assert runtime.cache_dir() == tmp_path / "mine"  # the variable wins


def test_data_sets_are_extracted_to_local_disk_when_the_cache_is_on_drive(monkeypatch, tmp_path):
    monkeypatch.delenv(runtime.CACHE_ENV, raising=False)
    monkeypatch.delenv(runtime.DATA_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    drive = tmp_path / "drive" / "MyDrive"
    monkeypatch.setattr(runtime, "COLAB_DRIVE", drive)
    monkeypatch.setattr(runtime, "COLAB_LOCAL_DATA", tmp_path / "content" / "segcourse-data")
    assert runtime.data_dir() == runtime.cache_dir()  # no Drive: one folder for all
    assert "data sets:" not in runtime.describe()
    monkeypatch.setattr(runtime, "in_colab", lambda: True)
    drive.mkdir(parents=True)
    assert runtime.cache_dir() == drive / "segcourse-cache"
    assert runtime.data_dir() == tmp_path / "content" / "segcourse-data"
    assert runtime.data_dir().is_dir()
    assert f"data sets: {tmp_path / 'content' / 'segcourse-data'}" in runtime.describe()
    monkeypatch.setenv(runtime.CACHE_ENV, str(drive / "elsewhere"))  # still on Drive
    assert runtime.data_dir() == tmp_path / "content" / "segcourse-data"
    monkeypatch.setenv(runtime.DATA_ENV, str(tmp_path / "mine"))
    assert runtime.data_dir() == tmp_path / "mine"  # the variable wins


def test_describe_says_which_mode_and_that_smoke_numbers_mean_nothing(monkeypatch):
    monkeypatch.setenv(runtime.SMOKE_ENV, "1")
    assert "numbers mean nothing" in runtime.describe()
    monkeypatch.setenv(runtime.SMOKE_ENV, "0")
    assert runtime.describe().startswith("full mode")


def test_cache_dir_follows_its_variable_and_is_created(monkeypatch, tmp_path):
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "c"))
    assert runtime.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    assert str(tmp_path / "c") in runtime.describe()


def test_a_home_relative_cache_and_data_folder_are_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(runtime.CACHE_ENV, "~/course-cache")
    monkeypatch.setenv(runtime.DATA_ENV, "~/course-data")
    assert runtime.cache_dir() == tmp_path / "course-cache"
    assert runtime.data_dir() == tmp_path / "course-data"
