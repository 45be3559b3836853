"""Conventions of what cough ships and writes: the licence pyproject names, versioned JSON
files that a cough refuses when a newer one wrote them, and the docs' figures for the
shared archive computed from the archive itself."""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import tomllib

import pytest

from cough.errors import CoughError

from .conftest import ROOT


def test_the_license_file_is_the_apache_2_text_pyproject_names():
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) > 190


def test_json_written_by_a_newer_cough_is_refused(tmp_path, sample_features):
    import shutil

    from cough.model.store import read_model_meta
    from cough.train.trainset import read_manifest

    assert read_manifest(str(sample_features)).info.schema_version == 1
    shards = tmp_path / "shards"
    shutil.copytree(sample_features, shards)
    manifest = json.loads((shards / "manifest.json").read_text())
    (shards / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 2}))
    with pytest.raises(CoughError, match="newer than this cough reads"):
        read_manifest(str(shards))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text(json.dumps({"schema_version": 2, "threshold": 0.5}))
    with pytest.raises(CoughError, match="upgrade cough"):
        read_model_meta(str(tmp_path / "model"))


@pytest.mark.shared
def test_the_docs_give_the_shared_archives_duplicates_as_computed(shared_archive):
    digests = collections.defaultdict(list)
    for f in sorted((shared_archive / "raw").iterdir()):
        digests[hashlib.sha256(f.read_bytes()).hexdigest()].append(f.name)
    labels = {r["filename"]: r["label"] for r in csv.DictReader(open(shared_archive / "labels.csv"))}
    copied = [names for names in digests.values() if len(names) > 1]
    clashing = [names for names in copied if len({labels[n] for n in names}) > 1]
    files, distinct = sum(map(len, digests.values())), len(digests)
    extra, top = sum(len(n) - 1 for n in copied), max(map(len, copied))
    assert (files, distinct, len(copied), extra, len(clashing)) == (1324, 1201, 115, 123, 112)
    for doc in ("results.md", "train.md", "score.md"):
        text = " ".join((ROOT / "docs" / doc).read_text().split())
        assert f"{len(copied)} recordings appear under 2–{top} names" in text and f"{extra} extra copies" in text, doc
        assert f"{len(clashing)} of them" in text, doc
    for doc in ("results.md", "train.md"):
        assert f"{files} files hold {distinct} distinct recordings" in " ".join((ROOT / "docs" / doc).read_text().split())


def _as_0_1(new, old):
    """Copy the featurize OUT ``new`` into ``old`` as cough 0.1 laid it out: the tables
    directly in images/ and recordings/, columns group and window, a manifest without
    tables or schema_version."""
    import pyarrow.parquet as pq

    from cough.tables.schema import RENAMED

    back = {new_name: old_name for old_name, new_name in RENAMED.items()}
    manifest = json.loads((new / "manifest.json").read_text())
    for table, folder in manifest.pop("tables").items():
        (old / table).mkdir(parents=True)
        for part in (new / folder).glob("*.parquet"):
            data = pq.read_table(part)
            pq.write_table(data.rename_columns([back.get(n, n) for n in data.column_names]), old / table / part.name)
    manifest.pop("schema_version")
    (old / "manifest.json").write_text(json.dumps(manifest))


def test_a_cough_0_1_featurize_out_is_still_read(tmp_path, sample_features, ray_local):
    import pyarrow.parquet as pq

    from cough.tables.shards import read_out
    from cough.train.splits import split_datasets
    from cough.train.trainset import read_index
    from cough.score import score

    from .helpers import write_model

    old = tmp_path / "old"
    _as_0_1(sample_features, old)
    assert {"group", "window"} <= set(pq.read_schema(next((old / "images").glob("*.parquet"))).names)
    index = read_index(read_out(str(old)))
    new = read_index(read_out(str(sample_features)))
    order = ["path", "window_index"]
    assert list(index.columns) == list(new.columns)
    assert index.sort_values(order).reset_index(drop=True).equals(new.sort_values(order).reset_index(drop=True))
    members = sorted(index["participant"].dropna().unique())[:3]
    rows = split_datasets(read_out(str(old)).images, {"train": members}, [])["train"].take_all()
    assert rows and {"window_index", "recording_id", "label", "image"} == set(rows[0])
    assert len(rows) == int(index["participant"].isin(members).sum())

    pred = tmp_path / "pred"
    summary = score(str(old), str(write_model(tmp_path / "model")), str(pred)).to_dict()
    from deltalake import DeltaTable

    rows = DeltaTable(str(pred)).to_pandas()
    scored = rows[rows["status"] == "ok"].set_index("path").sort_index()
    truth = new.drop_duplicates("path").set_index("path").sort_index()
    # every recording with windows is scored; the one the detector rejected (SAMPLE_REJECTED) is a rejected row
    assert (summary["ok"], summary["rejected"], summary["scored"]) == (len(truth), 1, len(truth) + 1)
    assert (scored["participant"] == truth["participant"]).all()
