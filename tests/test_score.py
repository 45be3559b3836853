"""score: PRED's rows, both kinds of SOURCE, incremental reruns, the Delta commit (exactly once,
concurrent runs, retried commits), PRED ownership, bad input. The same on s3://: test_s3.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from cough.score.settings import ScoreSettings
from cough.tables.artifacts import RunRecord
from cough.cli import main as cli
from cough.audio.features import DEFAULT_PARAMS
from cough.tables.pred import Pred, RunWriter, committed_runs
from cough.tables.scored import NOTHING_SCORED, scored_keys
from cough.tables.schema import pred_schema
from cough.score.stages import prepare_recordings, prepare_shards
from cough.tables.shards import read_out, shard_names
from cough.tables.storage import Location
from cough.synth import cough_signal, synth_archive
from cough.tables.archive import listing_table
from cough.tables.labels import load_labels
from cough.score import score

from .conftest import ROOT, SAMPLE
from .helpers import HOSTILE_PROBLEMS, SAMPLE_REJECTED, hostile_entries, pred_rows, same_rows, snapshot, write_model

KEY = ["path", "recording_id", "status", "score", "n_windows", "label"]




def _cough(path: Path, seed: int, *, seconds: float = 1.5) -> Path:
    y = cough_signal(np.random.default_rng(seed), positive=bool(seed % 2), sample_rate=16000, duration_s=seconds)
    sf.write(path, y, 16000)
    return path


# --- one run ------------------------------------------------------------------------------

def test_pred_has_one_row_per_file_with_scores_labels_and_versions(sample_pred, model_dir):
    rows = pred_rows(sample_pred)
    labels = pd.read_csv(SAMPLE / "labels.csv").set_index("filename")
    assert len(rows) == 60 and rows.path.is_unique
    assert list(rows.path[rows.status != "ok"].map(lambda p: Path(p).name)) == [SAMPLE_REJECTED]
    rows = rows[rows.status == "ok"]
    (record,) = committed_runs(Pred(Location.of(str(sample_pred))))  # one run, one Delta commit
    assert (record.run_id, record.scored, record.model) == (rows.run_id[0], 60, str(model_dir))
    assert record.source == str(SAMPLE / "raw")  # absolute URIs in the record
    meta = json.loads((model_dir / "model.json").read_text())
    assert (rows.model_version == meta["version"]).all() and (rows.featurizer_version == DEFAULT_PARAMS.version).all()
    for r in rows.itertuples():
        assert len(r.window_scores) == r.n_windows >= 1
        assert r.score == pytest.approx(float(np.mean(r.window_scores)))  # the documented rule: mean
        assert r.predicted == int(r.score >= meta["threshold"]) and 0 <= r.score <= 1
    truth = labels.loc[rows.path.map(lambda p: Path(p).name)]
    assert list(rows.label) == list(truth.label.map({"positive": 1, "negative": 0}))
    assert list(rows.participant) == list(truth.participant) and list(rows.site) == list(truth.site)
    assert rows.score.std() > 0  # a trained model tells recordings apart
    # the recording's own properties travel with its score, for the report's shortcut check
    assert rows.sample_rate.notna().all() and rows.channels.isin([1, 2]).all()
    assert (rows.duration_s > 0).all() and rows.format.notna().all()


def test_pred_reads_with_pandas_duckdb_and_ray_as_the_readme_shows(sample_pred, ray_local):
    import deltalake
    import duckdb
    import ray

    location = str(sample_pred)
    frame = deltalake.DeltaTable(location).to_pandas()
    pred = deltalake.DeltaTable(location).to_pyarrow_dataset()  # noqa: F841  (DuckDB finds it by name)
    counts = duckdb.sql("SELECT status, count(*) FROM pred GROUP BY status").fetchall()
    assert len(frame) == 60 and sorted(counts) == [("ok", 59), ("rejected", 1)]
    assert ray.data.read_delta(location).count() == 60


def test_featurize_out_and_raw_archive_give_identical_images_and_scores(sample_features, sample_pred, model_dir,
                                                                       tmp_path):
    index = load_labels(str(SAMPLE / "labels.csv"), str(SAMPLE / "raw"))
    meta_cols = index.metadata_columns
    raw = prepare_recordings(listing_table(str(SAMPLE / "raw"), index).rows, params=DEFAULT_PARAMS, min_cough_probability=0.5,
                             scored=NOTHING_SCORED, metadata_columns=meta_cols)
    features = read_out(str(sample_features))
    out = prepare_shards(pa.table({"shard": shard_names(features.recordings)}), recordings=features.recordings,
                         images=features.images, events=features.events, scored=NOTHING_SCORED,
                         metadata_columns=meta_cols)
    raw_images = dict(zip(raw["path"].to_pylist(), raw["images"].to_pylist()))
    out_images = dict(zip(out["path"].to_pylist(), out["images"].to_pylist()))
    assert raw_images.keys() == out_images.keys() and len(raw_images) == 60
    assert all(raw_images[p] == out_images[p] for p in raw_images)  # byte for byte

    pred = tmp_path / "pred"
    summary = score(str(sample_features), str(model_dir), str(pred)).to_dict()
    assert summary["scored"] == 60
    same_rows(pred_rows(pred), pred_rows(sample_pred))



def test_a_night_in_blocks_of_several_batches_scores_as_one_batch_per_block(sample_pred, model_dir, tmp_path,
                                                                          monkeypatch):
    """Past MAX_BLOCKS batches (a first night of 10⁶ files: 31,250 batches of 32), blocks hold
    several batches each, so that the driver keeps few blocks (its memory went from 349 MB at
    10⁵ files to 1.5 GB at 10⁶): the prepare tasks cut a block into its batches and the model
    sees bigger ones; every recording is scored once, with the same score."""
    from cough.tables import archive

    monkeypatch.setattr(archive, "MAX_BLOCKS", 1)  # 4 blocks per CPU all the same: 8 of 30 batches of 2
    pred = tmp_path / "pred"
    summary = score(str(SAMPLE / "raw"), str(model_dir), str(pred),
                    ScoreSettings(labels=str(SAMPLE / "labels.csv"), batch_size=2)).to_dict()
    assert summary["scored"] == 60
    same_rows(pred_rows(pred), pred_rows(sample_pred))

# --- incremental reruns ---------------------------------------------------------------------

def test_a_rerun_with_nothing_new_changes_nothing(sample_pred, model_dir, tmp_path):
    pred = tmp_path / "pred"
    shutil.copytree(sample_pred, pred)
    before = snapshot(pred)
    summary = score(str(SAMPLE / "raw"), str(model_dir), str(pred), ScoreSettings(labels=str(SAMPLE / "labels.csv"))).to_dict()
    assert (summary["skipped"], summary["scored"], summary["run_id"]) == (60, 0, None)
    assert snapshot(pred) == before


def test_only_new_and_changed_recordings_are_scored_and_rescore_replaces(sample_pred, model_dir, sample_archive,
                                                                        tmp_path):
    pred = tmp_path / "pred"
    shutil.copytree(sample_pred, pred)
    raw = sample_archive / "raw"
    synth_archive(tmp_path / "new", n=5, seed=99, max_duration_s=2)
    new = sorted((tmp_path / "new" / "raw").iterdir())
    for f in new:
        shutil.copy(f, raw / f"new-{f.name}")
    files = sorted(p for p in raw.iterdir() if not p.name.startswith("new-"))
    files[0].rename(raw / f"renamed-{files[0].name}")  # same bytes: not rescored
    _cough(files[1].with_suffix(".wav"), seed=1234)  # replaced by other bytes: rescored
    files[1].unlink()
    summary = score(str(raw), str(model_dir), str(pred)).to_dict()
    assert (summary["scored"], summary["skipped"]) == (6, 60 - 1)
    rows = pred_rows(pred)
    latest = rows[rows.run_id == summary["run_id"]]
    assert sorted(Path(p).name for p in latest.path) == sorted(
        [f"new-{f.name}" for f in new] + [files[1].with_suffix(".wav").name])
    assert rows.recording_id.is_unique and len(rows) == 66
    assert not (raw / f"renamed-{files[0].name}").as_posix() in set(rows.path)

    summary = score(str(raw), str(model_dir), str(pred), ScoreSettings(rescore=True)).to_dict()
    rows = pred_rows(pred)
    assert summary["scored"] == 65 and (rows.run_id == summary["run_id"]).all() and len(rows) == 65
    assert sorted(rows.path) == sorted(str(p) for p in raw.iterdir())
    from deltalake import DeltaTable

    last = DeltaTable(str(pred)).history(1)[0]  # replaced in one commit
    assert last["operationParameters"]["mode"] == "Overwrite" and last["cough.run"]["run_id"] == summary["run_id"]


@pytest.fixture
def make_writer():
    """``make_writer(pred, rows, run_id, read_version)``: a RunWriter holding ``rows``; every one
    made is closed after the test (its scratch folder is removed)."""
    made = []

    def make(pred: Path, rows: pd.DataFrame, run_id: str, read_version):
        schema = pred_schema(["site"])
        writer = RunWriter(Pred(Location.of(str(pred))), run_id, schema, read_version=read_version)
        made.append(writer)
        writer.add(pa.Table.from_pandas(rows.assign(run_id=run_id)[schema.names], schema=schema, preserve_index=False))
        return writer

    yield make
    for writer in made:
        writer.close()


def test_two_runs_that_overlap_leave_every_recording_exactly_once(sample_pred, tmp_path, make_writer):
    """Both read PRED at the same version and scored the same new files; the second to commit
    adds only what the first did not."""
    from deltalake import DeltaTable

    pred = tmp_path / "pred"
    shutil.copytree(sample_pred, pred)
    rows = pred_rows(pred).assign(model_version="m2")
    version = DeltaTable(str(pred)).version()
    first, second = make_writer(pred, rows[:40], "r1", version), make_writer(pred, rows[20:], "r2", version)
    record = RunRecord(model_version="m2")
    assert sum(first.commit(record, model_version="m2", rescore=False).values()) == 40
    assert sum(second.commit(record, model_version="m2", rescore=False).values()) == 20  # after one refused attempt
    m2 = pred_rows(pred).query("model_version == 'm2'")
    assert len(m2) == 60 and m2.recording_id.is_unique
    assert list(m2.sort_values("path").run_id) == ["r1"] * 40 + ["r2"] * 20
    assert len(scored_keys(DeltaTable(str(pred)), "m2").ids) == 60


def test_a_run_alone_commits_chunk_after_chunk_without_reading_pred_and_still_sees_another_run(sample_pred, tmp_path,
                                                                                              caplog, make_writer):
    """Only a commit by another run makes a chunk's commit read what PRED holds (all of this
    model version's ids: it grows with the archive); then the chunk adds only what PRED lacks."""
    import logging

    from deltalake import DeltaTable

    pred = tmp_path / "pred"
    shutil.copytree(sample_pred, pred)
    rows = pred_rows(pred).assign(model_version="m2")
    record = RunRecord(model_version="m2")
    writer = make_writer(pred, rows[:10], "r1", DeltaTable(str(pred)).version())
    caplog.set_level(logging.INFO, logger="cough.score")
    for chunk in (rows[10:20], rows[20:30], None):
        assert sum(writer.commit(record, model_version="m2", rescore=False).values()) == 10
        if chunk is not None:
            writer.add(pa.Table.from_pandas(chunk.assign(run_id="r1")[writer.schema.names], schema=writer.schema,
                                            preserve_index=False))
    assert "another run" not in caplog.text
    assert sum(make_writer(pred, rows[30:45], "r2", DeltaTable(str(pred)).version()).commit(
        record, model_version="m2", rescore=False).values()) == 15
    writer.add(pa.Table.from_pandas(rows[30:].assign(run_id="r1")[writer.schema.names], schema=writer.schema,
                                    preserve_index=False))
    assert sum(writer.commit(record, model_version="m2", rescore=False).values()) == 15
    assert "gained rows of model m2 from another run" in caplog.text
    m2 = pred_rows(pred).query("model_version == 'm2'")
    assert len(m2) == 60 and m2.recording_id.is_unique


