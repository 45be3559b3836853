"""Errors that cough distinguishes: a bad recording versus a bad job."""


class CoughError(Exception):
    """A problem with the job itself (bad flags, missing SOURCE, unreadable labels).

    The CLI prints it as one line on stderr and exits with ``exit_code``.
    """

    exit_code = 1


class UsageError(CoughError):
    """The command line itself is wrong; exit code 2."""

    exit_code = 2


class RecordingError(Exception):
    """A single recording cannot be processed; it becomes an ``error`` row, the job goes on."""
