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
