"""Declarative checking of YAML mappings: one place that turns typos and bad values into
precise, one-line :class:`~sim.foundation.errors.UserError` messages.

A spec maps each allowed key to a :class:`Field`; :func:`check` returns a dict with defaults
filled in, or raises naming the file, the dotted field and what is allowed (a mistyped key
gets a "did you mean" suggestion).  Scenarios and policy parameters both use it, so every
field of every experiment is validated the same way.
"""

from __future__ import annotations

import difflib
import math
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from sim.foundation.errors import UserError

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
    max: float | None = None  # run-away guard: largest allowed number (default MAX_NUMBER)
    min: float | None = None  # smallest allowed number, beyond the ``check``

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
                 list: "a list", dict: "a mapping"}
        return " or ".join(names.get(t, t.__name__) for t in self.types)


MAX_NUMBER = 1e12  # no number field accepts more (or inf/NaN) unless its Field says otherwise
MAX_YAML_NODES = 100_000  # a YAML file may expand (via aliases) to at most this many values

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6
_REPR.maxlevel = 3


def short(value) -> str:
    """``repr(value)`` cut short: error messages never echo a 1 MB string or expand a deeply
    nested (aliased) structure."""
    return _REPR.repr(value)


def _number_problem(value, fld: "Field") -> str | None:
    """NaN, infinities and absurd magnitudes parse fine but make no sense anywhere."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    hi = MAX_NUMBER if fld.max is None else fld.max
    if value > hi:
        return f"must be <= {hi:g} (run-away guard)"
    if value < -MAX_NUMBER:
        return f"must be >= {-MAX_NUMBER:g}"
    if fld.min is not None and value < fld.min:
        return f"must be >= {fld.min:g}"
    return None


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
        raise UserError(f"got {short(value)}; expected {fld.describe()}", where=where, field=path)
    if fld.choices is not None and value not in fld.choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in fld.choices], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(
            f"got {short(value)}; expected one of {', '.join(map(str, fld.choices))}{hint}",
            where=where,
            field=path,
        )
    if float in fld.types and isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > MAX_NUMBER:  # before float(): 10**400 would overflow
            raise UserError(f"got {short(value)}; must be <= {MAX_NUMBER:g} in size", where=where,
                            field=path)
        value = float(value) if int not in fld.types else value
    if fld.check is not None:
        msg = fld.check(value)
        if msg:
            raise UserError(f"got {short(value)}; {msg}", where=where, field=path)
    problem = _number_problem(value, fld)
    if problem:
        raise UserError(f"got {short(value)}; {problem}", where=where, field=path)
    return value


def check(data, spec: dict[str, Field], *, where: str | None, path: str = "") -> dict:
    """Validate mapping ``data`` against ``spec``; return it with defaults filled in."""
    prefix = f"{path}." if path else ""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(
            f"got {short(data)}; expected a mapping with keys {', '.join(spec)}",
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


class _Loader(yaml.SafeLoader):
    """yaml's safe loader, refusing documents whose aliases expand beyond MAX_YAML_NODES
    values (a "billion laughs" file expands to gigabytes from a few hundred bytes)."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            memo: dict[int, int] = {}

            def size(n) -> int:  # expanded value count; shared (aliased) nodes counted each use
                if id(n) in memo:
                    return memo[id(n)]
                memo[id(n)] = 1  # cycles (recursive aliases) count once
                if isinstance(n, yaml.SequenceNode):
                    total = 1 + sum(size(c) for c in n.value)
                elif isinstance(n, yaml.MappingNode):
                    total = 1 + sum(size(k) + size(v) for k, v in n.value)
                else:
                    total = 1
                memo[id(n)] = total
                return total

            if size(node) > MAX_YAML_NODES:
                raise yaml.YAMLError(f"aliases (*name) expand to more than {MAX_YAML_NODES:,} "
                                     "values; write the values out")
        return node


def safe_load(text: str):
    """The one YAML reader: ``yaml.safe_load`` with a limit on aliases."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: Path, what: str) -> dict:
    """A YAML file that must hold a mapping; bad YAML names the file and line."""
    try:
        data = safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise UserError(f"not valid YAML ({getattr(exc, 'problem', exc)})", where=f"{path}{line}") from None
    except RecursionError:
        raise UserError("not valid YAML (nested too deeply)", where=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read ({exc.__class__.__name__})", where=str(path)) from None
    if not isinstance(data, dict):
        raise UserError(f"expected a mapping of {what} fields", where=str(path))
    return data
