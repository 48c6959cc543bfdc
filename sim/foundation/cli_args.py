"""argparse value types shared by every ``clearsim`` subcommand: a bad value becomes argparse's
one-line usage error (exit 2) naming the option; :class:`Parser`, the parser class of every
``clearsim`` (sub)command, makes any usage mistake that one line."""

from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _number(text: str, kind):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None


def positive_int(text: str) -> int:
    v = _number(text, int)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return v


def positive_float(text: str) -> float:
    v = _number(text, float)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return v


def non_negative_int(text: str) -> int:
    v = _number(text, int)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return v


def comma_list(kind):
    """``"128,256,512"`` -> ``[128, 256, 512]`` (``kind`` converts each item)."""
    def conv(text: str):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list")
        try:
            return [kind(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers") from None
    return conv
