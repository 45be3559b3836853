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

Commits are optimistic: a run commits against the table version it read, with no automatic
retry (``max_commit_retries=0``; Delta's log entry is a put-if-absent on every store). When
another run committed first, this one reloads PRED, drops the rows that run already added
for the same model version, and commits the rest: two runs at once leave every recording
exactly once. ``--rescore`` replaces the model version's rows in its first chunk's commit.
See docs/score.md and docs/storage.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .artifacts import RunRecord
from ..errors import CoughError, UsageError
from .storage import Location, claim, read_owner

log = logging.getLogger("cough.score")

KIND = "score"
#: Key of the run record in each commit's metadata.
RUN_KEY = "cough.run"
LOG_DIR = "_delta_log"
#: Recordings per commit (``--commit-every``): a driver lost mid-run redoes at most this many.
COMMIT_EVERY = 10_000
#: Counts a run record gives per chunk (:func:`committed_runs` sums them over a run's chunks).
CHUNK_COUNTS = RunRecord.CHUNK_COUNTS
#: Attempts to commit a run when other runs keep committing first (or an error hides the outcome).
COMMIT_ATTEMPTS = 5


# ------------------------------------------------------------------ what is scored

@dataclass(frozen=True)
class Scored:
    """Keys this model version already scored: sorted ``recording_id`` bytes, plus the paths
    of files that could not even be read (they have no ``recording_id``)."""

    ids: np.ndarray
    unreadable: frozenset

    def has(self, ids: list[str | None], paths: list[str]) -> np.ndarray:
        """The rule for "already scored", everywhere: a file whose content hash (``ids``) this
        model version scored, under any path; a file that could not be read (its id None)
        whose path it already recorded as unreadable.

        >>> scored = Scored(np.array([b"a" * 32], dtype="S32"), frozenset({"/x/broken.mp3"}))
        >>> scored.has(["a" * 32, "b" * 32, None, None], ["/y/copy.mp3", "/y/new.mp3", "/x/broken.mp3", "/x/other.mp3"])
        array([ True, False,  True, False])
        """
        keys = np.array([(i or "").encode() for i in ids], dtype="S32")
        if len(self.ids) and len(keys):
            pos = np.minimum(np.searchsorted(self.ids, keys), len(self.ids) - 1)
            known = self.ids[pos] == keys
        else:
            known = np.zeros(len(keys), bool)
        return np.array([k if i is not None else p in self.unreadable for i, k, p in zip(ids, known, paths)],
                        dtype=bool)

    def has_rows(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """Which rows of a batch with ``recording_id`` and ``path`` columns this set holds (:meth:`has`)."""
        return self.has(batch.column("recording_id").to_pylist(), batch.column("path").to_pylist())


NOTHING_SCORED = Scored(np.zeros(0, "S32"), frozenset())


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def scored_keys(table, model_version: str) -> Scored:
    """What ``model_version`` has scored in PRED (a DeltaTable, or None before the first
    commit); streams two columns of that version's rows."""
    import pyarrow.dataset as pads

    if table is None:
        return NOTHING_SCORED
    data = table.to_pyarrow_dataset()
    ids, unreadable = [np.zeros(0, "S32")], set()
    for batch in data.to_batches(columns=["recording_id", "path"],
                                 filter=pads.field("model_version") == model_version):
        rid = batch.column("recording_id")
        ok = rid.is_valid()
        ids.append(np.array(rid.filter(ok).to_pylist(), dtype="S32"))
        unreadable.update(batch.column("path").filter(pc.invert(ok)).to_pylist())
    return Scored(np.unique(np.concatenate(ids)), frozenset(unreadable))


# ------------------------------------------------------------------------- the table

def _storage_options() -> dict:
    """delta-rs reads the AWS_* variables itself; it wants plain-HTTP endpoints (a test server,
    an on-premises store) allowed explicitly, which pyarrow does not."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    return {"AWS_ALLOW_HTTP": "true"} if endpoint.startswith("http://") else {}


@dataclass(frozen=True)
class Pred:
    """PRED's location and how delta-rs reaches it."""

    loc: Location

    @property
    def table_uri(self) -> str:
        return self.loc.path if self.loc.local else self.loc.uri

    def table(self, version: int | None = None):
        """The DeltaTable (latest version, or ``version``); None before the first commit."""
        from deltalake import DeltaTable

        if not self.loc.join(LOG_DIR).exists():
            return None
        try:
            return DeltaTable(self.table_uri, version=version, storage_options=_storage_options())
        except Exception as exc:
            raise CoughError(f"cannot read PRED {self.loc.uri} as a Delta table: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _v01_message(loc: Location) -> str:
    return (f"PRED {loc.uri} was written by cough 0.1 (run-* folders); this cough keeps PRED as a Delta table. "
            f"Convert it into a new location, then use that one: python -c \"from cough.tables.pred import convert_v01; "
            f"convert_v01('{loc.uri}', 'NEW_PRED')\"")


def is_v01(loc: Location) -> bool:
    """A cough 0.1 PRED: ``_runs/`` and ``run-*`` folders, no Delta log."""
    names = {PurePosixPath(e.path).name for e in loc.listdir()}
    return LOG_DIR not in names and ("_runs" in names or any(n.startswith("run-") for n in names))


def claim_pred(out, *, inputs: dict | None = None) -> "tuple[Pred, object]":
    """Check PRED before any work: ``(Pred, Output)``, or a UsageError (exit 2) naming what is
    there (another job's files, a cough 0.1 PRED with how to convert it)."""
    loc = Location.of(out)
    if loc.is_dir() and is_v01(loc):
        raise UsageError(_v01_message(loc))
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
        raise CoughError(_v01_message(loc))
    owner = read_owner(loc) or {}
    if owner.get("kind") != KIND and not loc.join(LOG_DIR).is_dir():
        what_is_there = f"the output of `cough {owner['kind']}`" if owner.get("kind") else "no Delta log"
        raise CoughError(f"{what} {loc.uri} is not a PRED table ({what_is_there}): give the --out of `cough score`")
    return Pred(loc)


def committed_runs(pred: Pred, table=None) -> list[RunRecord]:
    """The run records of PRED's commits, oldest first, one per run: a run committed in
    chunks has its chunks' :data:`CHUNK_COUNTS` summed (:meth:`RunRecord.after`; rows of
    runs a --rescore replaced are gone from the table; their records stay in the log's
    history). A record that is not a :class:`RunRecord` is refused by name."""
    table = table if table is not None else pred.table()
    if table is None:
        return []
    runs: dict[str | None, RunRecord] = {}
    for commit in reversed(table.history()):
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

    def __init__(self, pred: Pred, run_id: str, schema: pa.Schema, *, read_version: int | None):
        self.pred, self.run_id, self.schema, self.read_version = pred, run_id, schema, read_version
        self.app_id = f"cough-score-{run_id}"
        self.scratch = tempfile.mkdtemp(prefix=f"cough-score-{run_id}-")
        self.path = os.path.join(self.scratch, "rows.parquet")
        self.writer = None
        self.rows = 0
        self.chunk = 0  # chunks committed

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, self.schema)
        self.writer.write_table(table.select(self.schema.names).cast(self.schema))
        self.rows += table.num_rows

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _rows(self, drop: Scored) -> tuple[pa.RecordBatchReader, list]:
        """The chunk's rows minus those ``drop`` holds, as a stream; and a one-item list that
        counts the rows streamed."""
        kept = [0]

        def batches():
            for batch in pq.ParquetFile(self.path).iter_batches(batch_size=10_000):
                batch = batch.filter(pa.array(~drop.has_rows(batch))) if len(drop.ids) or drop.unreadable else batch
                kept[0] += batch.num_rows
                yield batch

        return pa.RecordBatchReader.from_batches(self.schema, batches()), kept

    def commit(self, record: RunRecord, *, model_version: str, rescore: bool) -> int:
        """Commit the rows added since the last commit as the run's next chunk, in one Delta
        commit whose metadata carries ``record``; returns how many rows it added (0: nothing
        to commit, or all of it already committed by a concurrent run). A ``--rescore``
        run's first chunk replaces every row of ``model_version``."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.rows == 0:
            return 0
        added = self._commit(record, model_version=model_version, replace=rescore and self.chunk == 0,
                             chunk=self.chunk + 1)
        self.chunk += 1
        self.rows = 0
        return added

    def _commit(self, record: RunRecord, *, model_version: str, replace: bool, chunk: int) -> int:
        import dataclasses

        from deltalake import CommitProperties, Transaction, write_deltalake
        from deltalake.exceptions import CommitFailedError

        error = None
        for attempt in range(COMMIT_ATTEMPTS):
            table = self.pred.table()
            if table is not None and (table.transaction_version(self.app_id) or 0) >= chunk:
                log.info("chunk %d of run %s was already committed to %s", chunk, self.run_id, self.pred.loc.uri)
                self.read_version = table.version()
                return next((int(c.get("operationMetrics", {}).get("num_added_rows", self.rows))
                             for c in table.history(20) if (c.get(RUN_KEY) or {}).get("run_id") == self.run_id
                             and (c.get(RUN_KEY) or {}).get("chunk", 1) == chunk), self.rows)
            base = table.version() if table is not None else -1
            moved = table is not None and base != self.read_version
            drop = scored_keys(table, model_version) if moved and not replace else NOTHING_SCORED
            reader, kept = self._rows(drop)
            record = dataclasses.replace(record, run_id=self.run_id, chunk=chunk)
            props = CommitProperties(custom_metadata={RUN_KEY: record.to_dict()},
                                     max_commit_retries=0, app_transactions=[Transaction(self.app_id, chunk)])
            if drop is not NOTHING_SCORED and drop.ids.size + len(drop.unreadable):
                log.info("PRED %s gained rows of model %s from another run while this one went; "
                         "committing only what it lacks", self.pred.loc.uri, model_version)
            try:
                write_deltalake(table if table is not None else self.pred.table_uri, reader,
                                mode="overwrite" if replace else "append", schema_mode="merge",
                                predicate=f"model_version = {_quote(model_version)}" if replace else None,
                                storage_options=_storage_options() if table is None else None,
                                commit_properties=props)
            except CommitFailedError as exc:  # another run committed first: look again
                error = exc
                log.info("PRED %s changed while run %s committed (attempt %d): reloading",
                         self.pred.loc.uri, self.run_id, attempt + 1)
                continue
            except Exception as exc:  # the outcome is unknown: the log says, next attempt
                error = exc
                log.warning("committing run %s to %s failed (%s): checking the log", self.run_id,
                            self.pred.loc.uri, _first_line(exc))
                continue
            # this commit's version (no retries: the next one after ``base``); not table.version(),
            # which write_deltalake has moved to the latest version, another run's commit maybe
            self.read_version = base + 1
            return kept[0]
        raise CoughError(f"cannot commit to PRED {self.pred.loc.uri} after {COMMIT_ATTEMPTS} attempts: "
                         f"{_first_line(error)}")


def convert_v01(old: str, new: str) -> int:
    """Copy a cough 0.1 PRED (``run-*`` folders and ``_runs/`` records) into a new Delta PRED,
    one commit per committed run, oldest first, leaving ``old`` as it is; its ``group``
    column becomes ``participant``. Returns the rows."""
    from deltalake import CommitProperties, write_deltalake

    from .schema import current_names

    src = Location.of(old)
    if not is_v01(src):
        raise CoughError(f"{src.uri} is not a cough 0.1 PRED")
    dst, output = claim_pred(new, inputs={"the old PRED": src})
    records = sorted((src.join("_runs", e.base_name).read_json() for e in src.join("_runs").listdir()
                      if e.base_name.endswith(".json")), key=lambda r: r["run_id"])
    gone = {old_id for r in records for old_id in r.get("supersedes", [])}
    rows = 0
    with output.writing(LOG_DIR):
        for record in records:
            run = next((src.join(f"{p}{record['run_id']}") for p in ("run-", ".staging-")
                        if src.join(f"{p}{record['run_id']}").is_dir()), None)
            if record["run_id"] in gone or run is None:
                continue
            table, target = current_names(pq.read_table(run.path, filesystem=run.fs)), dst.table()  # group -> participant
            write_deltalake(target if target is not None else dst.table_uri, table, mode="append", schema_mode="merge",
                            storage_options=_storage_options(),
                            commit_properties=CommitProperties(custom_metadata={RUN_KEY: record}))
            rows += table.num_rows
    return rows
