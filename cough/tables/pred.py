"""PRED, the predictions table of ``cough score``: a Delta Lake table (delta-rs, ``deltalake``).

::

    PRED/.cough-output.json    owner marker (written first: PRED belongs to `cough score`)
    PRED/_delta_log/           the table's log: one commit per chunk of a scoring run
    PRED/part-*.parquet        data files; read them through Delta (files of a run that died
                               before its commit, or of rows a --rescore replaced, lie beside them)
    PRED/_ledger/              the file ledger, a Delta table of its own (cough/tables/ledger.py)
    PRED/_reports/<run_id>/    reports of `cough nightly` (Delta and Parquet readers skip `_` names)

A run's rows land in one Delta commit per chunk of ``--commit-every`` recordings
(:meth:`RunWriter.commit`; a run of fewer recordings commits once), each carrying

* an application transaction ``cough-score-<run_id>`` whose version is the chunk's number: a
  commit retried after an error that hid its success finds its own transaction in the log
  and does nothing;
* the run record (:class:`cough.tables.artifacts.RunRecord`: the night's counts, absolute MODEL and
  SOURCE URIs, ...) with the chunk's counts, in the commit's metadata under ``cough.run``
  (:func:`committed_runs` reads them back, one record per run).

Commits are optimistic (:func:`cough.tables.delta.commit`): a run commits against the table
version it read, with no automatic retry by delta-rs (Delta's log entry is a put-if-absent on
every store). When another run committed first, this one reloads PRED, drops the rows that
run already added for the same model version (:mod:`cough.tables.scored`), and commits the
rest: two runs at once leave every recording exactly once. ``--rescore`` replaces the model
version's rows in its first chunk's commit. A chunk holding a file whose row is a transient
error (the store kept failing to give it: cough.tables.listing.UNREAD) replaces that row in
the same commit (a Delta replaceWhere that deletes those rows and adds the chunk), so a file read
again after a store failure still has one row. See docs/score.md and docs/storage.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..errors import CoughError, UsageError
from . import delta
from .artifacts import RunRecord
from .delta import LOG_DIR
from .scored import NOTHING_SCORED, Scored, scored_keys
from .storage import Location, Output, claim, read_owner

log = logging.getLogger("cough.score")

KIND = "score"
#: Key of the run record in each commit's metadata.
RUN_KEY = "cough.run"
#: Recordings per commit (``--commit-every``): a driver lost mid-run redoes at most this many.
COMMIT_EVERY = 10_000


# ------------------------------------------------------------------------- the table

@dataclass(frozen=True)
class Pred:
    """PRED's location and how delta-rs reaches it."""

    loc: Location

    @property
    def table_uri(self) -> str:
        return delta.table_uri(self.loc)

    def table(self, version: int | None = None):
        """The DeltaTable (latest version, or ``version``); None before the first commit."""
        return delta.open_table(self.loc, what="PRED", version=version)


def v01_message(loc: Location) -> str:
    return (f"PRED {loc.uri} was written by cough 0.1 (run-* folders); this cough keeps PRED as a Delta table. "
            f"Convert it into a new location, then use that one: python -c \"from cough.tables.pred_v01 import convert_v01; "
            f"convert_v01('{loc.uri}', 'NEW_PRED')\"")


def is_v01(loc: Location) -> bool:
    """A cough 0.1 PRED: ``_runs/`` and ``run-*`` folders, no Delta log."""
    names = {PurePosixPath(e.path).name for e in loc.listdir()}
    return LOG_DIR not in names and ("_runs" in names or any(n.startswith("run-") for n in names))


def claim_pred(out, *, inputs: dict | None = None) -> "tuple[Pred, Output]":
    """Check PRED before any work: ``(Pred, Output)``, or a UsageError (exit 2) naming what is
    there (another job's files, a cough 0.1 PRED with how to convert it)."""
    loc = Location.of(out)
    if loc.is_dir() and is_v01(loc):
        raise UsageError(v01_message(loc))
    output = claim(loc, KIND, flag="--out", inputs=inputs, extends=True)
    return Pred(output.loc), output


def open_pred(pred, *, what: str = "PRED") -> Pred:
    """A PRED to read (report, nightly): refuses what is not one, and 0.1 PREDs with how to convert."""
    loc = Location.of(pred)
    found = loc.info().type
    if found != pafs.FileType.Directory:
        raise CoughError(f"{what} {loc.uri} {'does not exist' if found == pafs.FileType.NotFound else 'is a file'}: "
                         "give the --out of `cough score`")
    if is_v01(loc):
        raise CoughError(v01_message(loc))
    owner = read_owner(loc) or {}
    if owner.get("kind") != KIND and not loc.join(LOG_DIR).is_dir():
        what_is_there = f"the output of `cough {owner['kind']}`" if owner.get("kind") else "no Delta log"
        raise CoughError(f"{what} {loc.uri} is not a PRED table ({what_is_there}): give the --out of `cough score`")
    return Pred(loc)


