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


#: What a person reads for the errno codes that most often end a job on a cluster.
ERRNO_MEANING = {"ENOSPC": "disk full", "EDQUOT": "disk quota exceeded", "EACCES": "access denied",
                 "EPERM": "access denied", "EROFS": "read-only file system", "ENOENT": "no such file or folder"}


def plain(text: str) -> str:
    """``text`` without terminal colour codes (Ray colours the names of its tasks).

    >>> plain("\\x1b[36mray::MapBatches(featurize_batch)()\\x1b[39m (pid=1)")
    'ray::MapBatches(featurize_batch)() (pid=1)'
    """
    return _ANSI.sub("", text)


def _is_wrapper(exc: BaseException) -> bool:
    """Whether ``exc`` only carries another error: Ray's task, actor and Ray Data wrappers
    (``RayTaskError(OSError)``, ``UserCodeException``) and Ray Train's failures, found by their
    module (this module imports no Ray)."""
    return type(exc).__module__.split(".")[0] == "ray" or type(exc).__name__.startswith("RayTaskError")


def root_cause(exc: BaseException) -> BaseException:
    """The error that ended a job, out of the Ray wrappers around it: a task's error
    (``RayTaskError.cause``), what a Ray Data function raised (``__cause__``), Ray Train's first
    failed worker (``worker_failures``) or its controller's error. A :class:`CoughError` on the
    way is the answer (it already says what went wrong); anything that is not a Ray wrapper is too.

    >>> root_cause(ValueError("x")).args
    ('x',)
    """
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        if not _is_wrapper(exc):
            return exc
        failures = getattr(exc, "worker_failures", None)
        inner = (next(iter(failures.values()), None) if isinstance(failures, dict) and failures else None) \
            or getattr(exc, "controller_failure", None) or getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            return exc
        exc = inner
    return exc


def describe(exc: BaseException) -> str:
    """One line for the error that ended a job (:func:`root_cause`): a CoughError's own text;
    otherwise the cause's type and first line (a delta-rs chain of causes: all of it, :func:`one_line`), and for an operating
    system error its errno code and what it means (``ENOSPC: disk full``).

    >>> describe(OSError(28, "Error writing bytes to file"))
    'OSError: [Errno 28] Error writing bytes to file (ENOSPC: disk full)'
    >>> describe(CoughError("SOURCE /x does not exist"))
    'SOURCE /x does not exist'
    """
    cause = root_cause(exc)
    lines = [plain(line).strip() for line in str(cause).splitlines() if plain(line).strip()]
    if isinstance(cause, CoughError):
        return lines[0] if lines else ""
    # delta-rs chains its causes over several lines, each after an arrow: all of them
    text = one_line(cause) if "\u21b3" in str(cause) else (lines[0] if lines else "")
    return f"{type(cause).__name__}: {text}{errno_note(cause, text)}"


def errno_note(exc: BaseException, text: str = "") -> str:
    """`` (ENOSPC: disk full)`` for an OSError with an errno that ``text`` does not name yet; ''.

    >>> errno_note(OSError(13, "Permission denied")), errno_note(ValueError())
    (' (EACCES: access denied)', '')
    """
    import errno as codes

    number = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    name = codes.errorcode.get(number) if isinstance(number, int) else None
    if not name or name in text:
        return ""
    meaning = ERRNO_MEANING.get(name)
    return f" ({name}: {meaning})" if meaning else f" ({name})"


def job_error(exc: BaseException) -> BaseException:
    """The error a job reports for ``exc``: a CoughError raised inside a Ray task or actor (e.g.
    a model that fails to load in the inference actors, a shard that cannot be written) as that
    CoughError, out of Ray's wrappers (:func:`root_cause`); anything else unchanged.

    >>> job_error(ValueError("x")).args, str(job_error(CoughError("y")))
    (('x',), 'y')
    """
    cause = root_cause(exc)
    if isinstance(cause, CoughError):
        return cause if not _is_wrapper(cause) else CoughError(plain(str(cause)).splitlines()[0])
    # Ray's ActorDiedError keeps only the text of its creation task's error (traceback included)
    marker = f"{CoughError.__module__}.{CoughError.__name__}: "
    text = plain(str(exc))
    if _is_wrapper(exc) and marker in text:
        return CoughError(text.rsplit(marker, 1)[1].splitlines()[0])
    return exc


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
