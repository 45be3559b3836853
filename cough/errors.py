"""Errors that cough distinguishes: a bad recording versus a bad job, and a store that kept
failing (transient)."""

from __future__ import annotations

import re

#: ANSI colour and cursor codes (delta-rs colours its error chains).
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class CoughError(Exception):
    """A problem with the job itself (bad flags, missing SOURCE, unreadable labels).

    The CLI prints it as one line on stderr and exits with :attr:`exit_code`; with
    ``--json``, stdout carries ``summary`` (what the job did before it failed) beside the
    error. ``prog`` and ``usage`` are the command line's name and usage lines, for an error
    found while parsing it.

    >>> error = CoughError("3 of 4 recordings failed", summary={"scored": 4})
    >>> error.exit_code, error.summary, str(error)
    (1, {'scored': 4}, '3 of 4 recordings failed')
    """

    exit_code = 1

    def __init__(self, message: str, *, summary: dict | None = None, prog: str | None = None,
                 usage: str | None = None):
        super().__init__(message)
        self.summary = summary or {}
        self.prog = prog
        self.usage = usage


class UsageError(CoughError):
    """The command line itself is wrong; exit code 2."""

    exit_code = 2


class RecordingError(Exception):
    """A single recording cannot be processed; it becomes an ``error`` row, the job goes on."""


class StoreError(CoughError):
    """An object store kept failing one operation through every retry (503 SlowDown, 500, a
    reset or dropped connection, an answer cut short, a timeout): transient, not bad input
    (cough.tables.storage.retry). A job stops with it (exit 1); a recording that cannot be
    read becomes an ``error`` row that the next run reads again (cough.tables.listing)."""


def one_line(exc: BaseException, *, limit: int = 400) -> str:
    """An error's text as one line without colour codes: its lines joined (delta-rs prints a
    chain of causes, one per line, each after a coloured arrow), at most ``limit`` characters.

    >>> one_line(OSError("Kernel error -> Generic S3 error\\n  \\x1b[31m\u21b3\\x1b[0m 503 Service Unavailable"))
    'Kernel error -> Generic S3 error: 503 Service Unavailable'
    >>> one_line(KeyError())
    'KeyError'
    """
    text = _ANSI.sub("", str(exc))
    parts = [p.strip(" \t\u21b3") for p in text.splitlines()]
    line = ": ".join(p for p in parts if p) or type(exc).__name__
    line = re.sub(r"\s+", " ", line)
    return line if len(line) <= limit else line[: limit - 3] + "..."
