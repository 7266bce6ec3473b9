"""Command-line options made from the training configs (the ``python -m`` entry points):
every field of a config dataclass becomes ``--field-name`` with its type and default, so
``--help`` lists every setting and a new field needs no new code.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path


def entry_point_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser for a course entry point: no abbreviated options (``--epoch 3`` is an
    error, not ``--epochs 3``), and the options both jobs share."""
    p = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False)
    p.add_argument("--out", default=None, help="run folder (default: the cache's runs/)")
    p.add_argument(
        "--data", default=None, help="the data set's folder (default: downloaded on first use)"
    )
    p.add_argument("--train-images", type=positive_int, default=None, help="the first N only")
    p.add_argument("--until-epoch", type=positive_int, default=None, help="stop after it")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing last.pt")
    p.add_argument("--device", default=None, help="cpu to stay on the CPU (default: the GPU)")
    p.add_argument(
        "--dist-timeout",
        type=float,
        default=None,
        help="under torchrun: seconds a process waits for the others in a collective before "
        "the job stops with an error naming it (default: SEGCOURSE_DIST_TIMEOUT or 600)",
    )
    return p


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def check_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, before any work, an ``--out`` that is a file and a ``--data`` that is not
    a folder (argparse's error: the usage line, the message, exit code 2)."""
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out}: is a file; a run folder is expected")
    if args.data is not None and not Path(args.data).is_dir():
        parser.error(f"--data {args.data}: no such folder")


def add_config_arguments(parser: argparse.ArgumentParser, cls, skip: tuple = ()) -> None:
    """One option per field of dataclass ``cls`` (bool: ``--x`` / ``--no-x``)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} (training settings)")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        name = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = hints[f.name]
        if kind is bool:
            group.add_argument(
                name,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=f"(default {default})",
            )
            continue
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        group.add_argument(name, type=kind, default=default, help=f"(default {default})")


def config_from_args(
    cls, args: argparse.Namespace, skip: tuple = (), parser: argparse.ArgumentParser | None = None
):
    """The ``cls`` instance that the parsed options describe. A setting the config
    refuses (its ``__post_init__`` raises ``ValueError``) is the parser's error when
    ``parser`` is given."""
    try:
        return cls(
            **{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name not in skip}
        )
    except ValueError as err:
        if parser is None:
            raise
        parser.error(str(err))
