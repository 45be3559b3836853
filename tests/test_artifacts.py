"""The typed JSON records (cough/tables/artifacts.py): every file cough wrote reads back and writes
out unchanged, and a bad field is refused by name with what to do."""

from __future__ import annotations

import json

import pytest

from cough.model.meta import ModelMeta
from cough.tables.artifacts import Manifest, Metrics, RunRecord
from cough.errors import CoughError

MANIFEST = {"schema_version": 1, "inputs": 3, "ok": 2, "errors": 1, "images": 5, "kind": "featurize",
            "version": "v1", "tables": {"images": "images/v1", "recordings": "recordings/v1"},
            "source": "/data/raw", "labels": None, "group_pattern": None,
            "featurizer": {"image_size": 150, "colormap": "magma"}, "featurizer_version": "f1",
            "metadata_columns": ["site"], "cough_version": "0.2.0", "created_at": "2024-01-01T00:00:00+00:00"}
MODEL = {"arch": "pooled", "parameters": 65000, "class_names": ["negative", "positive"], "featurizer": {},
         "featurizer_version": "f1", "splits": {"train": {"groups": ["a", 1]}, "val": {"groups": ["b"]},
                                                "test": {"groups": ["c"]}},
         "threshold": 0.4, "metrics": {"val": {"auc": None}}, "history": [], "training": {"wall_s": 1.0},
         "version": "0123456789abcdef", "weights": "weights-0123456789abcdef.h5", "kind": "train",
         "schema_version": 1, "from_a_later_cough": {"kept": True}}

#: A chunk's record as `cough score` commits it (cough/score/job.py, cough/tables/pred.py).
RUN = {"model_version": "m1", "featurizer_version": "f1", "source": "/data/raw", "model": "/models/m1",
       "rescore": False, "labels": None, "prefixes": [], "since": "2026-11-24",
       "quality_gate": {"min_snr_db": 6.0}, "metadata_columns": ["site"], "cough_version": "0.2.0",
       "inputs": 9, "listed": 9, "new": 7, "changed": 1, "seen_before": 1, "scored": 5, "ok": 4, "errors": 1,
       "rejected": 0, "duplicates": 0, "bytes_read": 1234, "run_id": "20261124T020000Z-abcdef", "chunk": 1}


@pytest.mark.parametrize("record, data", [(Manifest, MANIFEST), (ModelMeta, MODEL), (RunRecord, RUN)])
def test_a_record_writes_back_what_it_read(record, data):
    assert record.from_dict(json.loads(json.dumps(data))).to_dict() == data


def test_a_cough_0_1_manifest_reads_with_its_tables_in_out_folders():
    old = {k: v for k, v in MANIFEST.items() if k not in ("tables", "schema_version")}
    manifest = Manifest.from_dict(old)
    assert manifest.tables == {"images": "images", "recordings": "recordings"}
    assert manifest.image_size == 150 and manifest.metadata_columns == ["site"]


@pytest.mark.parametrize("record, data, message", [
    (Manifest, {**MANIFEST, "images": "5"}, "manifest.json: 'images' must be a whole number >= 0, not '5'; "
                                            "featurize again"),
    (Manifest, {k: v for k, v in MANIFEST.items() if k != "featurizer_version"},
     "manifest.json lacks 'featurizer_version'; featurize again"),
    (Manifest, {**MANIFEST, "featurizer": {}}, "'featurizer.image_size' must be a whole number of pixels"),
    (Manifest, {**MANIFEST, "labels": 3}, "'labels' must be a string or null, not 3"),
    (Manifest, [MANIFEST], "holds a JSON list, not an object"),
    (ModelMeta, {**MODEL, "threshold": 5}, "model.json has the decision threshold 5; it must be a number between 0 and 1"),
    (ModelMeta, {**MODEL, "arch": "resnet"}, "names the architecture 'resnet', which this cough does not build"),
    (ModelMeta, {**MODEL, "splits": ["a"]}, "'splits' must be an object, not ['a']; retrain the model"),
    (ModelMeta, {**MODEL, "schema_version": 2}, "upgrade cough"),
    (Metrics, {"n": 3, "n_groups": 2}, "metrics.json lacks 'threshold'; rerun `cough report`"),
    (Metrics, {"n": 3, "n_groups": 2, "threshold": 0.5, "auc": float("nan")}, "'auc' must be a finite number or null"),
])
def test_a_bad_field_is_refused_by_name_with_what_to_do(record, data, message):
    with pytest.raises(CoughError, match=None) as refused:
        record.from_dict(data)
    assert message in str(refused.value)


def test_a_minimal_model_json_holds_only_what_it_says():
    meta = ModelMeta.from_dict({"version": "m1", "threshold": 0.3})
    assert (meta.threshold, meta.arch, meta.training_groups()) == (0.3, None, None)
    assert meta.to_dict() == {"version": "m1", "threshold": 0.3}
    assert ModelMeta.from_dict(MODEL).training_groups() == {"a", "1", "b"}


def test_a_run_record_of_cough_0_1_reads_with_its_own_keys_kept():
    old = {"model_version": "m1", "source": "/data/raw", "labels": None, "inputs": 3, "scored": 3, "ok": 3,
           "errors": 0, "skipped": 0, "run_id": "r1", "rows": 3, "parts": 1, "supersedes": [],
           "committed_at": "2025-01-01T00:00:00+00:00"}
    record = RunRecord.from_dict(old)
    assert (record.run_id, record.scored, record.skipped, record.listed) == ("r1", 3, 0, None)
    assert record.extra == {"rows": 3, "parts": 1, "supersedes": [], "committed_at": "2025-01-01T00:00:00+00:00"}


def test_a_runs_chunks_add_up_to_one_record():
    first = RunRecord.from_dict(RUN)
    second = RunRecord.from_dict({**RUN, "scored": 2, "ok": 1, "errors": 0, "rejected": 1, "duplicates": 3,
                                  "bytes_read": 10, "chunk": 2})
    run = second.after(first.after(None))
    assert (run.scored, run.ok, run.errors, run.rejected, run.duplicates, run.bytes_read) == (7, 5, 1, 1, 3, 1244)
    assert (run.chunk, run.listed, run.skipped) == (2, 9, 1 + 3)  # skipped: seen before + duplicates


def test_a_bad_run_record_is_refused_by_name():
    with pytest.raises(CoughError, match="'scored' must be a whole number >= 0, not -1"):
        RunRecord.from_dict({**RUN, "scored": -1})
