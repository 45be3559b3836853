"""The file ledger: which versions of which files each model version has handled.

A Delta table beside the predictions, ``PRED/_ledger/`` (Delta and Parquet readers of PRED
skip ``_`` names), with one row per file version a scoring run handled:

=================  =========  ====================================================
column             type       meaning
=================  =========  ====================================================
path               string     the file, as PRED's rows show it
file_size          int64      bytes, as the listing saw them
file_mtime_ns      int64      modification time (S3: last written), ns since epoch
model_version      string     the model version that handled it
recording_id       string     the content hash it had (null: unreadable)
status             string     ok, error, rejected, or skipped (content scored already); never a
                              transient error (cough.tables.listing.UNREAD): the next run reads it again
run_id             string     the scoring run
seen_at            timestamp  when that run committed it
=================  =========  ====================================================

The ledger is partitioned by ``bucket``, a stable hash of ``path`` (:data:`BUCKETS` of
them). A run looks up its listing one bucket per Ray task (:func:`unseen`): each listing
block is split by bucket, and the task of bucket *b* reads only the ledger's files of
bucket *b* and anti-joins (pyarrow) the listing's rows against them. The driver holds
object references and the ledger's file names, never rows, so its memory does not grow
with the archive; a task holds one bucket of one night's listing and of the ledger.

A listed file whose ``(path, file_size, file_mtime_ns)`` the ledger holds for the model
version is not opened again; a file rewritten under the same path has a new size or time
and is read, hashed and, with new content, scored again (PRED then holds both rows, told
apart by ``recording_id``, ``file_size`` and ``file_mtime_ns``). Content dedupe is PRED's
(cough/tables/pred.py): a renamed copy of a scored recording is read and hashed, recognised, and
recorded here as ``skipped``.

A run commits each chunk to PRED first and to the ledger second, each with an application
transaction (``cough-score-<run>``/``cough-ledger-<run>``, version = chunk number), so a
retried commit is a no-op. A driver killed between the two leaves files in PRED that the
ledger lacks: the next run reads them again, finds their content scored, and records them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging

import numpy as np
import pyarrow as pa

from . import delta

log = logging.getLogger("cough.score")

LEDGER_DIR = "_ledger"
#: What identifies one version of a file.
FILE_KEY = ("path", "file_size", "file_mtime_ns")
#: Hash partitions of the ledger (and of each night's lookup): fixed for a ledger's life.
BUCKETS = 16
SCHEMA = pa.schema([
    pa.field("bucket", pa.int16()),
    pa.field("path", pa.string()), pa.field("file_size", pa.int64()), pa.field("file_mtime_ns", pa.int64()),
    pa.field("model_version", pa.string()), pa.field("recording_id", pa.string()), pa.field("status", pa.string()),
    pa.field("run_id", pa.string()), pa.field("seen_at", pa.timestamp("us", tz="UTC")),
])


class Ledger:
    """The ledger of a PRED (:class:`cough.tables.pred.Pred`); absent until a run first commits to it."""

    def __init__(self, pred):
        self.pred = pred
        self.loc = pred.loc.join(LEDGER_DIR)

    def table(self):
        return delta.open_table(self.loc, what="the file ledger")

    def files_by_bucket(self) -> dict[int, list[str]]:
        """The data files of the ledger's current version, per bucket, as paths on PRED's filesystem."""
        table = self.table()
        if table is None:
            return {}
        actions = pa.table(table.get_add_actions(flatten=True))
        out: dict[int, list[str]] = {}
        for path, bucket in zip(actions.column("path").to_pylist(), actions.column("partition.bucket").to_pylist()):
            out.setdefault(int(bucket), []).append(self.loc.join(*path.split("/")).path)
        return out

    def record(self, rows: pa.Table, *, run_id: str, chunk: int) -> None:
        """Append a chunk's rows (:data:`SCHEMA` columns but ``run_id``/``seen_at``) in one commit
        that a retry of the same ``(run_id, chunk)`` finds and skips."""
        from deltalake import write_deltalake

        if rows.num_rows == 0:
            return
        now = dt.datetime.now(dt.timezone.utc)
        rows = rows.append_column("run_id", pa.array([run_id] * rows.num_rows, pa.string())) \
                   .append_column("seen_at", pa.array([now] * rows.num_rows, SCHEMA.field("seen_at").type))
        rows = rows.append_column("bucket", pa.array(buckets(rows.column("path").to_pylist()), pa.int16()))
        rows = rows.select(SCHEMA.names).cast(SCHEMA)

        def write(table, properties) -> None:
            write_deltalake(table if table is not None else delta.table_uri(self.loc), rows, mode="append",
                            partition_by=["bucket"], storage_options=delta.storage_options() if table is None else None,
                            commit_properties=properties())

        delta.commit(self.loc, what="the file ledger", app_id=f"cough-ledger-{run_id}", version=chunk, write=write,
                     landed=lambda table: None)


def buckets(paths: list[str]) -> np.ndarray:
    """Each path's bucket: a stable hash (the same on every machine and Python), mod :data:`BUCKETS`.

    >>> buckets(["/a/x.wav", "/a/x.wav", "s3://b/y.mp3"]).tolist()
    [14, 14, 12]
    """
    return np.array([int.from_bytes(hashlib.blake2b(p.encode(), digest_size=4).digest(), "little") % BUCKETS
                     for p in paths], dtype=np.int16)


def _split(block: pa.Table) -> list[pa.Table]:
    """A listing block's rows per bucket (:data:`BUCKETS` tables)."""
    of = buckets(block.column("path").to_pylist())
    return [block.filter(pa.array(of == b)) for b in range(BUCKETS)]


