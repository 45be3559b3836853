"""OUT, the output of ``cough featurize``: Parquet shards committed by a manifest written last.

::

    OUT/.cough-output.json                 owner marker (written first: OUT belongs to featurize)
    OUT/images/<version>/part-*.parquet    one row per window: the image, its log-mel, label, participant
    OUT/recordings/<version>/part-*.parquet one row per input file, ok or error with a reason
    OUT/manifest.json                      the commit: counts, featurizer, and which <version> is OUT

A run writes its shards under a new ``<version>`` and commits by writing ``manifest.json``;
then it deletes the other versions. Readers go through the manifest (:func:`read_out`).
Shard names are a hash of the batch's paths, so a task that Ray retries after a node loss
rewrites the same files instead of adding duplicates. See docs/storage.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .artifacts import Manifest
from ..errors import CoughError
from ..audio.features import FeaturizerParams
from .listing import Entry
from ..audio.recording import process
from .schema import INFO_COLUMNS, image_type, images_schema, log_mel_type, recordings_schema, tensor_column
from .storage import Location

#: Summary columns a batch returns (the job adds them up).
COUNTS = ("inputs", "ok", "errors", "images")
KIND = "featurize"
MANIFEST_FILE = Manifest.FILE
TABLES = ("images", "recordings")


@dataclass(frozen=True)
class FeaturesOut:
    """A committed OUT: its location, manifest, and the folders of its two tables."""

    loc: Location
    info: Manifest

    @property
    def images(self) -> Location:
        return self.loc.join(self.info.tables["images"])

    @property
    def recordings(self) -> Location:
        return self.loc.join(self.info.tables["recordings"])


def is_out(loc: Location) -> bool:
    """Whether ``loc`` holds a committed featurize OUT (of this cough or of 0.1)."""
    return loc.join(MANIFEST_FILE).is_file()


def read_out(out: "str | Location", *, what: str = "SHARDS") -> FeaturesOut:
    """The committed OUT at ``out``, or a CoughError saying what is wrong with it."""
    loc = Location.of(out)
    if not loc.exists():
        raise CoughError(f"{what} {loc.uri} does not exist; pass the --out folder of `cough featurize`")
    manifest_loc = loc.join(MANIFEST_FILE)
    if not manifest_loc.exists():
        raise CoughError(f"{what} {loc.uri} has no {MANIFEST_FILE}: is it a finished `cough featurize` output?")
    return FeaturesOut(loc, Manifest.read(manifest_loc, where=f"{what} {loc.uri}: {MANIFEST_FILE}"))


def shard_names(table: Location) -> list[str]:
    """The Parquet shards of one table folder, sorted."""
    return sorted(e.base_name for e in table.listdir()
                  if e.base_name.endswith(".parquet") and not e.base_name.startswith((".", "_")))


def shard_name(paths) -> str:
    return "part-" + hashlib.sha1("\n".join(paths).encode()).hexdigest()[:20] + ".parquet"


def write_table(table: pa.Table, where: "str | Location") -> None:
    """Write one shard. Dictionaries and statistics only for the small columns: on the tensor
    columns dictionaries cost 40% of the write and saved nothing that zstd does not (level 1:
    files 8% smaller than snappy with dictionaries, written 25% faster), and min/max over
    every pixel cost another 20% for statistics no reader can use (bench/profile_featurize.py;
    docs/benchmarks.md)."""
    loc = Location.of(where)
    if loc.local:  # object stores have no folders to make
        loc.fs.create_dir(loc.path.rsplit("/", 1)[0], recursive=True)
    small = [f.name for f in table.schema if not isinstance(f.type, pa.BaseExtensionType)]
    pq.write_table(table, loc.path, filesystem=loc.fs, use_dictionary=small, write_statistics=small,
                   compression="zstd", compression_level=1)


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