def test_a_commit_retried_after_it_succeeded_changes_nothing(sample_pred, tmp_path, make_writer):
    from deltalake import DeltaTable

    pred = tmp_path / "pred"
    shutil.copytree(sample_pred, pred)
    rows = pred_rows(pred).assign(model_version="m2")
    version = DeltaTable(str(pred)).version()
    writer = make_writer(pred, rows, "r1", version)
    assert sum(writer.commit(RunRecord(model_version="m2"), model_version="m2", rescore=False).values()) == 60
    before = snapshot(pred)
    again = make_writer(pred, rows, "r1", version)  # the same chunk of the same run, committed again
    assert sum(again.commit(RunRecord(model_version="m2"), model_version="m2", rescore=False).values()) == 60  # found in the log
    assert snapshot(pred) == before and DeltaTable(str(pred)).transaction_version("cough-score-r1") == 1


def test_a_cough_0_1_pred_is_refused_with_how_to_convert_and_the_conversion_works(sample_pred, model_dir,
                                                                                   tmp_path, capsys):
    old = tmp_path / "old"
    rows = pred_rows(sample_pred)
    (old / "_runs").mkdir(parents=True)
    for run_id, part in (("20250101T000000Z-aaaaaa", rows[:30]), ("20250102T000000Z-bbbbbb", rows[30:])):
        (old / f"run-{run_id}").mkdir()
        part = part.drop(columns="run_id").assign(run_id=run_id).rename(columns={"participant": "group"})  # 0.1's name
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), old / f"run-{run_id}" / "part-00000.parquet")
        (old / "_runs" / f"{run_id}.json").write_text(json.dumps({"run_id": run_id, "model_version": "test-model"}))
    before = snapshot(old)
    code = cli(["score", str(SAMPLE / "raw"), "--model", str(model_dir), "--out", str(old)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "cough 0.1" in err[-1] and "convert_v01" in err[-1] and snapshot(old) == before
    new = tmp_path / "new"
    command = err[-1].split("python -c ", 1)[1].replace("NEW_PRED", str(new))
    subprocess.run(f"{sys.executable} -c {command}", shell=True, check=True, cwd=ROOT)
    converted = pred_rows(new)
    assert len(converted) == 60 and snapshot(old) == before
    assert list(converted["participant"]) == list(rows["participant"]) and "group" not in converted
    assert [r.run_id for r in committed_runs(Pred(Location.of(str(new))))] == sorted(set(converted.run_id))
    assert score(str(SAMPLE / "raw"), str(model_dir), str(new)).to_dict()["scored"] == 0  # nothing lost, nothing twice


# --- bad input ------------------------------------------------------------------------------

def test_bad_files_are_error_rows_with_reasons_and_exit_0(model_dir, tmp_path, ray_local, capsys):
    src = tmp_path / "messy"
    src.mkdir()
    _cough(src / "good.wav", seed=1)
    (src / "zero.mp3").write_bytes(b"")
    (src / "random.mp3").write_bytes(np.random.default_rng(0).bytes(4000))
    sf.write(src / "silent.wav", np.zeros(8000, np.float32), 8000)
    (tmp_path / "outside").mkdir()
    hostile_entries(src, tmp_path / "outside")  # a name that is not UTF-8 used to fail the whole run
    pred = tmp_path / "pred"
    args = ["score", str(src), "--model", str(model_dir), "--out", str(pred), "--json"]
    assert cli(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["inputs"], summary["ok"], summary["errors"], summary["rejected"]) == (13, 2, 10, 1)
    rows = pred_rows(pred).set_index(pred_rows(pred).path.map(lambda p: Path(p).name))
    assert "empty" in rows.error["zero.mp3"] and "not a recognised audio" in rows.error["random.mp3"]
    assert rows.status["silent.wav"] == "rejected" and rows.error["silent.wav"] == "no cough detected (p=0.00)"
    assert pd.isna(rows.error["good.wav"])
    assert all(HOSTILE_PROBLEMS[name] in rows.error[name] for name in HOSTILE_PROBLEMS)
    assert rows.status["caf\\xe9 latin-1.wav"] == "ok"
    assert rows.score[rows.status != "ok"].isna().all() and (rows.n_windows[rows.status != "ok"] == 0).all()
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,label\ngood.wav,positive\n")
    assert cli([*args, "--labels", str(labels)]) == 0  # broken files are not retried under the same model
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])["skipped"] == 13
    assert "--labels label only the recordings this run scores; the 13 seen before keep their rows" in err


