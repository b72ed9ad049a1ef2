"""Command-line flags made from config dataclasses, so a field and its flag cannot drift apart.

A field's metadata (see `tessera.training.config.arg`) gives its help text and, where
needed, another flag name, older spellings, a parser for tuples and units, and choices.
Flags default to "not given", so a caller can layer dataclass defaults, a recipe, and
then only the flags the user typed.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

from tessera.errors import InputError


def _scalar_type(hint) -> type:
    """int / float / str / bool from a field's type hint (`X | None` counts as X)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint not in (int, float, str, bool):
        raise TypeError(f"field type {hint} needs a `parse` function in its metadata to become a flag")
    return hint


def _reporting(parse):
    """`parse` with its own one-line message in argparse's error (not "invalid value")."""

    def typed(text: str):
        try:
            return parse(text)
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    typed.__name__ = parse.__name__
    return typed


def add_config_flags(parser, cls, section: str, prefix: str = "") -> None:
    """One flag per field of the dataclass `cls`: `--{prefix}{name}`, its value stored as `{section}.{name}`."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        names = [meta.get("flag") or f"--{prefix}{f.name.replace('_', '-')}", *meta.get("aliases", ())]
        text = meta.get("help", "")
        if "default" not in text and f.default not in ("", None, ()):
            text += f" (default: {f.default})"
        kw: dict = {"dest": f"{section}.{f.name}", "default": argparse.SUPPRESS, "help": text.replace("%", "%%")}
        metavar = (meta["flag"].split("-")[-1] if meta.get("flag") else f.name).upper()
        if meta.get("parse"):
            kw["type"], kw["metavar"] = _reporting(meta["parse"]), metavar
        elif _scalar_type(hints[f.name]) is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"], kw["metavar"] = _scalar_type(hints[f.name]), metavar
        if meta.get("choices"):
            kw["choices"] = meta["choices"]
        parser.add_argument(*names, **kw)


def given(args: argparse.Namespace, section: str) -> dict:
    """The fields of `section` whose flags were given on the command line."""
    return {k.split(".", 1)[1]: v for k, v in vars(args).items() if k.startswith(section + ".")}
