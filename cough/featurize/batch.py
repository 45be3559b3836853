"""featurize's Ray Data function: one batch of SOURCE's listing → one shard per table of OUT
(cough/tables/shards.py says the layout) and the batch's counts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..audio.features import FeaturizerParams
from ..audio.recording import process
from ..tables.listing import Entry
from ..tables.schema import INFO_COLUMNS, image_type, images_schema, log_mel_type, recordings_schema, tensor_column
from ..tables.shards import shard_name, write_table
from ..tables.storage import Location

#: Summary columns a batch returns (the job adds them up).
COUNTS = ("inputs", "ok", "errors", "images")


def featurize_batch(batch: pa.Table, *, images: Location, recordings: Location, params: FeaturizerParams,
                    metadata_columns: list[str]) -> pa.Table:
    """Ray Data ``map_batches`` function: featurize ``batch`` (columns path, problem, open_as,
    label, participant, metadata) and write one shard into each of the ``images`` and
    ``recordings`` folders; returns one row of :data:`COUNTS`."""
    info_cols = [*INFO_COLUMNS, *metadata_columns]
    rows, image_rows, pixels, mels = [], [], [], []
    for rec in batch.to_pylist():
        info = {c: rec.get(c) for c in info_cols}
        done = process(Entry.from_dict(rec), info, params=params)
        rows.append(done.row)
        for w in range(len(done.images)):
            image_rows.append({"recording_id": done.row["recording_id"], "path": rec["path"],
                               "window_index": w, **info})
        pixels.append(done.images.reshape(-1, params.image_size, params.image_size, 3))
        mels.append(done.log_mel.reshape(-1, params.n_mels, params.frames_per_window))
    name = shard_name(batch.column("path").to_pylist())
    write_table(pa.Table.from_pylist(rows, schema=recordings_schema(metadata_columns)),
                recordings.join(name))
    img_schema = images_schema(metadata_columns, params)
    plain = pa.Table.from_pylist(image_rows, schema=pa.schema(
        [f for f in img_schema if f.name not in ("image", "log_mel")]))
    table = plain.append_column(img_schema.field("image"),
                                tensor_column(np.concatenate(pixels), image_type(params)))
    table = table.append_column(img_schema.field("log_mel"),
                                tensor_column(np.concatenate(mels), log_mel_type(params)))
    write_table(table.select(img_schema.names), images.join(name))
    errors = sum(r["status"] == "error" for r in rows)
    return pa.table({"inputs": [len(rows)], "ok": [len(rows) - errors], "errors": [errors],
                     "images": [len(image_rows)]})
