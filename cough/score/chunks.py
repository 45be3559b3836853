"""A score run's rows committed chunk by chunk: each chunk to PRED first (cough/tables/pred.py
``RunWriter``), then to the file ledger (cough/tables/ledger.py says why in this order), with the
run's counts summed as the chunks go."""

from __future__ import annotations

import dataclasses

from ..tables.artifacts import RunRecord
from .settings import ChunkCounts


def commit_chunks(predictions, writer, ledger, record: RunRecord, *, model_version: str, rescore: bool,
                  commit_every: int) -> tuple[ChunkCounts, int, int, str | None]:
    """Collect the scored rows of ``predictions`` (a Ray Dataset of PRED rows) and commit them
    every ``commit_every`` recordings with ``writer``, then ``ledger`` (None: no ledger, a
    featurize OUT), which records every file but the transient errors (the store kept failing
    to give them: the next run reads them again, and its commit replaces their rows); ``record``
    is the run record each commit carries. Returns the run's counts (of files), the number of
    PRED commits that added rows, the distinct recordings (contents) among the files it
    scored, and one error row's path and reason (None without).

    Nothing is committed while every file of the run so far failed: a run in which not one
    file could be read (SOURCE out of the workers' reach, a store refusing them) commits
    nothing, so its files are not in the ledger and the next run reads them again; the job
    says so (exit 1). Once one file is read, the held rows go with the next commit."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..tables.ledger import ledger_rows
    from ..tables.listing import UNREAD

    total, chunk = ChunkCounts(), ChunkCounts()
    files: list = []  # the chunk's ledger rows
    chunks = [0]  # chunks handed to the ledger (one may hold only duplicates: nothing for PRED)
    seen: set[int] = set()  # guards against a retried batch delivering a path twice
    contents: set[str] = set()  # the distinct recordings among the scored files
    unreadable = [0]  # files without content (each its own recording)
    failed: list[str] = []  # one error row's "path: reason"

    def commit():
        nonlocal chunk
        added = writer.commit(dataclasses.replace(record, **chunk.to_dict()), model_version=model_version,
                              rescore=rescore)
        ok, errors, rejected = (added.get(s, 0) for s in ("ok", "error", "rejected"))
        if ok + errors + rejected < chunk.scored:  # a concurrent run committed some of them first
            chunk.duplicates += chunk.scored - (ok + errors + rejected)
            chunk.ok, chunk.errors, chunk.rejected, chunk.scored = ok, errors, rejected, ok + errors + rejected
            chunk.unread = min(chunk.unread, errors)
        if ledger is not None and files:
            chunks[0] += 1
            ledger.record(pa.concat_tables(files), run_id=writer.run_id, chunk=chunks[0])
        total.add(chunk)
        chunk = ChunkCounts()
        files.clear()

    def read_any() -> bool:
        return bool(total.ok + total.rejected + total.duplicates + chunk.ok + chunk.rejected + chunk.duplicates)

    for batch in predictions.iter_batches(batch_size=None, batch_format="pyarrow"):
        keep = [i for i, p in enumerate(batch.column("path").to_pylist()) if hash(p) not in seen]
        batch = batch.take(keep)
        seen.update(hash(p) for p in batch.column("path").to_pylist())
        status = batch.column("status").to_pylist()
        for rid, s in zip(batch.column("recording_id").to_pylist(), status):
            if s != "skipped":
                if rid is None:
                    unreadable[0] += 1
                else:
                    contents.add(rid)
        if not failed and "error" in status:
            i = status.index("error")
            failed.append(f"{batch.column('path')[i].as_py()}: {batch.column('error')[i].as_py()}")
        chunk.ok += status.count("ok")
        chunk.errors += status.count("error")
        chunk.unread += int(pc.sum(pc.starts_with(batch.column("error"), UNREAD)).as_py() or 0)
        chunk.rejected += status.count("rejected")
        chunk.duplicates += status.count("skipped")
        chunk.scored = chunk.ok + chunk.errors + chunk.rejected
        # bytes of the files that were read (those that have a content hash)
        read = batch.filter(pc.is_valid(batch.column("recording_id")))
        chunk.bytes_read += int(pc.sum(pc.max_element_wise(read.column("file_size"), 0)).as_py() or 0)
        writer.add(batch.filter(pa.array([s != "skipped" for s in status])), paths=batch.column("path").to_pylist())
        files.append(ledger_rows(batch, model_version))  # transient errors left out: read again next run
        if chunk.scored + chunk.duplicates >= commit_every and read_any():
            commit()
    if read_any() or not chunk.errors:
        commit()
    else:  # not one file read: the counts say what happened, nothing is committed
        total.add(chunk)
    return total, writer.commits, len(contents) + unreadable[0], failed[0] if failed else None
