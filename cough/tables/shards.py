"""OUT, the output of ``cough featurize``: Parquet shards committed by a manifest written last.

::

    OUT/.cough-output.json                 owner marker (written first: OUT belongs to featurize)
    OUT/images/<version>/part-*.parquet    one row per window: the image, its log-mel, where it lies
                                           (start_s, end_s), label, participant
    OUT/recordings/<version>/part-*.parquet one row per input file: ok, error or rejected with a reason
    OUT/events/<version>/part-*.parquet    one row per cough the detector found (start_s, end_s, probability)
    OUT/manifest.json                      the commit: counts, featurizer, and which <version> is OUT

A run writes its shards under a new ``<version>`` and commits by writing ``manifest.json``;
then it deletes the other versions. Readers go through the manifest (:func:`read_out`).
Shard names are a hash of the batch's paths, so a task that Ray retries after a node loss
rewrites the same files instead of adding duplicates. See docs/storage.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from .artifacts import Manifest
from ..errors import CoughError
from .storage import Location

KIND = "featurize"
MANIFEST_FILE = Manifest.FILE
TABLES = ("images", "recordings", "events")


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

    @property
    def events(self) -> Location | None:
        """The cough events table (None in an OUT made before the detector)."""
        return self.loc.join(self.info.tables["events"]) if "events" in self.info.tables else None


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


def shard_writer(schema: pa.Schema, where: "str | Location") -> pq.ParquetWriter:
    """A writer of one shard, for tables written a part at a time (each ``write_table`` a row
    group; close it). Dictionaries and statistics only for the small columns: on the tensor
    columns dictionaries cost 40% of the write and saved nothing that zstd does not (level 1:
    files 8% smaller than snappy with dictionaries, written 25% faster), and min/max over
    every pixel cost another 20% for statistics no reader can use (bench/profile_featurize.py;
    docs/benchmarks.md)."""
    loc = Location.of(where)
    if loc.local:  # object stores have no folders to make
        loc.fs.create_dir(loc.path.rsplit("/", 1)[0], recursive=True)
    small = [f.name for f in schema if not isinstance(f.type, pa.BaseExtensionType)]
    return pq.ParquetWriter(loc.path, schema, filesystem=loc.fs, use_dictionary=small, write_statistics=small,
                            compression="zstd", compression_level=1)


def write_table(table: pa.Table, where: "str | Location") -> None:
    """Write one shard whole (:func:`shard_writer`'s options)."""
    with shard_writer(table.schema, where) as writer:
        writer.write_table(table)