def committed_runs(pred: Pred, table=None) -> list[RunRecord]:
    """The run records of PRED's commits, oldest first, one per run: a run committed in
    chunks has its chunks' :attr:`RunRecord.CHUNK_COUNTS` summed (:meth:`RunRecord.after`; rows of
    runs a --rescore replaced are gone from the table; their records stay in the log's
    history). A record that is not a :class:`RunRecord` is refused by name."""
    from .storage import retry

    table = table if table is not None else pred.table()
    if table is None:
        return []
    runs: dict[str | None, RunRecord] = {}
    for commit in reversed(retry(table.history, what=f"read the log of PRED {pred.loc.uri}", where=pred.loc)):
        data = commit.get(RUN_KEY)
        if not isinstance(data, dict):
            continue
        record = RunRecord.from_dict(data, where=f"PRED {pred.loc.uri}: the run record of version {commit.get('version')}")
        runs[record.run_id] = record.after(runs.get(record.run_id))
    return list(runs.values())


# ------------------------------------------------------------------------- writing

class RunWriter:
    """One run's rows, committed to PRED chunk by chunk: each chunk's rows are collected in
    a local Parquet file on the driver while the run streams, then committed in one Delta
    commit (:meth:`commit`). Nothing of a chunk reaches PRED before its commit, so a run that
    dies loses at most the chunk it was collecting."""

    def __init__(self, pred: Pred, run_id: str, schema: pa.Schema, *, read_version: int | None,
                 pending: frozenset = frozenset()):
        self.pred, self.run_id, self.schema, self.read_version = pred, run_id, schema, read_version
        self.app_id = f"cough-score-{run_id}"
        self.scratch = tempfile.mkdtemp(prefix=f"cough-score-{run_id}-")
        self.path = os.path.join(self.scratch, "rows.parquet")
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0
        self.chunk = 0  # chunks handed to commit()
        self.commits = 0  # of those, the ones that added rows (a chunk of others' rows commits nothing)
        #: paths whose row in PRED is a transient error (cough.tables.scored.Scored.pending)
        self.pending = pending
        self.paths: set[str] = set()  # every path of the chunk, skipped ones included
        self.unread: set[str] = set()  # the chunk's paths whose row is a transient error
        #: transient-error rows the commits replaced (read again)
        self.replaced = 0

    def add(self, table: pa.Table, *, paths: list[str] | None = None) -> None:
        """Add rows to the chunk; ``paths``: every path the chunk handles (skipped ones too,
        whose transient-error row goes when the chunk commits)."""
        import pyarrow.compute as pc

        from .listing import UNREAD

        self.paths.update(paths if paths is not None else table.column("path").to_pylist())
        if table.num_rows == 0:
            return
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, self.schema)
        self.writer.write_table(table.select(self.schema.names).cast(self.schema))
        self.rows += table.num_rows
        unread = pc.fill_null(pc.starts_with(table.column("error"), UNREAD), False)
        self.unread.update(table.column("path").filter(unread).to_pylist())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _batches(self, drop: Scored):
        """The chunk's rows minus those ``drop`` holds, batch by batch."""
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=10_000):
            yield batch.filter(pa.array(~drop.has_rows(batch))) if len(drop.ids) or drop.unreadable else batch

    def _statuses(self, drop: Scored) -> dict[str, int]:
        """How many of the chunk's rows, minus those ``drop`` holds, have each status."""
        counts: dict[str, int] = {}
        for batch in self._batches(drop):
            for status in batch.column("status").to_pylist():
                counts[status] = counts.get(status, 0) + 1
        return counts

    def commit(self, record: RunRecord, *, model_version: str, rescore: bool) -> dict[str, int]:
        """Commit the rows added since the last commit as the run's next chunk, in one Delta
        commit whose metadata carries ``record``; returns how many rows of each status it
        added. Rows a concurrent run committed first are left out, and the record counts them
        as duplicates; a chunk left with nothing to add commits nothing (no empty commit, no
        record claiming what another run wrote). A ``--rescore`` run's first chunk replaces
        every row of ``model_version``."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.rows == 0 and not self.paths & self.pending:
            self.paths.clear()
            return {}
        added = self._commit(record, model_version=model_version, replace=rescore and self.chunk == 0,
                             chunk=self.chunk + 1)
        self.chunk += 1
        self.commits += bool(added)
        self.rows = 0
        self.paths.clear()
        self.unread.clear()
        return added

    def _commit(self, record: RunRecord, *, model_version: str, replace: bool, chunk: int) -> dict[str, int]:
        import dataclasses

        from deltalake import write_deltalake

        def landed(table) -> dict[str, int]:  # an earlier attempt committed this chunk: what it added
            self.read_version = table.version()
            done = next((RunRecord.from_dict(c[RUN_KEY]) for c in table.history(20)
                         if (c.get(RUN_KEY) or {}).get("run_id") == self.run_id
                         and (c.get(RUN_KEY) or {}).get("chunk", 1) == chunk), None)
            if done is None:
                return self._statuses(NOTHING_SCORED)
            return {"ok": done.ok or 0, "error": done.errors or 0, "rejected": done.rejected or 0}

        def write(table, properties) -> dict[str, int]:
            base = table.version() if table is not None else -1
            moved = table is not None and base != self.read_version
            drop = scored_keys(table, model_version) if moved and not replace else NOTHING_SCORED
            pending = self.pending | drop.pending
            if drop is not NOTHING_SCORED and self.unread:  # another run gave these files a row first
                drop = dataclasses.replace(drop, unreadable=drop.unreadable | _present(table, model_version,
                                                                                        self.unread))
            added = self._statuses(drop)
            if drop is not NOTHING_SCORED and drop.ids.size + len(drop.unreadable):
                log.info("PRED %s gained rows of model %s from another run while this one went; "
                         "committing only what it lacks (%d of %d rows)", self.pred.loc.uri, model_version,
                         sum(added.values()), self.rows)
            replacing = set() if replace else self.paths & pending
            if not added and not replace and not replacing:  # all of it is another run's already
                return added
            ok, errors, rejected = added.get("ok", 0), added.get("error", 0), added.get("rejected", 0)
            truthful = dataclasses.replace(record, run_id=self.run_id, chunk=chunk, ok=ok, errors=errors,
                                           rejected=rejected, scored=ok + errors + rejected,
                                           unread=min(record.unread or 0, errors),
                                           duplicates=(record.duplicates or 0) + self.rows - (ok + errors + rejected))
            reader = pa.RecordBatchReader.from_batches(self.schema, self._batches(drop))
            props = properties({RUN_KEY: truthful.to_dict()})
            target = table if table is not None else self.pred.table_uri
            options = delta.storage_options() if table is None else None
            if replace:  # this model version's rows, replaced in the same commit
                write_deltalake(target, reader, mode="overwrite", schema_mode="merge", storage_options=options,
                                predicate=f"model_version = {_quote(model_version)}", commit_properties=props)
            elif replacing:  # the chunk, and the transient-error rows of files it read again gone, in one commit
                # Delta's replaceWhere: the rows the predicate holds are deleted, the chunk's rows
                # (which it holds too) added. Not a merge, nor a delete: delta-rs 1.6 writes the
                # files those rewrite with string_view columns, which pyarrow cannot filter on.
                write_deltalake(target, reader, mode="overwrite", schema_mode="merge", storage_options=options,
                                predicate=_replaced_rows(model_version, self.run_id, self.paths),
                                commit_properties=props)
                self.replaced += len(replacing)
                log.info("PRED %s: the transient-error rows of %d files read again replaced", self.pred.loc.uri,
                         len(replacing))
            else:
                write_deltalake(target, reader, mode="append", schema_mode="merge", storage_options=options,
                                commit_properties=props)
            # this commit's version (no retries: the next one after ``base``); not table.version(),
            # which write_deltalake has moved to the latest version, another run's commit maybe
            self.read_version = base + 1
            return added

        return delta.commit(self.pred.loc, what="PRED", app_id=self.app_id, version=chunk, write=write,
                            landed=landed)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _replaced_rows(model_version: str, run_id: str, paths) -> str:
    """The Delta predicate of a chunk that replaces transient errors: of ``model_version``'s
    rows of ``paths`` (the chunk's files), the transient errors (deleted) and this run's
    (none before the commit: the chunk's own rows, which the predicate must hold).

    >>> _replaced_rows("m1", "r1", ["s3://b/it's.wav"])  # doctest: +ELLIPSIS
    "model_version = 'm1' AND path IN ('s3://b/it''s.wav') AND ((status = 'error' AND starts_with(error, 'store failure...')) OR run_id = 'r1')"
    """
    from .listing import UNREAD

    listed = ", ".join(_quote(p) for p in sorted(paths))
    return (f"model_version = {_quote(model_version)} AND path IN ({listed}) AND "
            f"((status = 'error' AND starts_with(error, {_quote(UNREAD)})) OR run_id = {_quote(run_id)})")


def _present(table, model_version: str, paths: set[str]) -> set[str]:
    """Which of ``paths`` have a row of ``model_version`` in PRED (a DeltaTable)."""
    import pyarrow.dataset as pads

    from .storage import retry

    found = retry(lambda: table.to_pyarrow_dataset().to_table(
        columns=["path"], filter=(pads.field("model_version") == model_version) & pads.field("path").isin(sorted(paths))),
        what=f"read PRED {table.table_uri}")
    return set(found.column("path").to_pylist())