def _lookup(fs, files: list[str], model_version: str, *parts: pa.Table) -> tuple[pa.Table, int]:
    """One bucket: ``(the listing's rows whose file version the ledger files lack, how many of
    those have their path in the ledger under another version)``."""
    import pyarrow.parquet as pq

    from .storage import retry

    listing = pa.concat_tables(parts)
    if not files or listing.num_rows == 0:
        return listing, 0
    seen = retry(lambda: pq.read_table(files, filesystem=fs, columns=[*FILE_KEY, "model_version"],
                                       filters=[("model_version", "=", model_version)]),
                 what=f"read the file ledger ({len(files)} files)").select(list(FILE_KEY))
    fresh = listing.join(seen, keys=list(FILE_KEY), join_type="left anti")
    paths = seen.select(["path"]).group_by("path").aggregate([])
    changed = fresh.select(["path"]).join(paths, keys="path", join_type="left semi").num_rows
    return fresh, changed


def unseen(listing, ledger: Ledger, model_version: str):
    """``(dataset, changed)``: the rows of ``listing`` (a materialized Ray Dataset with
    :data:`FILE_KEY` columns) whose file version the ledger lacks for ``model_version``, and
    how many of those have a path the ledger holds under another size or time. One Ray task
    per listing block splits it by bucket, one per bucket looks it up; the rows stay in the
    object store."""
    import ray

    files = ledger.files_by_bucket()
    if not files:
        return listing, 0
    blocks = listing.to_arrow_refs()
    split = ray.remote(_split).options(num_cpus=1, num_returns=BUCKETS)
    lookup = ray.remote(_lookup).options(num_cpus=1, num_returns=2)
    parts = [split.remote(block) for block in blocks]  # parts[i][b]: block i's rows of bucket b
    found = [lookup.remote(ledger.loc.fs, files.get(b, []), model_version, *(p[b] for p in parts))  # type: ignore[index]
             for b in range(BUCKETS)]
    changed = sum(ray.get([c for _, c in found]))
    return ray.data.from_arrow_refs([rows for rows, _ in found]), changed


def ledger_rows(batch: pa.Table, model_version: str) -> pa.Table:
    """A ledger chunk's rows from a batch of scored rows (PRED's columns, skipped rows
    included), but for transient errors (the store kept failing to give the file: the next
    run reads it again)."""
    import pyarrow.compute as pc

    from .listing import UNREAD

    unread = pc.fill_null(pc.starts_with(batch.column("error"), UNREAD), False) if "error" in batch.column_names \
        else pa.array([False] * batch.num_rows)
    batch = batch.filter(pc.invert(unread))
    return pa.table({"path": batch.column("path"), "file_size": batch.column("file_size"),
                     "file_mtime_ns": batch.column("file_mtime_ns"),
                     "model_version": pa.array([model_version] * batch.num_rows, pa.string()),
                     "recording_id": batch.column("recording_id"), "status": batch.column("status")})
