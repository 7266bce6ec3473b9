"""helpers.command_line: options made from the config classes, and what they refuse."""

import pytest


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


def _other_value(name, default):
    """A valid value of field ``name`` that is not its default."""
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default * 2 if default else 0.25
    if name == "recipe":
        return "seed" if default == "sam" else "sam"
    if default is None:  # an int | None field (num_workers)
        return 3
    raise AssertionError(f"no other value known for {name}={default!r}")


def _argv(name, value):
    option = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [option if value else "--no-" + option[2:]]
    return [option, str(value)]


def _entry_points():
    from helpers.detection import train as maskrcnn_cli
    from helpers.detection.training import MaskRCNNTrainConfig
    from helpers.sam import train as sam_cli
    from helpers.sam.training import SamTrainConfig

    return {
        "sam": (sam_cli.parser, SamTrainConfig, sam_cli.SKIP),
        "maskrcnn": (maskrcnn_cli.parser, MaskRCNNTrainConfig, ()),
    }


@pytest.mark.parametrize("job", ["sam", "maskrcnn"])
def test_every_config_field_is_an_option_that_reaches_the_config_both_ways(job):
    """Each field of each entry point's config: absent, the default; set, that value and
    nothing else changed; set and then set back, the default again (the last wins)."""
    import dataclasses

    from helpers.command_line import config_from_args

    make_parser, cls, skip = _entry_points()[job]
    parser = make_parser()
    base = config_from_args(cls, parser.parse_args([]), skip)
    assert base == cls()
    for f in dataclasses.fields(cls):
        option = "--" + f.name.replace("_", "-")
        if f.name in skip:
            assert option not in parser.format_help(), f"{option} is documented but skipped"
            continue
        default = getattr(base, f.name)
        value = _other_value(f.name, default)
        cfg = config_from_args(cls, parser.parse_args(_argv(f.name, value)), skip)
        assert getattr(cfg, f.name) == value, option
        changed = [
            g.name for g in dataclasses.fields(cls) if getattr(cfg, g.name) != getattr(base, g.name)
        ]
        assert changed == [f.name], f"{option} changed {changed}"
        if default is not None:
            argv = _argv(f.name, value) + _argv(f.name, default)
            assert getattr(config_from_args(cls, parser.parse_args(argv), skip), f.name) == default
