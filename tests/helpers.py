"""Helpers that several test modules share: a MODEL as `cough train` writes it, a PRED as
`cough score` writes it, reading and snapshotting outputs, a hostile archive, report inputs.
Fixtures live in tests/conftest.py; Ray clusters on loopback in tests/cluster.py."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
from deltalake import CommitProperties, DeltaTable, write_deltalake

from cough.audio.features import DEFAULT_PARAMS
from cough.audio.quality import QUALITY_COLUMNS
from cough.report import write_report
from cough.tables.pred import RUN_KEY
from cough.synth import cough_signal
from cough.tables.schema import DETECTOR_COLUMNS, pred_schema, to_numpy

#: The one sample recording the cough detector rejects: 0.33 s, one burst, p=0.19 (docs/results.md).
SAMPLE_REJECTED = "s7p00002-1.ogg"


def write_model(model_dir: Path, *, arch: str = "pooled", version: str = "test-model", threshold: float = 0.5,
                train_on: Path | None = None) -> Path:
    """A MODEL as `cough train` writes it (weights.h5 + model.json), optionally fit one epoch."""
    from cough.model.networks import build_model

    model = build_model(arch)
    if train_on is not None:
        table = pq.read_table(train_on / "images", columns=["image", "label"])
        labels = np.asarray(table["label"].to_pylist(), dtype=np.int64)
        model.fit(to_numpy(table["image"]).astype(np.float32) / 255.0, np.eye(2)[labels], epochs=1,
                  batch_size=16, verbose=0)
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_weights(model_dir / "weights.h5")
    meta = {"arch": arch, "featurizer": DEFAULT_PARAMS.to_dict(), "featurizer_version": DEFAULT_PARAMS.version,
            "class_names": ["negative", "positive"], "threshold": threshold, "version": version}
    (model_dir / "model.json").write_text(json.dumps(meta))
    return model_dir


def pred_rows(pred) -> pd.DataFrame:
    """PRED's rows, read as any Delta reader would."""
    from deltalake import DeltaTable

    return DeltaTable(str(pred)).to_pandas().sort_values("path").reset_index(drop=True)


def store_rows(pred: str) -> pd.DataFrame:
    """PRED's rows on any store (``s3://...``), sorted by file name, with that ``name`` column."""
    from cough.tables.delta import storage_options

    frame = DeltaTable(pred, storage_options=storage_options()).to_pandas()
    return frame.assign(name=frame.path.map(lambda p: Path(p).name)).sort_values("name").reset_index(drop=True)


