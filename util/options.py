"""Command-line options generated from typed dataclasses: one entry per option.

A dataclass field becomes a command-line option when its metadata holds ``help``:

    seed: int = option(3407, help="seed, reset for every pair (default 3407)")

Metadata keys (all optional but ``help``): ``choices``, ``flag`` (the option's name when it
differs from the field's, without ``--``), ``aliases`` (older names still accepted), ``group``
(which argument group lists it), ``const`` (the value of the bare flag given without one),
``parse`` (the
argparse ``type`` when the field's type is not enough) and ``metavar`` (default: the flag
in capitals). The type, the default and
a ``store_true`` switch for a bool come from the field itself. :func:`given_values` reads back the
values that were given.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import MISSING, Field
from typing import Any, Iterable, Mapping, Optional


def option(default: Any = MISSING, *, help: Optional[str] = None, **meta) -> Any:
    """A dataclass field with metadata; with ``help`` also a command-line option (see the module
    docstring). Other keys (``rule``, ``yaml_key``, ``api_name``) are read by the config module."""
    return dataclasses.field(default=default, metadata=({"help": help} if help else {}) | meta)


def cli_fields(cls) -> list[Field]:
    """The fields of ``cls`` that are command-line options, in declaration order."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def flag_of(f: Field) -> str:
    return "--" + f.metadata.get("flag", f.name)


def flag_names(cls) -> dict[str, str]:
    """field name -> option name, for messages that name an option as the user wrote it."""
    return {f.name: flag_of(f) for f in cli_fields(cls)}


def _plain_type(tp):
    """int for int / Optional[int]; None when the type is a union of several (then ``parse``)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Union:
        return args[0] if len(args) == 1 else None
    return tp


def add_options(parser: argparse.ArgumentParser, cls, groups: Mapping[str, Any],
                default_group: Optional[str] = None, only: Optional[Iterable[str]] = None) -> None:
    """Add every option field of ``cls`` to ``groups[field's group or default_group]``
    (argument groups of ``parser``; ``parser`` itself when the group is missing). Every option
    defaults to None, "not given": the field's default, a config file or a preset fills it, and
    its rule is checked once, with the other doors' (see :func:`given_values`). ``only``: just
    the options of these names."""
    hints = typing.get_type_hints(cls)
    for f in cli_fields(cls):
        if only is not None and f.name not in only:
            continue
        meta = f.metadata
        target = groups.get(meta.get("group", default_group), parser)
        kwargs: dict = {"dest": f.name, "default": None, "help": meta["help"]}
        tp = _plain_type(hints[f.name])
        if tp is bool:
            kwargs["action"] = "store_true"
        else:
            parse = meta.get("parse", tp if tp in (int, float) else None)
            if parse is not None:
                kwargs["type"] = parse
            if "const" in meta:
                kwargs.update(nargs="?", const=meta["const"])
            if "choices" in meta:  # listed in the help; checked with every other rule, after parsing
                kwargs["metavar"] = "{" + ",".join(meta["choices"]) + "}"
            elif "metavar" in meta or "flag" in meta:
                kwargs["metavar"] = meta.get("metavar", meta.get("flag", "").upper())
        target.add_argument(flag_of(f), *meta.get("aliases", ()), **kwargs)


def given_values(classes: Iterable, args: argparse.Namespace) -> dict:
    """The options given on the command line: {field name: value} of every option of
    ``classes`` that ``args`` holds a value for."""
    return {f.name: getattr(args, f.name) for cls in classes for f in cli_fields(cls)
            if getattr(args, f.name, None) is not None}


def option_flags(classes: Iterable) -> list[str]:
    """Every option name of ``classes``, in order (for help texts that list them)."""
    return [flag_of(f) for cls in classes for f in cli_fields(cls)]
