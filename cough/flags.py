"""argparse types for numeric flags: a value out of range is a usage error (exit 2) that
says the flag's range in its own terms, before Ray or anything else starts.

>>> import argparse
>>> p = argparse.ArgumentParser()
>>> _ = p.add_argument("--actors", type=integer(at_least=1))
>>> p.parse_args(["--actors", "2"]).actors
2
>>> integer(at_least=1)("0")   # argparse reports it as "argument --actors: must be ..." and exits 2
Traceback (most recent call last):
argparse.ArgumentTypeError: must be at least 1, not 0
"""

from __future__ import annotations

import argparse
import math
from typing import Callable


def integer(*, at_least: int | None = None, at_most: int | None = None) -> Callable[[str], int]:
    """A whole number in ``[at_least, at_most]`` (either bound may be open-ended)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
        _check(value, text, at_least=at_least, at_most=at_most)
        return value

    parse.__name__ = "integer"
    return parse


def number(*, at_least: float | None = None, above: float | None = None, at_most: float | None = None,
           below: float | None = None, unit: str = "") -> Callable[[str], float]:
    """A finite number within the given bounds (``at_least``/``at_most`` inclusive,
    ``above``/``below`` exclusive); NaN and infinity are refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
        _check(value, text, at_least=at_least, above=above, at_most=at_most, below=below, unit=unit)
        return value

    parse.__name__ = "number"
    return parse


def _check(value, text: str, *, at_least=None, above=None, at_most=None, below=None, unit: str = "") -> None:
    low_ok = (at_least is None or value >= at_least) and (above is None or value > above)
    high_ok = (at_most is None or value <= at_most) and (below is None or value < below)
    if not (low_ok and high_ok):
        raise argparse.ArgumentTypeError(f"must be {_range(at_least, above, at_most, below)}"
                                         f"{' ' + unit if unit else ''}, not {text}")


def _range(at_least, above, at_most, below) -> str:
    low = f"at least {at_least:g}" if at_least is not None else f"above {above:g}" if above is not None else ""
    high = f"at most {at_most:g}" if at_most is not None else f"below {below:g}" if below is not None else ""
    if at_least is not None and at_most is not None:
        return f"between {at_least:g} and {at_most:g}"
    return " and ".join(part for part in (low, high) if part)