def store_objects(uri: str) -> dict:
    """Every object under ``uri`` on any store: key -> (size, mtime): what a rerun must leave alone."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    return {i.path: (i.size, i.mtime) for i in fs.get_file_info(pafs.FileSelector(path, recursive=True,
                                                                                  allow_not_found=True))
            if i.type == pafs.FileType.File}


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.path) == list(b.path)
    assert list(a.recording_id) == list(b.recording_id) and list(a.status) == list(b.status)
    np.testing.assert_allclose(a.score.astype(float), b.score.astype(float), atol=1e-5)


N_BOOT = 200


METADATA = ["duration_s", "sample_rate", "channels", "format"]


def write_pred(pred, frame: pd.DataFrame, *, meta_columns=(), recording_metadata=False, record_extra=None):
    """Write ``frame`` (columns score, label, participant, ...; optional run_id, status, error) as PRED."""
    frame = frame.copy().reset_index(drop=True)
    n = len(frame)
    defaults = {"recording_id": [f"{i:032x}" for i in range(n)], "path": [f"/archive/raw/r{i}.mp3" for i in range(n)],
                "status": "ok", "error": None, "n_windows": 1, "model_version": "m1", "featurizer_version": "f1",
                "run_id": "20260101T000000Z-aaaaaa", "participant": [f"g{i}" for i in range(n)], "label": None,
                "file_size": None, "file_mtime_ns": None, **{c: None for c in (*QUALITY_COLUMNS, *DETECTOR_COLUMNS)},
                "cough_start_s": None, "cough_end_s": None, "events": None}
    for col, value in defaults.items():
        if col not in frame:
            frame[col] = value
    frame["status"] = frame["status"].fillna("ok")
    if "predicted" not in frame:
        frame["predicted"] = (frame["score"] >= 0.5).astype("Int8").where(frame["score"].notna())
    frame["window_scores"] = [[s] if s == s else [] for s in frame["score"]]
    frame["windows"] = [[{"start_s": 0.0, "end_s": 2.0, "score": s}] if s == s else [] for s in frame["score"]]
    schema = pred_schema(list(meta_columns))
    if not recording_metadata:  # as a PRED written without the recordings' own columns
        schema = pa.schema([f for f in schema if f.name not in METADATA])
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    for k, (run_id, rows) in enumerate(frame.groupby("run_id", sort=True)):
        rows = rows.assign(scored_at=start + dt.timedelta(days=k))
        table = pa.Table.from_pandas(rows[schema.names], schema=schema, preserve_index=False)
        record = {"run_id": run_id, "model_version": "m1", "skipped": 0, **(record_extra or {})}
        write_deltalake(str(pred), table, mode="append", schema_mode="merge",
                        commit_properties=CommitProperties(custom_metadata={RUN_KEY: record}))
    return pred


def report(tmp_path, frame, **kwargs):
    write_kwargs = {k: kwargs.pop(k) for k in ("meta_columns", "recording_metadata", "record_extra") if k in kwargs}
    pred = write_pred(tmp_path / "pred", frame, **write_kwargs)
    out = tmp_path / "report"
    m = write_report(str(pred), str(out), n_boot=N_BOOT, **kwargs)
    return m, out


def strict_json(path):
    """metrics.json parsed so that any NaN/Infinity fails the test."""
    def refuse(token):
        raise AssertionError(f"{token} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


def scores_for(labels, rng, separation):
    return 1 / (1 + np.exp(-(separation * (np.asarray(labels) - 0.5) + rng.normal(size=len(labels)))))


def clustered(rng, n_groups, per, separation=0.0):
    """Participants with one label each and ``per`` recordings whose scores share a
    participant effect (recordings of one person resemble each other)."""
    labels = rng.integers(0, 2, n_groups)
    person = rng.normal(size=n_groups) + separation * labels
    return pd.DataFrame({"participant": np.repeat([f"p{i}" for i in range(n_groups)], per),
                         "label": np.repeat(labels, per),
                         "score": 1 / (1 + np.exp(-(np.repeat(person, per) + 0.3 * rng.normal(size=n_groups * per))))})


def hostile_entries(src: Path, outside: Path) -> None:
    """What a hostile or careless archive holds besides recordings: a name that is not UTF-8,
    folder links that loop, links out of SOURCE, a dangling link, a link chain that loops, a FIFO."""
    (src / "sub").mkdir(exist_ok=True)
    shutil.copy(cough_wav(outside / "secret.wav"), os.fsencode(src) + b"/caf\xe9 latin-1.wav")
    os.symlink("..", src / "sub" / "up")  # one of these made one file count 41 times ...
    os.symlink("../..", src / "sub" / "up2")  # ... two made the listing never end
    os.symlink(outside / "secret.wav", src / "outside.wav")
    os.symlink("/etc/passwd", src / "passwd.wav")
    os.symlink("nowhere.wav", src / "dangling.wav")
    os.symlink("loop_b", src / "loop_a")
    os.symlink("loop_a", src / "loop_b")
    os.mkfifo(src / "pipe.wav")


HOSTILE_PROBLEMS = {
    "up": "symlink loop", "up2": "outside SOURCE", "outside.wav": "outside SOURCE", "passwd.wav": "outside SOURCE",
    "dangling.wav": "dangling symlink", "loop_a": "symlink loop", "loop_b": "symlink loop",
    "pipe.wav": "not a regular file (a FIFO)",
}


def cough_wav(path: Path, *, sr=16000, seconds=1.5, channels=1, fmt=None, subtype=None, seed=0):
    """A synthetic cough (cough.synth.cough_signal) written to ``path``."""
    y = cough_signal(np.random.default_rng(seed), positive=True, sample_rate=sr, duration_s=seconds,
                     channels=channels)
    sf.write(path, y, sr, format=fmt, subtype=subtype)
    return path


def participant_tree(root: Path, labels: list[int], *, coughs: list[int] | None = None, seed: int = 0,
                     sidecar: bool = True) -> Path:
    """An archive kept as one folder per participant, as studies keep them: participant ``i``
    (label ``labels[i]``; folder ``p 00``, ``p 01``, ... with a space) holds ``coughs[i]``
    cough recordings (``cough-1.wav``, ...; default 2) beside recordings that are not coughs
    (``counting.wav``: speech-like; ``breathing.wav``: quiet noise), the same names in every
    folder, and a ``metadata.json`` (``covid_status``, ``age``, ``score``: a name cough's
    tables use)."""
    from cough.synth import speech_like_signal

    rng = np.random.default_rng(seed)
    for i, label in enumerate(labels):
        folder = root / f"p {i:02d}"
        folder.mkdir(parents=True)
        for k in range(1, (coughs[i] if coughs else 2) + 1):
            y = cough_signal(rng, positive=bool(label), sample_rate=16000, duration_s=float(rng.uniform(1.0, 2.5)))
            sf.write(folder / f"cough-{k}.wav", y, 16000)
        sf.write(folder / "counting.wav", 0.5 * speech_like_signal(rng, sample_rate=16000, duration_s=3.0), 16000)
        sf.write(folder / "breathing.wav", (0.002 * rng.standard_normal(32000)).astype(np.float32), 16000)
        if sidecar:
            status = ("positive_mild" if i % 2 else "positive_asymp") if label else "healthy"
            (folder / "metadata.json").write_text(json.dumps({"covid_status": status, "age": 20 + i, "score": 3}))
    return root
