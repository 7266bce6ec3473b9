"""python -m helpers.sam.train: its options and what it refuses before any work."""

import pytest

from helpers.detection import train as maskrcnn_cli
from helpers.sam import train as sam_cli

CLIS = {"sam": sam_cli.main, "maskrcnn": maskrcnn_cli.main}


def _refused(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2  # argparse's usage error, not a crash or a success
    return capsys.readouterr().err


@pytest.mark.parametrize("cli", CLIS)
@pytest.mark.parametrize(
    "argv, says",
    [
        (["--epoch", "3"], "unrecognized arguments: --epoch"),  # no abbreviations
        (["--epochs", "-1"], "epochs must be at least 1"),
        (["--epochs", "0"], "epochs must be at least 1"),
        (["--lr", "0"], "lr must be > 0"),
        (["--train-images", "0"], "must be at least 1"),
        (["--until-epoch", "-2"], "must be at least 1"),
        (["--data", "/no/such/folder"], "--data /no/such/folder: no such folder"),
    ],
)
def test_bad_settings_are_refused_by_name(cli, argv, says, capsys):
    assert says in _refused(CLIS[cli], argv, capsys)


@pytest.mark.parametrize("cli", CLIS)
def test_an_output_path_that_is_a_file_is_refused(cli, tmp_path, capsys):
    path = tmp_path / "run"
    path.write_text("a file")
    assert f"--out {path}: is a file" in _refused(CLIS[cli], ["--out", str(path)], capsys)


def test_batch_sizes_of_zero_are_refused(capsys):
    assert "batch_images must be at least 1" in _refused(
        sam_cli.main, ["--batch-images", "0"], capsys
    )
    assert "batch_size must be at least 1" in _refused(
        maskrcnn_cli.main, ["--batch-size", "0"], capsys
    )


def test_a_step_that_does_not_divide_among_the_processes_is_refused_before_any_work(
    monkeypatch, capsys
):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it
    err = _refused(sam_cli.main, ["--batch-images", "3"], capsys)
    assert "--batch-images 3 is not divisible by the 2 processes" in err
