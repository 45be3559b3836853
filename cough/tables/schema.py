"""The tables every job speaks: ``recordings`` (one row per input file), ``images`` (one row
per window), score's stage 1 (a recording with its window images, in memory only) and PRED
(one row per scored file version). Column order and types live here and nowhere else
(the file ledger's and the listing's, internal to cough/tables/ledger.py and cough/tables/archive.py,
beside their code)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..audio.features import DEFAULT_PARAMS, FeaturizerParams
from ..audio.quality import QUALITY_COLUMNS

#: Version of the layout of every JSON file cough writes (featurize's manifest.json, a
#: MODEL's model.json, a REPORT's metrics.json, cough synth's synth.json), in each as
#: ``schema_version``; raised when a key changes meaning or goes away. Files without
#: it are from cough 0.1 and read as version 1.
JSON_SCHEMA_VERSION = 1


def check_schema_version(doc: dict, where: str) -> None:
    """A CoughError when ``doc`` was written by a newer cough than this one."""
    from ..errors import CoughError

    version = doc.get("schema_version", 1)
    if not isinstance(version, int) or version > JSON_SCHEMA_VERSION:
        raise CoughError(f"{where} has schema_version {version!r}, newer than this cough reads "
                         f"({JSON_SCHEMA_VERSION}): upgrade cough")


RECORDING_FIELDS = [
    pa.field("recording_id", pa.string()),
    pa.field("path", pa.string()),
    pa.field("status", pa.string()),
    pa.field("error", pa.string()),
    pa.field("duration_s", pa.float64()),
    pa.field("sample_rate", pa.int32()),
    pa.field("channels", pa.int32()),
    pa.field("format", pa.string()),
    pa.field("n_windows", pa.int32()),
    # quality (cough.audio.quality), measured on every decoded recording
    pa.field("snr_db", pa.float64()),
    pa.field("bandwidth_hz", pa.float64()),
    pa.field("clipped_fraction", pa.float64()),
    pa.field("silence_fraction", pa.float64()),
    pa.field("n_events", pa.int32()),
    # the cough detector (cough.audio.detector): P(the recording holds a cough), the coughs it
    # found, and the windows cut from the start that no kept window overlaps
    pa.field("cough_probability", pa.float64()),
    pa.field("n_coughs", pa.int32()),
    pa.field("dropped_windows", pa.int32()),
    pa.field("label", pa.int8()),
    pa.field("participant", pa.string()),
    # the cough span annotated in the labels CSV, when one is given
    pa.field("cough_start_s", pa.float64()),
    pa.field("cough_end_s", pa.float64()),
]


#: Columns a recording row takes from the labels, besides the metadata columns.
INFO_COLUMNS = ("label", "participant", "cough_start_s", "cough_end_s")
#: The detector's columns of a recording row.
DETECTOR_COLUMNS = ("cough_probability", "n_coughs", "dropped_windows")
#: One cough event: where it lies in its recording and how sure the detector is.
EVENT_TYPE = pa.struct([pa.field("start_s", pa.float32()), pa.field("end_s", pa.float32()),
                        pa.field("cough_probability", pa.float32())])
#: One scored window: where it lies in its recording and the model's P(positive).
WINDOW_TYPE = pa.struct([pa.field("start_s", pa.float32()), pa.field("end_s", pa.float32()),
                         pa.field("score", pa.float32())])
#: The file version a row came from (cough.tables.listing.Entry; null when SOURCE is a featurize OUT).
FILE_FIELDS = [pa.field("file_size", pa.int64()), pa.field("file_mtime_ns", pa.int64())]


#: What the shortcut baseline may see: how a recording was made, never what it sounds like.
METADATA_FEATURES = ("sample_rate", "channels", "duration_s", "format")
#: PRED columns the report reads when present (window_scores and the like are skipped).
PRED_COLUMNS = ("recording_id", "path", "status", "error", "score", "predicted", "threshold", "model_version",
                "featurizer_version", "run_id", "scored_at", "label", "participant", *METADATA_FEATURES)


#: Columns renamed in cough 0.2, away from SQL reserved words (``SELECT group`` fails): old
#: name -> new. Inputs that carry the old names (a 0.1 featurize OUT or PRED, a labels CSV
#: with a ``group`` column) are still read, under the new names.
RENAMED = {"group": "participant", "window": "window_index"}


def current_names(table):
    """``table`` (a pyarrow Table or a pandas DataFrame) with 0.1's column names renamed
    (:data:`RENAMED`), where the new name is not there already."""
    names = list(table.column_names if isinstance(table, pa.Table) else table.columns)
    rename = {old: new for old, new in RENAMED.items() if old in names and new not in names}
    if not rename:
        return table
    if isinstance(table, pa.Table):
        return table.rename_columns([rename.get(n, n) for n in names])
    return table.rename(columns=rename)


def stored_names(wanted, available) -> list[str]:
    """The names under which the ``wanted`` columns are stored in a file whose columns are
    ``available`` (0.1's names in a 0.1 file); read them, then apply :func:`current_names`.

    >>> stored_names(["path", "window_index"], ["path", "window", "image"])
    ['path', 'window']
    """
    old = {new: old for old, new in RENAMED.items()}
    return [old[c] if c not in available and old.get(c) in available else c for c in wanted]


def image_type(params: FeaturizerParams = DEFAULT_PARAMS) -> pa.DataType:
    return pa.fixed_shape_tensor(pa.uint8(), [params.image_size, params.image_size, 3])


def log_mel_type(params: FeaturizerParams = DEFAULT_PARAMS) -> pa.DataType:
    return pa.fixed_shape_tensor(pa.float16(), [params.n_mels, params.frames_per_window])


def recordings_schema(metadata_columns: list[str]) -> pa.Schema:
    return pa.schema(RECORDING_FIELDS + [pa.field(c, pa.string()) for c in metadata_columns])


def images_schema(metadata_columns: list[str], params: FeaturizerParams = DEFAULT_PARAMS) -> pa.Schema:
    return pa.schema([
        pa.field("recording_id", pa.string()),
        pa.field("path", pa.string()),
        pa.field("window_index", pa.int32()),
        pa.field("start_s", pa.float32()),
        pa.field("end_s", pa.float32()),
        pa.field("label", pa.int8()),
        pa.field("participant", pa.string()),
        pa.field("image", image_type(params)),
        pa.field("log_mel", log_mel_type(params)),
    ] + [pa.field(c, pa.string()) for c in metadata_columns])


def events_schema() -> pa.Schema:
    """featurize's ``events`` table: one row per cough the detector found, in every recording
    that decoded (kept or rejected)."""
    return pa.schema([
        pa.field("recording_id", pa.string()),
        pa.field("path", pa.string()),
        pa.field("event_index", pa.int32()),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("cough_probability", pa.float32()),
    ])


def prepared_schema(metadata_columns: list[str]) -> pa.Schema:
    """Stage 1's rows: a ``recordings`` row, the file version it came from, its cough events,
    where its windows lie, and its window images (``n_windows`` × S×S×3 uint8 bytes)."""
    schema = recordings_schema(metadata_columns)
    for field in [*FILE_FIELDS, pa.field("events", pa.list_(EVENT_TYPE)),
                  pa.field("window_start_s", pa.list_(pa.float32())), pa.field("window_end_s", pa.list_(pa.float32()))]:
        schema = schema.append(field)
    return schema.append(pa.field("images", pa.large_binary()))


def pred_schema(metadata_columns: list[str]) -> pa.Schema:
    """PRED's rows, one per input file version: the ``recordings`` columns (so reports can
    check sample rate, channels, duration and format for shortcuts) plus the scores, and the
    file's size and modification time (a file rewritten under the same path gets a second
    row). ``predicted`` and ``label``: 1 positive, 0 negative. ``window_scores``: each
    window's P(positive), in order; ``windows``: the same with where each window lies
    (start_s, end_s, score); ``events``: the detector's coughs (start_s, end_s, cough_probability)."""
    recording = {f.name: f for f in RECORDING_FIELDS}
    return pa.schema([
        *(recording[c] for c in ("recording_id", "path", "status", "error")),
        pa.field("score", pa.float64()),
        pa.field("predicted", pa.int8()),
        recording["n_windows"],
        pa.field("window_scores", pa.list_(pa.float32())),
        pa.field("windows", pa.list_(WINDOW_TYPE)),
        pa.field("model_version", pa.string()),
        pa.field("featurizer_version", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("scored_at", pa.timestamp("us", tz="UTC")),
        *(recording[c] for c in ("label", "participant", "duration_s", "sample_rate", "channels", "format",
                                 *QUALITY_COLUMNS, *DETECTOR_COLUMNS, "cough_start_s", "cough_end_s")),
        pa.field("events", pa.list_(EVENT_TYPE)),
        *FILE_FIELDS,
        *[pa.field(c, pa.string()) for c in metadata_columns],
    ])


def tensor_column(values: np.ndarray, dtype: pa.DataType) -> pa.Array:
    """``(n, *shape)`` numpy → a fixed-shape tensor column (empty-safe)."""
    shape = tuple(dtype.shape)
    values = np.ascontiguousarray(values, dtype=dtype.value_type.to_pandas_dtype()).reshape((-1, *shape))
    storage = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), int(np.prod(shape)))
    return pa.ExtensionArray.from_storage(dtype, storage)


def to_numpy(column) -> np.ndarray:
    """A fixed-shape tensor column (pyarrow or Ray's own numpy batch) → ``(n, *shape)`` ndarray.

    >>> column = tensor_column(np.zeros((2, 4, 4, 3)), pa.fixed_shape_tensor(pa.uint8(), [4, 4, 3]))
    >>> to_numpy(column).shape, to_numpy(column).dtype
    ((2, 4, 4, 3), dtype('uint8'))

    Read from a featurize OUT: ``to_numpy(pq.read_table("OUT/images", columns=["image"])["image"])``.
    """
    if isinstance(column, np.ndarray) and column.dtype != object:
        return column
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if isinstance(column, pa.ExtensionArray) and hasattr(column, "to_numpy_ndarray"):
        return column.to_numpy_ndarray()
    return np.stack(list(column))
