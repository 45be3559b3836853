"""featurize's Ray Data function: one batch of SOURCE's listing → one shard per table of OUT
(cough/tables/shards.py says the layout) and the batch's counts."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..audio.features import FeaturizerParams, Windows
from ..audio.recording import process
from ..tables.labels import relpath
from ..tables.listing import Entry
from ..tables.schema import (INFO_COLUMNS, events_schema, image_type, images_schema, log_mel_type,
                             recordings_schema, tensor_column)
from ..tables.shards import shard_name, shard_writer, write_table
from ..tables.storage import Location

if TYPE_CHECKING:
    from ..runtime import Permit

#: Summary columns a batch returns (the job adds them up): files seen, ``ok`` (windows
#: written), ``errors`` (unreadable), ``rejected`` (no cough), windows written, coughs found,
#: windows dropped (not overlapping any kept window), and of the errors the ``unread`` ones
#: (the store kept failing to give the file: cough.tables.listing.UNREAD).
COUNTS = ("inputs", "ok", "errors", "rejected", "images", "coughs", "dropped_windows", "unread")


#: Windows a task holds before it writes them out as a row group of its images shard
#: (~45 MiB of images and log-mels): a batch of long calls no longer holds all of its
#: windows at once (a batch of 64 six-minute calls held ~1 GiB, and Ray warned).
FLUSH_WINDOWS = 512


def featurize_batch(batch: pa.Table, *, images: Location, recordings: Location, events: Location, source: str,
                    params: FeaturizerParams, min_cough_probability: float, metadata_columns: list[str],
                    gate=None) -> pa.Table:
    """Ray Data ``map_batches`` function: featurize ``batch`` (the listing's columns: path,
    problem, open_as, label, participant, annotated span, metadata; ``source``: SOURCE's URI)
    and write one shard into each of the ``images``, ``recordings`` and ``events`` folders
    (images a row group at a time, :data:`FLUSH_WINDOWS`); returns one row of :data:`COUNTS`
    and ``failed``, the first error row's path and reason (None without one). A shard the
    store kept failing to take is written again, the batch featurized again (its images are
    never all held at once); shard names are the batch's, so nothing is written twice. A
    shard that cannot be written is a CoughError naming it and the cause. ``gate``: the run's
    :class:`cough.runtime.TaskGate` actor; once the run has failed, a batch writes nothing and
    counts nothing."""
    from ..runtime import GateClosed, admitted
    from ..tables.storage import retry

    # named by the paths relative to SOURCE: the same archive featurized from another folder or
    # bucket gives the same shards, which training reads in the same order (one seed, one model)
    name = shard_name([relpath(p, source) for p in batch.column("path").to_pylist()])
    with admitted(gate) as permit:
        try:
            return retry(lambda: _featurize(batch, name, images=images, recordings=recordings, events=events,
                                            params=params, min_cough_probability=min_cough_probability,
                                            metadata_columns=metadata_columns, permit=permit),
                         what=f"write the shards {images.join(name).uri}, ...", where=images, inner=True)
        except GateClosed:
            return pa.table({**{key: [0] for key in COUNTS}, "failed": pa.array([None], pa.string())})


def _featurize(batch: pa.Table, name: str, *, images: Location, recordings: Location, events: Location,
               params: FeaturizerParams, min_cough_probability: float, metadata_columns: list[str],
               permit: Permit) -> pa.Table:
    from ..tables.listing import is_unread

    info_cols = [*INFO_COLUMNS, *metadata_columns]
    img_schema = images_schema(metadata_columns, params)
    rows, event_rows = [], []
    pending = _Windows(img_schema, params)
    written = 0
    shard = images.join(name)
    writer = None  # opened at the first write, once the permit says the run still writes
    try:
        for rec in batch.to_pylist():
            info = {c: rec.get(c) for c in info_cols}
            done = process(Entry.from_dict(rec), info, params=params, min_cough_probability=min_cough_probability)
            rows.append(done.row)
            rid = done.row["recording_id"]
            event_rows += [{"recording_id": rid, "path": rec["path"], "event_index": i, "start_s": start,
                            "end_s": end, "cough_probability": p} for i, (start, end, p) in enumerate(done.events)]
            if done.windows is not None:
                pending.add(rid, rec["path"], info, done.windows)
            if len(pending) >= FLUSH_WINDOWS:
                writer = writer if writer is not None else _open(shard, img_schema, permit)
                with _writing(shard):
                    written += pending.flush(writer)
        writer = writer if writer is not None else _open(shard, img_schema, permit)
        with _writing(shard):
            written += pending.flush(writer)
    finally:
        if writer is not None:
            with _writing(shard):
                writer.close()
    with _writing(recordings.join(name)):
        write_table(pa.Table.from_pylist(rows, schema=recordings_schema(metadata_columns)), recordings.join(name))
    with _writing(events.join(name)):
        write_table(pa.Table.from_pylist(event_rows, schema=events_schema()), events.join(name))
    status = [r["status"] for r in rows]
    failed = next((f"{r['path']}: {r['error']}" for r in rows if r["status"] == "error"), None)
    return pa.table({"inputs": [len(rows)], "ok": [status.count("ok")], "errors": [status.count("error")],
                     "rejected": [status.count("rejected")], "images": [written], "coughs": [len(event_rows)],
                     "dropped_windows": [sum(r["dropped_windows"] or 0 for r in rows)],
                     "unread": [sum(is_unread(r["error"]) for r in rows)], "failed": pa.array([failed], pa.string())})


def _open(shard: Location, schema: pa.Schema, permit: Permit):
    permit.check()
    with _writing(shard):
        return shard_writer(schema, shard)


@contextlib.contextmanager
def _writing(shard: Location):
    """An OSError while writing ``shard`` (disk full, access denied, the store's refusal) as the
    CoughError that names the shard and the cause: a job error, not a bad recording. An object
    store's transient failure passes as it is, for featurize_batch's retry (a local disk's
    error is not tried again: cough.tables.storage.retry)."""
    from ..tables.storage import transient

    try:
        yield
    except OSError as exc:
        if transient(exc) and not shard.local:
            raise
        raise shard.error("write", exc) from None


class _Windows:
    """Window rows waiting to be written: their plain columns and their tensors."""

    def __init__(self, schema: pa.Schema, params: FeaturizerParams):
        self.schema, self.params = schema, params
        self.rows: list[dict] = []
        self.pixels: list[np.ndarray] = []
        self.mels: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, rid: str, path: str, info: dict, w: Windows) -> None:
        p = self.params
        self.rows += [{"recording_id": rid, "path": path, "window_index": i, "start_s": w.start_s[i],
                       "end_s": w.end_s[i], **info} for i in range(len(w))]
        self.pixels.append(w.images.reshape(-1, p.image_size, p.image_size, 3))
        self.mels.append(w.log_mel.reshape(-1, p.n_mels, p.frames_per_window))

    def flush(self, writer) -> int:
        """Write what waits as one row group (nothing when nothing waits); returns how many rows."""
        if not self.rows:
            return 0
        p, schema = self.params, self.schema
        plain = pa.Table.from_pylist(self.rows, schema=pa.schema([f for f in schema if f.name not in ("image", "log_mel")]))
        table = plain.append_column(schema.field("image"), tensor_column(np.concatenate(self.pixels), image_type(p)))
        table = table.append_column(schema.field("log_mel"), tensor_column(np.concatenate(self.mels), log_mel_type(p)))
        writer.write_table(table.select(schema.names))
        n = len(self.rows)
        self.rows, self.pixels, self.mels = [], [], []
        return n
