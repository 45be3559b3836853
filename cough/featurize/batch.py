"""featurize's Ray Data function: one batch of SOURCE's listing → one shard per table of OUT
(cough/tables/shards.py says the layout) and the batch's counts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..audio.features import FeaturizerParams
from ..audio.recording import process
from ..tables.listing import Entry
from ..tables.schema import (INFO_COLUMNS, events_schema, image_type, images_schema, log_mel_type,
                             recordings_schema, tensor_column)
from ..tables.shards import shard_name, write_table
from ..tables.storage import Location

#: Summary columns a batch returns (the job adds them up): files seen, ``ok`` (windows
#: written), ``errors`` (unreadable), ``rejected`` (no cough), windows written, coughs found,
#: windows dropped (not overlapping any kept window).
COUNTS = ("inputs", "ok", "errors", "rejected", "images", "coughs", "dropped_windows")


def featurize_batch(batch: pa.Table, *, images: Location, recordings: Location, events: Location,
                    params: FeaturizerParams, min_cough_probability: float, metadata_columns: list[str]) -> pa.Table:
    """Ray Data ``map_batches`` function: featurize ``batch`` (the listing's columns: path,
    problem, open_as, label, participant, annotated span, metadata) and write one shard into
    each of the ``images``, ``recordings`` and ``events`` folders; returns one row of :data:`COUNTS`."""
    info_cols = [*INFO_COLUMNS, *metadata_columns]
    rows, image_rows, event_rows, pixels, mels = [], [], [], [], []
    for rec in batch.to_pylist():
        info = {c: rec.get(c) for c in info_cols}
        done = process(Entry.from_dict(rec), info, params=params, min_cough_probability=min_cough_probability)
        rows.append(done.row)
        rid = done.row["recording_id"]
        event_rows += [{"recording_id": rid, "path": rec["path"], "event_index": i, "start_s": start,
                        "end_s": end, "cough_probability": p} for i, (start, end, p) in enumerate(done.events)]
        if done.windows is None:
            continue
        w = done.windows
        image_rows += [{"recording_id": rid, "path": rec["path"], "window_index": i, "start_s": w.start_s[i],
                        "end_s": w.end_s[i], **info} for i in range(len(w))]
        pixels.append(w.images.reshape(-1, params.image_size, params.image_size, 3))
        mels.append(w.log_mel.reshape(-1, params.n_mels, params.frames_per_window))
    name = shard_name(batch.column("path").to_pylist())
    write_table(pa.Table.from_pylist(rows, schema=recordings_schema(metadata_columns)), recordings.join(name))
    write_table(pa.Table.from_pylist(event_rows, schema=events_schema()), events.join(name))
    img_schema = images_schema(metadata_columns, params)
    plain = pa.Table.from_pylist(image_rows, schema=pa.schema(
        [f for f in img_schema if f.name not in ("image", "log_mel")]))
    empty = (np.zeros((0, params.image_size, params.image_size, 3), np.uint8),
             np.zeros((0, params.n_mels, params.frames_per_window), np.float16))
    table = plain.append_column(img_schema.field("image"),
                                tensor_column(np.concatenate([empty[0], *pixels]), image_type(params)))
    table = table.append_column(img_schema.field("log_mel"),
                                tensor_column(np.concatenate([empty[1], *mels]), log_mel_type(params)))
    write_table(table.select(img_schema.names), images.join(name))
    status = [r["status"] for r in rows]
    return pa.table({"inputs": [len(rows)], "ok": [status.count("ok")], "errors": [status.count("error")],
                     "rejected": [status.count("rejected")], "images": [len(image_rows)], "coughs": [len(event_rows)],
                     "dropped_windows": [sum(r["dropped_windows"] or 0 for r in rows)]})
