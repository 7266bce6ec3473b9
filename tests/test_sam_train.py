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


def test_every_option_set_at_once_is_the_run_that_trains(tmp_path):
    """Every SamTrainConfig option away from its default reaches the run itself: the
    config that last.pt records (and that a resume checks) is the one asked for."""
    import dataclasses

    from test_command_line import _argv, _other_value

    from helpers.checkpoints import read_checkpoint
    from helpers.sam.training import SamTrainConfig

    wanted = {}
    argv = ["--out", str(tmp_path / "run"), "--train-images", "2", "--val-images", "1"]
    argv += ["--until-epoch", "1", "--embeddings", str(tmp_path / "emb")]
    for f in dataclasses.fields(SamTrainConfig):
        if f.name in sam_cli.SKIP:
            continue
        value = _other_value(f.name, getattr(SamTrainConfig(), f.name))
        wanted[f.name] = value
        argv += _argv(f.name, value)
    wanted.update(click_rounds=1, refine_rounds=1)  # a quick run: the last option wins
    argv += ["--click-rounds", "1", "--refine-rounds", "1"]
    sam_cli.main(argv)
    saved = read_checkpoint(tmp_path / "run" / "last.pt")["config"]
    assert {k: saved[k] for k in wanted} == wanted
