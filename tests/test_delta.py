"""The one Delta commit path of PRED and the ledger (cough.tables.delta.commit): what it tries
again, what it never tries again, and how it tells a commit that landed behind an error from
one that did not. Real delta-rs commits on a local table; the failures are raised by the
``write`` the helper is given, around a real write."""

from __future__ import annotations

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, SchemaMismatchError

from cough.errors import CoughError
from cough.tables import delta
from cough.tables.storage import Location

ROWS = pa.table({"path": ["a", "b"], "n": [1, 2]})


def _writer(loc, failures: list, calls: list, *, fail_after_write: bool = False):
    """A ``write`` that raises the next of ``failures`` (before writing, or after when
    ``fail_after_write``: an outcome hidden by an error), then writes for real."""

    def write(table, properties):
        calls.append(table.version() if table is not None else None)
        error = failures.pop(0) if failures else None
        if error is not None and not fail_after_write:
            raise error
        write_deltalake(table if table is not None else delta.table_uri(loc), ROWS, mode="append",
                        commit_properties=properties())
        if error is not None:
            raise error
        return "written"

    return write


def _commit(loc, write, **kwargs):
    return delta.commit(loc, what="the test table", app_id="cough-test-run1", version=1, write=write,
                        landed=lambda table: "landed", **kwargs)


def test_a_conflict_and_a_transient_store_error_are_tried_again(tmp_path):
    loc, calls = Location.of(str(tmp_path / "t")), []
    write = _writer(loc, [CommitFailedError("another writer committed first"), OSError("503 Slow Down")], calls)
    assert _commit(loc, write) == "written"
    assert len(calls) == 3
    assert DeltaTable(str(tmp_path / "t")).to_pyarrow_table().num_rows == 2


def test_an_error_that_is_not_transient_is_raised_at_once(tmp_path):
    """A schema mismatch, or a bug of ours, is not tried again (it was, five times, before)."""
    for error in (SchemaMismatchError("no such column"), KeyError("a bug")):
        loc, calls = Location.of(str(tmp_path / type(error).__name__)), []
        with pytest.raises(type(error)):
            _commit(loc, _writer(loc, [error], calls))
        assert len(calls) == 1


def test_a_commit_that_landed_behind_an_error_is_found_not_written_twice(tmp_path):
    """The store committed, the answer was lost: the next attempt finds the transaction."""
    loc, calls = Location.of(str(tmp_path / "t")), []
    assert _commit(loc, _writer(loc, [OSError("connection reset")], calls, fail_after_write=True)) == "landed"
    assert len(calls) == 1
    table = DeltaTable(str(tmp_path / "t"))
    assert table.to_pyarrow_table().num_rows == 2 and table.version() == 0
    assert table.transaction_version("cough-test-run1") == 1


def test_attempts_are_bounded_and_the_error_names_the_table_and_cause(tmp_path):
    loc, calls = Location.of(str(tmp_path / "t")), []
    with pytest.raises(CoughError, match=r"cannot commit to the test table .* after 3 attempts: 503 Slow Down"):
        _commit(loc, _writer(loc, [OSError("503 Slow Down")] * 3, calls), attempts=3)
    assert len(calls) == 3 and not (tmp_path / "t" / "_delta_log").exists()
