"""The typed JSON records (cough/artifacts.py): every file cough wrote reads back and writes
out unchanged, and a bad field is refused by name with what to do."""

from __future__ import annotations

import json

import pytest

from cough.artifacts import Manifest, Metrics, ModelMeta
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


@pytest.mark.parametrize("record, data", [(Manifest, MANIFEST), (ModelMeta, MODEL)])
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
