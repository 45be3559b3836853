"""The tables every job speaks (cough.tables.schema): column names and types that readers outside
cough (SQL engines, pandas, Delta readers) rely on, tensor columns through Parquet, cough 0.1's
names, and the version check of cough's JSON files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cough.audio.features import DEFAULT_PARAMS
from cough.audio.quality import QUALITY_COLUMNS
from cough.errors import CoughError
from cough.tables.archive import listing_schema
from cough.tables.artifacts import RunRecord
from cough.tables.schema import (INFO_COLUMNS, JSON_SCHEMA_VERSION, PRED_COLUMNS, RENAMED, check_schema_version,
                                 current_names, image_type, images_schema, log_mel_type, pred_schema,
                                 prepared_schema, recordings_schema, stored_names, tensor_column, to_numpy)
from cough.score.settings import ChunkCounts

S = DEFAULT_PARAMS.image_size

RECORDINGS = [
    ("recording_id", pa.string()), ("path", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("duration_s", pa.float64()), ("sample_rate", pa.int32()), ("channels", pa.int32()), ("format", pa.string()),
    ("n_windows", pa.int32()), ("snr_db", pa.float64()), ("bandwidth_hz", pa.float64()),
    ("clipped_fraction", pa.float64()), ("silence_fraction", pa.float64()), ("n_events", pa.int32()),
    ("label", pa.int8()), ("participant", pa.string())]


def _columns(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    return [(f.name, f.type) for f in schema]


def _in_order(expected: list[tuple[str, pa.DataType]], schema: pa.Schema) -> None:
    """Each expected column is in ``schema`` with its type, in this order (other columns may lie between)."""
    names = schema.names
    for name, kind in expected:
        assert name in names, name
        assert schema.field(name).type == kind, (name, schema.field(name).type, kind)
    positions = [names.index(name) for name, _ in expected]
    assert positions == sorted(positions), [name for name, _ in expected]


# ------------------------------------------------------------------ the schemas


def test_recordings_schema_columns_and_types_then_metadata_as_text():
    base = recordings_schema([])
    _in_order(RECORDINGS, base)
    assert base.names[:2] == ["recording_id", "path"]
    assert len(set(base.names)) == len(base.names)
    with_meta = recordings_schema(["site", "age"])
    assert _columns(with_meta) == _columns(base) + [("site", pa.string()), ("age", pa.string())]
    assert set(QUALITY_COLUMNS) <= set(base.names)


def test_images_schema_columns_and_tensor_types():
    schema = images_schema(["site"])
    _in_order([("recording_id", pa.string()), ("path", pa.string()), ("window_index", pa.int32()),
               ("label", pa.int8()), ("participant", pa.string()), ("image", image_type()),
               ("log_mel", log_mel_type())], schema)
    assert _columns(schema)[-1] == ("site", pa.string())
    image, log_mel = schema.field("image").type, schema.field("log_mel").type
    assert (image.value_type, list(image.shape)) == (pa.uint8(), [S, S, 3])
    assert (log_mel.value_type, list(log_mel.shape)) == (pa.float16(),
                                                         [DEFAULT_PARAMS.n_mels, DEFAULT_PARAMS.frames_per_window])
    small = dataclasses.replace(DEFAULT_PARAMS, image_size=32)
    assert list(images_schema([], small).field("image").type.shape) == [32, 32, 3]


def test_prepared_schema_is_a_recordings_row_the_file_version_and_its_images_last():
    schema = prepared_schema(["site"])
    recordings = recordings_schema(["site"])
    assert _columns(schema)[:len(recordings)] == _columns(recordings)
    _in_order([("file_size", pa.int64()), ("file_mtime_ns", pa.int64()), ("images", pa.large_binary())],
              pa.schema(list(schema)[len(recordings):]))
    assert schema.names[-1] == "images"


def test_pred_schema_columns_and_types():
    schema = pred_schema(["site"])
    _in_order([("recording_id", pa.string()), ("path", pa.string()), ("status", pa.string()),
               ("error", pa.string()), ("score", pa.float64()), ("predicted", pa.int8()), ("n_windows", pa.int32()),
               ("window_scores", pa.list_(pa.float32())), ("model_version", pa.string()),
               ("featurizer_version", pa.string()), ("run_id", pa.string()),
               ("scored_at", pa.timestamp("us", tz="UTC")), ("label", pa.int8()), ("participant", pa.string()),
               ("duration_s", pa.float64()), ("sample_rate", pa.int32()), ("channels", pa.int32()),
               ("format", pa.string()), *((c, recordings_schema([]).field(c).type) for c in QUALITY_COLUMNS),
               ("file_size", pa.int64()), ("file_mtime_ns", pa.int64())], schema)
    assert _columns(schema)[-1] == ("site", pa.string())  # metadata last, as text
    assert pred_schema([]).names == schema.names[:-1]
    # a recordings column that PRED carries has the recordings table's type
    recordings = recordings_schema([])
    assert all(schema.field(c).type == recordings.field(c).type for c in recordings.names if c in schema.names)
    # every column the report reads, except the threshold (kept in the run record), is one PRED holds
    assert set(PRED_COLUMNS) - set(schema.names) == {"threshold"}


def test_info_columns_come_from_the_labels_into_the_tables():
    assert INFO_COLUMNS[:2] == ("label", "participant")
    for schema in (recordings_schema([]), prepared_schema([]), pred_schema([])):
        assert set(INFO_COLUMNS) <= set(schema.names)
    for schema in (recordings_schema([]), images_schema([]), prepared_schema([]), pred_schema([])):
        assert schema.field("label").type == pa.int8() and schema.field("participant").type == pa.string()


SQL_RESERVED = {
    "all", "and", "any", "array", "as", "asc", "between", "both", "by", "case", "cast", "check", "column",
    "constraint", "create", "cross", "current_date", "current_time", "current_timestamp", "current_user", "default",
    "delete", "desc", "distinct", "else", "end", "except", "exists", "false", "fetch", "for", "foreign", "from",
    "full", "grant", "group", "having", "in", "index", "inner", "insert", "intersect", "interval", "into", "is",
    "join", "key", "leading", "left", "like", "limit", "natural", "not", "null", "offset", "on", "only", "or",
    "order", "outer", "over", "partition", "primary", "range", "references", "right", "rows", "select", "some",
    "table", "then", "to", "trailing", "true", "union", "unique", "update", "user", "using", "value", "values",
    "when", "where", "window", "with",
}


@pytest.mark.parametrize("schema", [recordings_schema([]), images_schema([]), prepared_schema([]), pred_schema([]),
                                    listing_schema([])], ids=["recordings", "images", "prepared", "pred", "listing"])
def test_no_column_is_named_by_an_sql_reserved_word(schema):
    assert SQL_RESERVED.isdisjoint(schema.names), sorted(SQL_RESERVED & set(schema.names))
    assert all(name == name.lower() and name.isidentifier() for name in schema.names)  # no quoting needed


def test_the_renamed_columns_were_the_sql_reserved_ones():
    assert RENAMED == {"group": "participant", "window": "window_index"}
    assert set(RENAMED) <= SQL_RESERVED and SQL_RESERVED.isdisjoint(RENAMED.values())


# ------------------------------------------------------------------ tensor columns


def test_image_and_log_mel_columns_round_trip_through_parquet(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, S, S, 3), dtype=np.uint8)
    mels = rng.normal(size=(3, DEFAULT_PARAMS.n_mels, DEFAULT_PARAMS.frames_per_window)).astype(np.float16)
    table = pa.table({"image": tensor_column(images, image_type()), "log_mel": tensor_column(mels, log_mel_type())})
    pq.write_table(table, tmp_path / "part.parquet")
    back = pq.read_table(tmp_path / "part.parquet")
    assert back.schema.field("image").type == image_type()
    got_images, got_mels = to_numpy(back["image"]), to_numpy(back["log_mel"])
    assert got_images.shape == images.shape and got_images.dtype == np.uint8
    assert got_mels.shape == mels.shape and got_mels.dtype == np.float16
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_mels, mels)


def test_tensor_column_of_several_chunks_and_of_no_rows(tmp_path):
    kind = pa.fixed_shape_tensor(pa.uint8(), [2, 2, 3])
    a, b = np.zeros((2, 2, 2, 3), np.uint8), np.full((1, 2, 2, 3), 7, np.uint8)
    chunked = pa.chunked_array([tensor_column(a, kind), tensor_column(b, kind)])
    np.testing.assert_array_equal(to_numpy(chunked), np.concatenate([a, b]))
    empty = tensor_column(np.zeros((0, 2, 2, 3)), kind)
    assert len(empty) == 0 and empty.type == kind
    pq.write_table(pa.table({"image": empty}), tmp_path / "empty.parquet")
    assert pq.read_table(tmp_path / "empty.parquet").num_rows == 0


def test_tensor_column_casts_to_the_columns_type():
    kind = pa.fixed_shape_tensor(pa.uint8(), [2, 2])
    column = tensor_column(np.array([[[1.0, 2.0], [3.0, 255.0]]]), kind)
    assert to_numpy(column).dtype == np.uint8 and to_numpy(column).tolist() == [[[1, 2], [3, 255]]]


def test_to_numpy_takes_ray_batches_as_they_come():
    stacked = np.ones((2, 3, 3), np.float32)
    assert to_numpy(stacked) is stacked  # already an ndarray: as is
    ragged = np.empty(2, dtype=object)  # Ray's object column: one array per row
    ragged[0], ragged[1] = np.zeros((3, 3)), np.ones((3, 3))
    assert to_numpy(ragged).shape == (2, 3, 3) and to_numpy(ragged)[1].sum() == 9


# ------------------------------------------------------------------ 0.1's names


def test_current_names_renames_01s_group_and_window():
    old = pa.table({"path": ["a"], "group": ["p1"], "window": [0]})
    assert current_names(old).column_names == ["path", "participant", "window_index"]
    assert current_names(old)["participant"].to_pylist() == ["p1"]
    frame = pd.DataFrame({"group": ["p1"], "window": [3]})
    assert list(current_names(frame).columns) == ["participant", "window_index"]
    assert current_names(frame)["window_index"].tolist() == [3]


def test_current_names_leaves_a_table_that_has_the_new_names():
    new = pa.table({"participant": ["p1"], "window_index": [0]})
    assert current_names(new) is new
    both = pa.table({"group": ["old"], "participant": ["new"]})  # the new name is there already: no clash
    assert current_names(both).column_names == ["group", "participant"]


def test_stored_names_asks_a_01_file_for_its_old_names():
    assert stored_names(["path", "participant", "window_index"], ["path", "group", "window", "image"]) == \
        ["path", "group", "window"]
    assert stored_names(["path", "participant", "window_index"], ["path", "participant", "window_index"]) == \
        ["path", "participant", "window_index"]
    assert stored_names(["participant"], ["path"]) == ["participant"]  # in neither: asked as is


# ------------------------------------------------------------------ JSON versions, run records


def test_check_schema_version_refuses_only_a_newer_cough():
    check_schema_version({"schema_version": JSON_SCHEMA_VERSION}, "manifest.json")
    check_schema_version({"schema_version": JSON_SCHEMA_VERSION - 1}, "manifest.json")
    check_schema_version({}, "manifest.json")  # cough 0.1 wrote none: version 1
    for doc in ({"schema_version": JSON_SCHEMA_VERSION + 1}, {"schema_version": "1"}):
        with pytest.raises(CoughError) as err:
            check_schema_version(doc, "OUT/manifest.json")
        assert err.value.exit_code == 1
        assert str(err.value).startswith(f"OUT/manifest.json has schema_version {doc['schema_version']!r}")
        assert "upgrade cough" in str(err.value)


def test_chunk_counts_are_the_run_records_chunk_counts_in_order():
    assert tuple(f.name for f in dataclasses.fields(ChunkCounts)) == RunRecord.CHUNK_COUNTS
    assert set(RunRecord.CHUNK_COUNTS) <= {f.name for f in dataclasses.fields(RunRecord)}
