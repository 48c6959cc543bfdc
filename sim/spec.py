"""Declarative checking of YAML mappings: one place that turns typos and bad values into
precise, one-line :class:`~sim.errors.UserError` messages.

A spec maps each allowed key to a :class:`Field`; :func:`check` returns a dict with defaults
filled in, or raises naming the file, the dotted field and what is allowed (a mistyped key
gets a "did you mean" suggestion).  Scenarios and policy parameters both use it, so every
field of every experiment is validated the same way.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from sim.errors import UserError

REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """One allowed key: its type(s), default, constraint and a short description for help."""

    types: tuple
    default: Any = REQUIRED
    doc: str = ""
    choices: tuple | None = None
    check: Callable[[Any], str | None] | None = None  # returns an error text or None
    nullable: bool = False

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
                 list: "a list", dict: "a mapping"}
        return " or ".join(names.get(t, t.__name__) for t in self.types)


def positive(v) -> str | None:
    return None if v > 0 else "must be > 0"


def non_negative(v) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _type_ok(value, types: tuple) -> bool:
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


def check_value(value, fld: Field, *, where: str | None, path: str):
    if value is None and fld.nullable:
        return None
    if not _type_ok(value, fld.types):
        raise UserError(f"got {value!r}; expected {fld.describe()}", where=where, field=path)
    if fld.choices is not None and value not in fld.choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in fld.choices], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(
            f"got {value!r}; expected one of {', '.join(map(str, fld.choices))}{hint}",
            where=where,
            field=path,
        )
    if float in fld.types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value) if int not in fld.types else value
    if fld.check is not None:
        msg = fld.check(value)
        if msg:
            raise UserError(f"got {value!r}; {msg}", where=where, field=path)
    return value


def check(data, spec: dict[str, Field], *, where: str | None, path: str = "") -> dict:
    """Validate mapping ``data`` against ``spec``; return it with defaults filled in."""
    prefix = f"{path}." if path else ""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(
            f"got {data!r}; expected a mapping with keys {', '.join(spec)}",
            where=where,
            field=path or None,
        )
    for key in data:
        if key not in spec:
            close = difflib.get_close_matches(str(key), list(spec), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UserError(
                f"unknown field; {hint}allowed: {', '.join(spec)}",
                where=where,
                field=f"{prefix}{key}",
            )
    out = {}
    for key, fld in spec.items():
        if key not in data:
            if fld.default is REQUIRED:
                raise UserError(f"missing; expected {fld.describe()}", where=where, field=f"{prefix}{key}")
            out[key] = fld.default
            continue
        out[key] = check_value(data[key], fld, where=where, path=f"{prefix}{key}")
    return out


def read_yaml(path: Path, what: str) -> dict:
    """A YAML file that must hold a mapping; bad YAML names the file and line."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise UserError(f"not valid YAML ({getattr(exc, 'problem', exc)})", where=f"{path}{line}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read ({exc.__class__.__name__})", where=str(path)) from None
    if not isinstance(data, dict):
        raise UserError(f"expected a mapping of {what} fields", where=str(path))
    return data
