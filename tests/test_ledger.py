"""Nightly at archive scale: the file ledger beside PRED, listing in Ray tasks, chunked
commits, the night's summary, and the faults a growing archive brings (files rewritten,
deleted, half uploaded; a driver killed mid-run)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cough.nightly import NightSettings
from cough.score.settings import ScoreSettings
from cough.errors import UsageError
from cough.nightly import nightly
from cough.score import score

from .conftest import ROOT, SAMPLE
from .helpers import pred_rows, snapshot, write_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("ledger-model") / "model")


def _archive(root: Path, n: int, *, start: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for f in sorted((SAMPLE / "raw").iterdir())[start:start + n]:
        shutil.copy2(f, root / f.name)
    return root


def _ledger(pred: Path):
    from deltalake import DeltaTable

    return DeltaTable(str(pred / "_ledger")).to_pandas()


def _size(paths) -> int:
    return sum(Path(p).stat().st_size for p in paths)


def test_a_night_opens_only_what_arrived_and_its_summary_says_what_it_found(tmp_path, ray_local, model):
    src, pred = _archive(tmp_path / "incoming", 6), tmp_path / "pred"
    first = score(str(src), str(model), str(pred)).to_dict()
    assert {k: first[k] for k in ("listed", "new", "changed", "seen_before", "scored", "duplicates")} == \
        {"listed": 6, "new": 6, "changed": 0, "seen_before": 0, "scored": 6, "duplicates": 0}
    assert first["bytes_read"] == _size(src.iterdir())
    ledger = _ledger(pred)
    assert sorted(ledger.path) == sorted(str(p) for p in src.iterdir()) and (ledger.status == "ok").all()

    # Garbage under the same size and time: a run that opened the files would hash it anew
    # and score it; the ledger knows these versions, so nothing is opened.
    for f in src.iterdir():
        st = f.stat()
        f.write_bytes(b"\0" * st.st_size)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    before = snapshot(pred)
    again = score(str(src), str(model), str(pred)).to_dict()
    assert (again["seen_before"], again["scored"], again["bytes_read"], again["run_id"]) == (6, 0, 0, None)
    assert snapshot(pred) == before

    # Tonight: two new recordings and a renamed copy of one scored last night.
    _archive(src, 2, start=10)
    copy = src / "renamed-copy.mp3"
    shutil.copy(sorted((SAMPLE / "raw").iterdir())[0], copy)
    night = score(str(src), str(model), str(pred)).to_dict()
    assert {k: night[k] for k in ("listed", "new", "seen_before", "scored", "duplicates", "skipped")} == \
        {"listed": 9, "new": 3, "seen_before": 6, "scored": 2, "duplicates": 1, "skipped": 7}
    assert night["bytes_read"] == _size([copy, *(src / f.name for f in sorted((SAMPLE / "raw").iterdir())[10:12])])
    rows = pred_rows(pred)
    assert len(rows) == 8 and str(copy) not in set(rows.path)  # the copy was recognised, not scored twice
    assert _ledger(pred).set_index("path").loc[str(copy), "status"] == "skipped"


def test_a_file_completed_after_a_truncated_upload_is_scored_again_and_told_apart(tmp_path, ray_local, model):
    src, pred = tmp_path / "incoming", tmp_path / "pred"
    src.mkdir()
    whole = sorted((SAMPLE / "raw").iterdir())[0].read_bytes()
    shutil.copy(SAMPLE / "raw" / "s7p00000-2.mp3", src)  # (a night that reads not one file fails)
    upload = src / "upload.mp3"
    upload.write_bytes(whole[:200])  # the night's listing caught it half written
    first = score(str(src), str(model), str(pred)).to_dict()
    assert first["scored"] == 2 and first["errors"] == 1

    upload.write_bytes(whole)
    os.utime(upload, ns=(time.time_ns(), time.time_ns()))
    second = score(str(src), str(model), str(pred)).to_dict()
    assert (second["listed"], second["changed"], second["new"], second["scored"], second["ok"]) == (2, 1, 0, 1, 1)
    rows = pred_rows(pred)
    rows = rows[rows.path == str(upload)].sort_values("file_size")
    assert list(rows.path) == [str(upload)] * 2 and list(rows.status) == ["error", "ok"]
    assert list(rows.file_size) == [200, len(whole)] and rows.file_mtime_ns.is_unique  # the two versions
    assert score(str(src), str(model), str(pred)).to_dict()["scored"] == 0  # and the complete one is not read again


def test_a_file_deleted_between_listing_and_reading_is_an_error_row(tmp_path, ray_local):
    from cough.tables.archive import listing_dataset
    from cough.audio.features import DEFAULT_PARAMS
    from cough.tables.labels import load_labels
    from cough.tables.scored import NOTHING_SCORED
    from cough.score.stages import prepare_recordings

    src = _archive(tmp_path / "incoming", 3)
    listing = listing_dataset(str(src), load_labels(None, str(src))).rows.materialize()
    gone = sorted(src.iterdir())[1]
    gone.unlink()
    rows = [prepare_recordings(batch, params=DEFAULT_PARAMS, min_cough_probability=0.5, scored=NOTHING_SCORED,
                               metadata_columns=[])
            for batch in listing.iter_batches(batch_format="pyarrow", batch_size=None)]
    by_path = {r["path"]: r for t in rows for r in t.drop_columns(["images"]).to_pylist()}
    assert len(by_path) == 3
    assert by_path[str(gone)]["status"] == "error"
    assert "No such file" in by_path[str(gone)]["error"]
    assert sum(r["status"] == "ok" for r in by_path.values()) == 2


def test_a_long_run_commits_in_chunks_recorded_as_one_run(tmp_path, ray_local, model):
    from cough.tables.pred import Pred, committed_runs
    from cough.tables.storage import Location

    src, pred = _archive(tmp_path / "incoming", 8), tmp_path / "pred"
    summary = score(str(src), str(model), str(pred), ScoreSettings(commit_every=3)).to_dict()
    assert summary["commits"] == 3 and summary["scored"] == 8
    (record,) = committed_runs(Pred(Location.of(str(pred))))
    assert (record.scored, record.ok, record.listed, record.chunk) == (8, 8, 8, 3)
    assert len(pred_rows(pred)) == 8 and len(_ledger(pred)) == 8


def _kill_when(proc: subprocess.Popen, done, what: str, lines: list) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and not done() and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # the driver
    proc.wait()
    os.killpg(proc.pid, signal.SIGKILL)  # then the local Ray it started
    assert done(), f"never saw {what}: " + "".join(lines[-5:])


def test_a_driver_killed_mid_run_loses_at_most_a_chunk_and_the_rerun_continues(tmp_path, fresh_ray, model):
    src, pred = _archive(tmp_path / "incoming", 12), tmp_path / "pred"
    proc = subprocess.Popen([sys.executable, "-m", "jobs.score", str(src), "--model", str(model), "--out", str(pred),
                             "--commit-every", "4", "--batch-size", "2", "--num-cpus", "2", "--address", "local", "--json"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    ledger_log = pred / "_ledger" / "_delta_log" / "00000000000000000000.json"
    _kill_when(proc, ledger_log.exists, "a chunk in the ledger", lines)
    done = _ledger(pred)
    assert 4 <= len(done) < 12, "the kill came too late to test anything"

    rerun = score(str(src), str(model), str(pred), ScoreSettings(address="local", num_cpus=2)).to_dict()  # never a `ray start` head of another test
    assert rerun["seen_before"] == len(done)  # what the ledger holds is not opened again
    rows = pred_rows(pred)
    assert len(rows) == 12 and rows.path.is_unique and rows.recording_id.is_unique and rows.status.ne("error").all()
    ledger = _ledger(pred)
    assert sorted(set(ledger.path)) == sorted(str(p) for p in src.iterdir())


def test_prefix_and_since_list_only_the_named_folders(tmp_path, ray_local, model):
    src = tmp_path / "incoming"
    for i, day in enumerate(("2026-11-23", "2026-11-24", "20261125", "misc")):
        _archive(src / day, 2, start=2 * i)
    _archive(src, 1, start=20)  # a file directly in SOURCE
    since = nightly(str(src), str(model), str(tmp_path / "a"), NightSettings(score=ScoreSettings(since="2026-11-24"))).to_dict()  # as the README's cron line
    assert since["listed"] == 4 and since["report"] is not None
    report = Path(since["report"])
    night = json.loads((report / "metrics.json").read_text())["operations"]["night"]
    assert (night["listed"], night["new"], night["seen_before"], night["commits"]) == (4, 4, 0, 1)
    assert "Its listing of SOURCE found 4 files: 4 new" in (report / "report.html").read_text() and {Path(p).parent.name for p in pred_rows(tmp_path / "a").path} == {"2026-11-24",
                                                                                                  "20261125"}
    prefixed = score(str(src), str(model), str(tmp_path / "b"), ScoreSettings(prefixes=("2026-11-23", "misc/"))).to_dict()
    assert prefixed["listed"] == 4 and {Path(p).parent.name for p in pred_rows(tmp_path / "b").path} == {"2026-11-23",
                                                                                                    "misc"}
    everything = score(str(src), str(model), str(tmp_path / "a")).to_dict()
    assert (everything["listed"], everything["seen_before"], everything["scored"]) == (9, 4, 5)
    with pytest.raises(UsageError, match="--since"):
        score(str(src), str(model), str(tmp_path / "c"), ScoreSettings(since="yesterday"))
    with pytest.raises(UsageError, match="--prefix 2026-12-01"):
        score(str(src), str(model), str(tmp_path / "c"), ScoreSettings(prefixes=("2026-12-01",)))
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())