def test_the_quality_gate_rejects_what_no_model_should_judge_and_off_scores_it(model_dir, tmp_path, ray_local,
                                                                               capsys):
    src = tmp_path / "quality"
    src.mkdir()
    _cough(src / "good.wav", seed=3)
    rng = np.random.default_rng(5)
    sf.write(src / "noise.wav", rng.uniform(-0.3, 0.3, 16000).astype(np.float32), 16000)
    sf.write(src / "clipped.wav", np.clip(4 * np.sin(np.arange(16000) / 5.0), -1, 1).astype(np.float32), 16000)
    sf.write(src / "silence.wav", np.zeros(16000, np.float32), 16000)

    def run(pred, *flags):
        assert cli(["score", str(src), "--model", str(model_dir), "--out", str(pred), "--json", *flags]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        rows = pred_rows(pred).set_index(pred_rows(pred).path.map(lambda p: Path(p).name))
        assert summary["inputs"] == summary["ok"] + summary["errors"] + summary["rejected"] == len(rows) == 4
        return summary, rows

    summary, rows = run(tmp_path / "detected")  # the detector's rule comes first: silence holds no cough
    assert rows.error["silence.wav"] == "no cough detected (p=0.00)" and rows.status["good.wav"] == "ok"

    summary, rows = run(tmp_path / "gated", "--min-cough-probability", "0")  # the quality gate alone
    assert (summary["ok"], summary["rejected"]) == (1, 3)
    assert rows.error["silence.wav"] == "no cough event found"
    assert rows.error["noise.wav"].startswith("too noisy: snr ")
    assert rows.error["clipped.wav"].startswith("clipped: ")
    assert rows.score[rows.status == "rejected"].isna().all()

    summary, rows = run(tmp_path / "ungated", "--no-quality-gate", "--min-cough-probability", "0")
    assert (summary["ok"], summary["rejected"]) == (4, 0)
    assert rows.score.notna().all()
    assert rows.n_events["silence.wav"] == 0 and rows.snr_db["noise.wav"] < 6
    assert rows.clipped_fraction["clipped.wav"] > 0.5 and rows.clipped_fraction["good.wav"] == 0


def _break_featurizer(m: Path):
    meta = json.loads((m / "model.json").read_text())
    meta["featurizer"]["window_s"] = 3.0
    (m / "model.json").write_text(json.dumps(meta))


def _meta_with(**changes):
    def damage(m: Path):
        meta = json.loads((m / "model.json").read_text())
        for key, value in changes.items():
            if key.startswith("featurizer."):
                meta["featurizer"][key.split(".", 1)[1]] = value
            else:
                meta[key] = value
        (m / "model.json").write_text(json.dumps(meta))  # NaN is written as JSON's NaN, as json.dump does
    return damage


@pytest.mark.parametrize("damage, message", [
    # these used to score every recording negative (NaN), accept 5, or fail after Ray started
    (_meta_with(threshold=float("nan")), "model.json has the decision threshold nan; it must be a number between 0 and 1"),
    (_meta_with(threshold=5), "model.json has the decision threshold 5; it must be a number between 0 and 1"),
    (_meta_with(threshold="0.5"), "model.json has the decision threshold '0.5'"),
    (_meta_with(arch="resnet"), "model.json names the architecture 'resnet', which this cough does not build"),
    (_meta_with(**{"featurizer.n_mels": -4}), "invalid featurizer parameters: featurizer parameter n_mels must be"),
    (_meta_with(**{"featurizer.colour": "red"}), "invalid featurizer parameters"),
    (lambda m: shutil.rmtree(m), "does not exist; pass the --out folder of `cough train`"),
    (lambda m: (m / "model.json").unlink(), "has no model.json"),
    (lambda m: (m / "model.json").write_text("{not json"), "model.json is unreadable"),
    (lambda m: (m / "model.json").write_text('{"arch": "pooled"}'), "model.json is unreadable or incomplete"),
    (lambda m: (m / "weights.h5").write_bytes(b"garbage" * 10), "not an HDF5 weights file"),
    (_break_featurizer, "made for featurizer version"),
])
def test_a_bad_model_is_one_line_exit_1_and_pred_untouched(model_dir, tmp_path, capsys, damage, message):
    bad = tmp_path / "model"
    shutil.copytree(model_dir, bad)
    damage(bad)
    pred = tmp_path / "pred"
    # an address nothing listens on: a check that waited for Ray would fail differently
    code = cli(["score", str(SAMPLE / "raw"), "--model", str(bad), "--out", str(pred), "--address", "127.0.0.1:9"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and message in err[0]
    assert not pred.exists()


def test_weights_of_another_architecture_fail_in_the_actors_with_one_line(model_dir, tmp_path, ray_local, capsys):
    bad = tmp_path / "model"
    shutil.copytree(model_dir, bad)
    meta = json.loads((bad / "model.json").read_text())
    (bad / "model.json").write_text(json.dumps({**meta, "arch": "seed"}))  # pooled weights
    pred = tmp_path / "pred"
    code = cli(["score", str(SAMPLE / "raw"), "--model", str(bad), "--out", str(pred)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and "cannot load weights.h5" in err[-1]
    assert not pred.exists()


def test_a_featurize_out_made_with_other_parameters_is_refused(sample_features, model_dir, tmp_path, capsys):
    other = tmp_path / "model"
    shutil.copytree(model_dir, other)
    meta = json.loads((other / "model.json").read_text())
    params = {**meta["featurizer"], "window_s": 3.0, "hop_s": 3.0}
    from cough.audio.features import FeaturizerParams

    meta.update(featurizer=params, featurizer_version=FeaturizerParams.from_dict(params).version)
    (other / "model.json").write_text(json.dumps(meta))
    pred = tmp_path / "pred"
    code = cli(["score", str(sample_features), "--model", str(other), "--out", str(pred)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and "was featurized with featurizer version" in err[-1] and not pred.exists()


@pytest.mark.shared
def test_the_real_archive_then_a_rerun_then_five_new_recordings(shared_archive, tmp_path, ray_local):
    src = tmp_path / "archive"
    src.mkdir()
    for f in (shared_archive / "raw").iterdir():
        shutil.copy(f, src / f.name)  # not symlinks: links out of SOURCE are not followed (24 MB)
    model, pred = write_model(tmp_path / "model"), tmp_path / "pred"
    labels = str(shared_archive / "labels.csv")
    first = score(str(src), str(model), str(pred), ScoreSettings(labels=labels)).to_dict()
    rows = pred_rows(pred)
    # the cough detector hears no cough in 6 recordings (one of the 12 the quality gate refused
    # before it), the gate 11 more whose coughs stand < 3 dB above their quietest frames
    assert (first["inputs"], first["ok"], first["errors"], first["rejected"]) == (1324, 1305, 2, 17)
    assert len(rows) == 1324 and rows.path.is_unique
    assert rows.error[rows.status != "ok"].str.len().gt(10).all()
    reasons = rows.error[rows.status == "rejected"].str.extract(r"^(too noisy: snr |no cough detected \(p=)")[0]
    assert reasons.value_counts().to_dict() == {"too noisy: snr ": 11, "no cough detected (p=": 6}
    # quality columns on the real channels: a call centre's 8 kHz line carries nothing above 4 kHz
    decoded = rows[rows.status != "error"]
    assert decoded[["snr_db", "bandwidth_hz", "clipped_fraction", "silence_fraction", "n_events"]].notna().all().all()
    assert (decoded.bandwidth_hz[decoded.sample_rate == 8000] <= 4000).all()
    assert decoded.bandwidth_hz[decoded.sample_rate == 48000].median() > 4000
    assert (decoded.n_events >= 1).all() and decoded.clipped_fraction.between(0, 0.05).all()
    before = snapshot(pred)
    assert score(str(src), str(model), str(pred), ScoreSettings(labels=labels)).to_dict()["scored"] == 0 and snapshot(pred) == before
    synth_archive(tmp_path / "new", n=5, seed=5, max_duration_s=2)
    for f in (tmp_path / "new" / "raw").iterdir():
        shutil.copy(f, src / f.name)
    third = score(str(src), str(model), str(pred), ScoreSettings(labels=labels)).to_dict()
    assert (third["scored"], third["skipped"]) == (5, 1324) and len(pred_rows(pred)) == 1329


def test_window_images_pack_into_one_buffer_and_come_back_for_any_slice():
    """Stage 1 hands the actors every recording's windows in one Arrow column; the actors
    read it back without copies, also from a slice of a batch (Ray Data cuts batches)."""
    import pyarrow as pa

    from cough.score.windowpack import pack, unpack

    rng = np.random.default_rng(0)
    stacks = [rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8) for n in (2, 1, 3)]
    column = pack([stacks[0], None, stacks[1], stacks[2]])
    assert column.null_count == 1 and column.type == pa.large_binary()
    images, counts = unpack(column, 4)
    np.testing.assert_array_equal(counts, [2, 0, 1, 3])
    np.testing.assert_array_equal(images, np.concatenate(stacks))
    images, counts = unpack(pa.chunked_array([column.slice(2)]), 4)
    np.testing.assert_array_equal(counts, [1, 3])
    np.testing.assert_array_equal(images, np.concatenate(stacks[1:]))


def test_a_run_that_reads_not_one_file_fails_commits_nothing_and_the_next_run_reads_them(model_dir, tmp_path,
                                                                                        ray_local, capsys):
    """Before, score committed the error rows and exited 0, and the ledger remembered the files:
    a night whose files its workers could not open said ok, and no later night read them again."""
    src = tmp_path / "raw"
    src.mkdir()
    for i in range(3):
        (src / f"call-{i}.wav").write_bytes(b"RIFF" + bytes(100 + i))
    pred = tmp_path / "pred"
    args = ["score", str(src), "--model", str(model_dir), "--out", str(pred), "--json"]
    assert cli(args) == 1
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert (summary["status"], summary["errors"], summary["commits"], summary["run_id"]) == ("error", 3, 0, None)
    assert err.strip().splitlines()[-1].startswith("cough score: error: every one of the 3 files to score under "
                                                   f"SOURCE {src} failed (e.g. {src}/call-")
    assert "nothing was committed, so the next run reads them again" in summary["error"] and not pred.exists()

    for i in range(3):  # the files become readable (on a cluster: the workers can now open them)
        _cough(src / f"call-{i}.wav", seed=i)
    assert cli(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["new"], again["scored"], again["errors"]) == (3, 3, 0)


def test_max_error_rate_fails_a_score_after_it_commits(model_dir, tmp_path, ray_local, capsys):
    src = tmp_path / "raw"
    src.mkdir()
    for i in range(3):
        _cough(src / f"call-{i}.wav", seed=i)
    (src / "broken.mp3").write_bytes(b"ID3" + bytes(200))
    pred = tmp_path / "pred"
    assert cli(["score", str(src), "--model", str(model_dir), "--out", str(pred), "--no-quality-gate",
                "--max-error-rate", "0.1", "--json"]) == 1
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert (summary["status"], summary["scored"], summary["errors"], summary["commits"]) == ("error", 4, 1, 1)
    assert "25.0% of the 4 files scored failed, over --max-error-rate 0.1 (committed all the same" in err
    assert len(pred_rows(pred)) == 4
