"""Argument types of every stage's command line: a bad value is refused, in one line, before anything runs.

Each is an ``argparse`` ``type=``: it returns the parsed value or raises ``ArgumentTypeError``
saying what was expected. The root CLI (``visionrt.runtime.cli``) and every stage's ``cli``
module import them from here. Lists of allowed values (backends, providers, precisions, tasks,
resize policies) live beside the code that accepts them and are passed as ``choices=``.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Callable


def _number(kind: type, what: str, accept: Callable[[Any], bool]) -> Callable[[str], Any]:
    """An argument type: ``text`` as ``kind`` (floats finite) for which ``accept`` holds, else an
    ``ArgumentTypeError`` saying ``expected <what>``."""
    def parse(text: str) -> Any:
        try:
            value = kind(text.strip())
        except (ValueError, TypeError, AttributeError):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r} (not a finite number)")
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


#: Argument type: an integer >= 1 (a count: epochs, batch size, samples, ...).
positive_int = _number(int, "a positive integer", lambda v: v >= 1)
#: Argument type: an integer >= 0 (threads, workers, seeds: 0 often means the default).
non_negative_int = _number(int, "an integer >= 0", lambda v: v >= 0)
#: Argument type: a TCP port, 0..65535 (0: any free port).
port = _number(int, "a port number (0..65535)", lambda v: 0 <= v <= 65535)
#: Argument type: a finite number > 0 (a time in seconds, a size, a factor).
positive_float = _number(float, "a positive number", lambda v: v > 0)
#: Argument type: a finite number >= 0 (a delay that may be zero).
non_negative_float = _number(float, "a number >= 0", lambda v: v >= 0)
#: Argument type: a finite number in [0, 1] (a threshold, a probability, a fraction).
unit_float = _number(float, "a number between 0 and 1", lambda v: 0 <= v <= 1)
#: Argument type: a fraction in [0, 1) (a jitter, a share that must leave something).
fraction = _number(float, "a number in [0, 1)", lambda v: 0 <= v < 1)


def int_list(text: str) -> list[int]:
    """Argument type: comma-separated positive integers."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def name_list(*choices: str) -> Callable[[str], list[str]]:
    """Argument type: comma-separated names, each one of ``choices`` (duplicates dropped, order kept)."""
    def parse(text: str) -> list[str]:
        names = list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
        unknown = [n for n in names if n not in choices]
        if not names or unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(map(repr, unknown)) or 'empty list'}: "
                                             f"choose from {', '.join(choices)} (comma-separated)")
        return names
    return parse


def existing_path(text: str) -> Path:
    """Argument type: a path that exists (file or directory)."""
    path = Path(text)
    try:
        if path.exists():
            return path
    except (OSError, ValueError) as err:  # name too long, NUL in the name
        raise argparse.ArgumentTypeError(f"cannot use {text[:200]!r}: {err}") from None
    raise argparse.ArgumentTypeError(f"{text!r} does not exist")


def existing_dir(text: str) -> Path:
    """Argument type: an existing directory."""
    path = existing_path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return path


def existing_file(text: str) -> Path:
    """Argument type: an existing regular file."""
    path = existing_path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a file")
    return path


def output_dir(text: str) -> Path:
    """Argument type: a directory to write into: it may not exist yet, but must not be a file."""
    path = Path(text)
    try:
        if path.exists() and not path.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r} is a file, expected a directory to write into")
        if any(len(part.encode()) > 255 for part in path.parts):
            raise argparse.ArgumentTypeError(f"{text[:200]!r}: a path component is longer than 255 bytes")
    except (OSError, ValueError) as err:
        raise argparse.ArgumentTypeError(f"cannot use {text[:200]!r}: {err}") from None
    return path
