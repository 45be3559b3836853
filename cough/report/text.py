"""Numbers and counts as the report writes them for people (None as a dash).

>>> count(1, "participant"), num(0.8123), pct(0.5), ci([0.61, 0.8]), ci(None)
('1 participant', '0.81', '50.0%', '0.61 to 0.80', 'not computable')
"""

from __future__ import annotations


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def num(x, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def ci(interval, pct: bool = False) -> str:
    """A 95% interval as ``low to high`` (as percentages when ``pct``)."""
    if not interval:
        return "not computable"
    f = percent if pct else num
    return f"{f(interval[0])} to {f(interval[1])}"


percent = pct  # ci's keyword ``pct`` hides the function inside it
