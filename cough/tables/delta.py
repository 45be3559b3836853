"""Delta Lake tables through delta-rs: opening one, and committing to it exactly once.

PRED and its file ledger (cough/tables/pred.py, cough/tables/ledger.py) are Delta tables
and commit the same way, :func:`commit`:

* optimistically, against the version just read, with delta-rs' own retries off
  (``max_commit_retries=0``: its retry of an append is a second append);
* with an application transaction ``(app_id, version)`` in the commit, so that a commit
  whose outcome an error hid (the request reached the store, the answer did not) is found in
  the log before anything is written again;
* tried again, up to :data:`COMMIT_ATTEMPTS` times, only when trying again can help: a
  conflict (another writer committed first: ``CommitFailedError``) or a store's transient
  failure (delta-rs raises ``OSError`` for object-store I/O: a 503, a reset connection, a
  timeout), after cough's backoff (cough.tables.storage.backoff). Any other error (a schema
  mismatch, a protocol error, a bug of ours) stops at once.

Each request delta-rs makes is retried by its object_store client (:func:`storage_options`:
``max_retries``, ``retry_timeout``, ``connect_timeout``); a body cut mid-read it does not
retry, so reading a table (:func:`open_table`, and the readers of PRED and the ledger) goes
through cough's :func:`cough.tables.storage.retry` as well.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable, TypeVar

from ..errors import CoughError, StoreError, one_line
from .storage import CONNECT_TIMEOUT_S, REQUEST_ATTEMPTS, Location, backoff, retry

log = logging.getLogger("cough.score")

#: Attempts at one commit when other writers keep committing first, or the store keeps failing.
COMMIT_ATTEMPTS = 5
#: Folder of a Delta table's log.
LOG_DIR = "_delta_log"

T = TypeVar("T")


def storage_options() -> dict:
    """delta-rs reads the AWS_* variables itself; cough sets its object_store client's retries
    (:data:`cough.tables.storage.REQUEST_ATTEMPTS` per request, within a minute) and connect
    timeout, and allows plain-HTTP endpoints (a test server, an on-premises store) explicitly,
    which pyarrow does not need.

    >>> storage_options()["max_retries"], storage_options()["connect_timeout"]
    ('2', '10s')
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    options = {"max_retries": str(REQUEST_ATTEMPTS - 1), "retry_timeout": "60s",
               "connect_timeout": f"{CONNECT_TIMEOUT_S}s"}
    return {**options, "AWS_ALLOW_HTTP": "true"} if endpoint.startswith("http://") else options


def first_line(exc: BaseException) -> str:
    """An error in one line, without delta-rs' colour codes (:func:`cough.errors.one_line`).

    >>> first_line(OSError("Generic S3 error: 503\\nretries exhausted")), first_line(KeyError())
    ('Generic S3 error: 503: retries exhausted', 'KeyError')
    """
    return one_line(exc)


def table_uri(loc: Location) -> str:
    """How delta-rs names the table at ``loc``: a local path, or the store's URI."""
    return loc.path if loc.local else loc.uri


def open_table(loc: Location, *, what: str, version: int | None = None):
    """The DeltaTable at ``loc`` (latest version, or ``version``); None before its first
    commit; a CoughError naming ``what`` when it cannot be read as one."""
    from deltalake import DeltaTable

    if not loc.join(LOG_DIR).exists():
        return None
    try:
        return retry(lambda: DeltaTable(table_uri(loc), version=version, storage_options=storage_options()),
                     what=f"read {what} {loc.uri}")
    except StoreError:
        raise
    except Exception as exc:
        raise CoughError(f"cannot read {what} {loc.uri} as a Delta table: {first_line(exc)}") from None


def retryable(exc: BaseException) -> bool:
    """Whether a failed commit may succeed when tried again (see the module's docstring).

    >>> from deltalake.exceptions import CommitFailedError, SchemaMismatchError
    >>> retryable(CommitFailedError("conflict")), retryable(OSError("503 Slow Down"))
    (True, True)
    >>> retryable(SchemaMismatchError("no such column")), retryable(KeyError("a bug"))
    (False, False)
    """
    from deltalake.exceptions import CommitFailedError

    return isinstance(exc, (CommitFailedError, OSError))


def commit(loc: Location, *, what: str, app_id: str, version: int, write: Callable[..., T],
           landed: Callable[..., T], attempts: int = COMMIT_ATTEMPTS) -> T:
    """Commit once to the Delta table at ``loc`` (``what`` names it in messages): before each
    attempt the table is read again; when it holds the transaction ``(app_id, version)``, the
    commit has landed (perhaps behind an error) and ``landed(table)`` is returned; otherwise
    ``write(table, properties)`` commits (or finds nothing to commit and commits nothing),
    passing ``properties(metadata)`` (deltalake's ``CommitProperties``: the commit's metadata,
    the transaction, no delta-rs retries) on to ``write_deltalake``. ``table`` is None before
    the table's first commit."""
    from deltalake import CommitProperties, Transaction
    from deltalake.exceptions import CommitFailedError

    def properties(metadata: dict | None = None) -> CommitProperties:
        return CommitProperties(custom_metadata=metadata, max_commit_retries=0,
                                app_transactions=[Transaction(app_id, version)])

    error: BaseException | None = None
    for attempt in range(1, attempts + 1):
        table = open_table(loc, what=what)
        if table is not None and (table.transaction_version(app_id) or 0) >= version:
            log.info("commit %d of %s to %s was already made", version, app_id, loc.uri)
            return landed(table)
        try:
            return write(table, properties)
        except Exception as exc:
            if not retryable(exc):
                raise
            error = exc
            if isinstance(exc, CommitFailedError):
                log.info("%s %s changed while %s committed (attempt %d): reloading", what, loc.uri, app_id, attempt)
            else:
                log.warning("committing %s to %s failed (%s): checking the log", app_id, loc.uri, first_line(exc))
                if attempt < attempts:
                    time.sleep(backoff(attempt))
    assert error is not None
    raise CoughError(f"cannot commit to {what} {loc.uri} after {attempts} attempts: {first_line(error)}")
