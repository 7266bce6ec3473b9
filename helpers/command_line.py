"""Command-line options made from the training configs (the ``python -m`` entry points).

Every field of a config dataclass becomes ``--field-name`` with the field's type and
default, so ``--help`` lists every setting and a new field needs no new code."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing


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


def config_from_args(cls, args: argparse.Namespace, skip: tuple = ()):
    """The ``cls`` instance that the parsed options describe."""
    return cls(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name not in skip}
    )
