"""Write one batch of recordings as a pair of Parquet shards (``images`` and ``recordings``).

Shard names are a hash of the batch's paths, so a task that Ray retries after a
node loss rewrites the same files instead of adding duplicates.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .features import FeaturizerParams
from .listing import Entry
from .recording import process
from .schema import image_type, images_schema, log_mel_type, recordings_schema, tensor_column
from .storage import join, resolve

INFO_COLUMNS = ("label", "group")


def shard_name(paths) -> str:
    return "part-" + hashlib.sha1("\n".join(paths).encode()).hexdigest()[:20] + ".parquet"


def _write(table: pa.Table, uri: str) -> None:
    fs, path = resolve(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, filesystem=fs)


def featurize_batch(batch: pd.DataFrame, *, out: str, params: FeaturizerParams,
                    metadata_columns: list[str]) -> pd.DataFrame:
    """Ray Data ``map_batches`` function: featurize ``batch`` (columns path, problem, open_as,
    label, group, metadata) and write its shards under ``out``; returns one summary row."""
    info_cols = [*INFO_COLUMNS, *metadata_columns]
    rows, image_rows, images, mels = [], [], [], []
    for rec in batch.to_dict("records"):
        info = {c: (None if pd.isna(rec.get(c)) else rec.get(c)) for c in info_cols}
        done = process(Entry.from_dict(rec), info, params=params)
        rows.append(done.row)
        for w in range(len(done.images)):
            image_rows.append({"recording_id": done.row["recording_id"], "path": rec["path"],
                               "window": w, **info})
        images.append(done.images.reshape(-1, params.image_size, params.image_size, 3))
        mels.append(done.log_mel.reshape(-1, params.n_mels, params.frames_per_window))
    name = shard_name(batch["path"])
    rec_schema = recordings_schema(metadata_columns)
    _write(pa.Table.from_pylist(rows, schema=rec_schema), join(out, "recordings", name))
    img_schema = images_schema(metadata_columns, params)
    plain = pa.Table.from_pylist(image_rows, schema=pa.schema(
        [f for f in img_schema if f.name not in ("image", "log_mel")]))
    table = plain.add_column(5, img_schema.field("image"),
                             tensor_column(np.concatenate(images), image_type(params)))
    table = table.add_column(6, img_schema.field("log_mel"),
                             tensor_column(np.concatenate(mels), log_mel_type(params)))
    _write(table.select(img_schema.names), join(out, "images", name))
    errors = sum(r["status"] == "error" for r in rows)
    return pd.DataFrame({"inputs": [len(rows)], "ok": [len(rows) - errors], "errors": [errors],
                         "images": [len(image_rows)]})
