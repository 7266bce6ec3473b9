"""The two entry points refuse bad settings before any work, naming what is wrong, and
a run folder of one model is never resumed as the other's."""

import pytest
import torch

from helpers.checkpoints import CheckpointError, resume_training, save_training_state
from helpers.detection import train as maskrcnn_cli
from helpers.detection.training import MaskRCNNTrainConfig
from helpers.sam import train as sam_cli
from helpers.sam.training import SamTrainConfig

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


def _state(path, config):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    save_training_state(
        path,
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        scaler=scaler,
        epoch=1,
        config=config,
        history=[{"epoch": 1}],
        best_score=0.0,
    )
    return model, optimizer, scheduler, scaler


def test_a_sam_run_folder_given_to_the_mask_rcnn_trainer_is_called_another_models(tmp_path):
    path = tmp_path / "last.pt"
    parts = _state(path, SamTrainConfig())
    with pytest.raises(CheckpointError, match="another model's run .*SamTrainConfig"):
        resume_training(path, MaskRCNNTrainConfig(), *parts)
    with pytest.raises(CheckpointError, match="other settings"):  # same model, other values
        resume_training(path, SamTrainConfig(epochs=3), *parts)
    assert resume_training(path, SamTrainConfig(), *parts)["epoch"] == 1


def test_the_parser_helpers_refuse_what_they_should(tmp_path):
    import argparse

    from helpers.command_line import check_paths, entry_point_parser, positive_int

    assert positive_int("1") == 1
    for bad in ("0", "-3"):
        with pytest.raises(argparse.ArgumentTypeError, match="at least 1"):
            positive_int(bad)
    parser = entry_point_parser("prog", "a test")
    parser.add_argument("--epochs", type=positive_int)
    with pytest.raises(SystemExit):
        parser.parse_args(["--epoch", "3"])  # no abbreviations
    a_file = tmp_path / "data.txt"
    a_file.write_text("not a folder")
    with pytest.raises(SystemExit):
        check_paths(parser, parser.parse_args(["--data", str(a_file)]))  # a file is no folder
    check_paths(parser, parser.parse_args(["--data", str(tmp_path)]))


def test_mask_rcnn_trains_with_the_configured_optimizer_settings():
    from helpers.detection.training import optimizer_and_schedule

    cfg = MaskRCNNTrainConfig(lr=0.01, momentum=0.8, weight_decay=3e-4, epochs=2)
    model = torch.nn.Linear(3, 2)
    params, optimizer, scheduler = optimizer_and_schedule(model, cfg, total_steps=10)
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"]) == (0.8, 3e-4)
    assert group["initial_lr"] == 0.01 and len(params) == 2
