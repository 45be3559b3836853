"""Errors that cough distinguishes: a bad recording versus a bad job."""

from __future__ import annotations


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
