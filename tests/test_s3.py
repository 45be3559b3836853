"""Every job on s3:// against a real S3-API server (moto's, its own process on loopback, with
authentication on): the pipeline end to end, reruns, kill -9 mid-run and right after a commit,
two `cough score` at once on one PRED, and bad storage input."""

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

import pyarrow.fs as pafs
import pytest

from cough.score.settings import ScoreSettings
from cough.cli import main as cli

from .conftest import ROOT, SAMPLE
from .helpers import store_objects as _objects
from .helpers import store_rows as pred_rows
from .helpers import write_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tmp_path_factory, sample_features) -> Path:
    return write_model(tmp_path_factory.mktemp("s3-model") / "model", train_on=sample_features)


@pytest.fixture
def store(s3, fresh_ray, model):
    """A new bucket holding the sample archive (raw/, labels.csv) and MODEL; Ray starts afresh
    inside the jobs, its workers inheriting the server's AWS_* variables."""
    bucket = s3.bucket()
    s3.upload(SAMPLE / "raw", f"{bucket}/raw")
    s3.upload(SAMPLE / "labels.csv", f"{bucket}/labels.csv")
    s3.upload(model, f"{bucket}/model")
    return bucket


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_featurize_train_score_report_on_s3_and_a_rerun_changes_nothing(store, capsys):
    b = store
    assert cli(["featurize", f"{b}/raw", "--labels", f"{b}/labels.csv", "--out", f"{b}/features",
                "--num-cpus", "2", "--json"]) == 0
    assert _json(capsys)["inputs"] == 60
    assert cli(["train", f"{b}/features", "--out", f"{b}/trained", "--epochs", "1", "--workers", "1",
                "--storage", f"{b}/checkpoints", "--json"]) == 0
    trained = _json(capsys)
    assert cli(["score", f"{b}/features", "--model", f"{b}/trained", "--out", f"{b}/pred", "--json"]) == 0
    scored = _json(capsys)
    assert cli(["report", f"{b}/pred", "--out", f"{b}/report", "--include-training", "--n-boot", "100"]) == 0

    fs, root = pafs.FileSystem.from_uri(b)
    read = lambda key: json.loads(fs.open_input_stream(f"{root}/{key}").read())  # noqa: E731
    manifest, meta, metrics = read("features/manifest.json"), read("trained/model.json"), read("report/metrics.json")
    assert manifest["source"] == f"{b}/raw" and manifest["tables"]["images"].startswith("images/")
    assert meta["version"] == trained["version"] and meta["shards"] == f"{b}/features"
    rows = pred_rows(f"{b}/pred")
    assert scored["scored"] == 60 == len(rows) and rows.recording_id.is_unique and (rows.model_version == meta["version"]).all()
    # n: the scored recordings (the cough detector rejects one of the sample's); MODEL found through PRED's run record
    assert metrics["n"] == scored["ok"] == 60 - scored["rejected"] and metrics["run"]["model"] == f"{b}/trained"

    before = _objects(f"{b}/pred")
    assert cli(["score", f"{b}/features", "--model", f"{b}/trained", "--out", f"{b}/pred", "--json"]) == 0
    again = _json(capsys)
    assert (again["scored"], again["skipped"], again["run_id"]) == (0, 60, None)
    assert _objects(f"{b}/pred") == before


def _score_process(b: str, *extra: str) -> tuple[subprocess.Popen, list]:
    """`python -m jobs.score` on s3://, its stderr lines collected as they come."""
    proc = subprocess.Popen([sys.executable, "-m", "jobs.score", f"{b}/raw", "--model", f"{b}/model", "--out",
                             f"{b}/pred", "--labels", f"{b}/labels.csv", "--num-cpus", "2", "--json", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    return proc, lines


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)  # the driver
    proc.wait()
    os.killpg(proc.pid, signal.SIGKILL)  # then the local Ray it started: the whole machine is gone


def test_kill_9_mid_score_on_s3_then_rerun_gives_every_recording_once(store, model, tmp_path):
    from cough.score import score

    b = store
    proc, lines = _score_process(b, "--batch-size", "2")
    deadline, scratch = time.time() + 240, None
    while time.time() < deadline and scratch is None:  # the run has scored rows, none committed
        run = next((line.split(" run ", 1)[1].split(":")[0] for line in list(lines) if " run " in line), None)
        found = list(Path("/tmp").glob(f"cough-score-{run}-*/rows.parquet")) if run else []
        scratch = found[0] if found and found[0].stat().st_size > 0 else None
        time.sleep(0.05)
    _kill(proc)
    assert scratch is not None, "the run never scored a row: " + "".join(lines[-5:])
    shutil.rmtree(scratch.parent)  # the killed driver's local rows: a kill -9 leaves them behind
    fs, root = pafs.FileSystem.from_uri(f"{b}/pred")
    assert fs.get_file_info(f"{root}/_delta_log").type == pafs.FileType.NotFound  # nothing looks complete

    summary = score(f"{b}/raw", f"{b}/model", f"{b}/pred", ScoreSettings(labels=f"{b}/labels.csv")).to_dict()
    assert summary["scored"] == 60
    reference = score(str(SAMPLE / "raw"), str(model), str(tmp_path / "pred"), ScoreSettings(labels=str(SAMPLE / "labels.csv"))).to_dict()
    assert reference["scored"] == 60
    got, want = pred_rows(f"{b}/pred"), pred_rows(str(tmp_path / "pred"))
    assert list(got.name) == list(want.name) and got.recording_id.is_unique
    assert list(got.recording_id) == list(want.recording_id)
    assert (got.score - want.score).abs().max() < 1e-5  # the scores of an uninterrupted run


def test_a_run_killed_right_after_its_commit_is_not_scored_again(store):
    from cough.score import score

    b = store
    proc, lines = _score_process(b)
    fs, root = pafs.FileSystem.from_uri(f"{b}/pred")
    first = f"{root}/_delta_log/00000000000000000000.json"
    deadline = time.time() + 240
    while time.time() < deadline and fs.get_file_info(first).type == pafs.FileType.NotFound:
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    _kill(proc)
    assert fs.get_file_info(first).type == pafs.FileType.File, "".join(lines[-5:])
    table = lambda: {k: v for k, v in _objects(f"{b}/pred").items() if "/_ledger/" not in k}  # noqa: E731
    before = table()
    summary = score(f"{b}/raw", f"{b}/model", f"{b}/pred", ScoreSettings(labels=f"{b}/labels.csv")).to_dict()
    assert (summary["scored"], summary["skipped"]) == (0, 60) and table() == before
    assert len(pred_rows(f"{b}/pred")) == 60
    # the files the ledger lacked (the kill came between the two commits, or not) are in it now
    again = score(f"{b}/raw", f"{b}/model", f"{b}/pred", ScoreSettings(labels=f"{b}/labels.csv")).to_dict()
    assert (again["seen_before"], again["bytes_read"], again["scored"]) == (60, 0, 0)


def test_two_cough_score_at_once_on_one_pred_leave_every_recording_once(store):
    b = store
    runs = [_score_process(b) for _ in range(2)]
    outs = [proc.communicate(timeout=600)[0] for proc, _ in runs]
    assert [proc.returncode for proc, _ in runs] == [0, 0], ["".join(lines[-3:]) for _, lines in runs]
    summaries = [json.loads(out.strip().splitlines()[-1]) for out in outs]
    rows = pred_rows(f"{b}/pred")
    assert len(rows) == 60 and rows.recording_id.is_unique and rows.path.is_unique
    assert sum(s["scored"] for s in summaries) == 60  # what one committed, the other did not add


# ------------------------------------------------------------------------- bad input

def _cough(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cough", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def _one_line(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and all(n in lines[-1] for n in needles), lines[-1]


def test_bad_storage_input_is_one_line_naming_the_uri_and_nothing_is_written(s3, tmp_path):
    b = s3.bucket()
    s3.upload(SAMPLE / "raw", f"{b}/raw")
    out = f"{b}/features"
    _one_line(_cough("featurize", "ftp://host/raw", "--out", str(tmp_path / "o")), 2, "ftp://host/raw", "scheme")
    _one_line(_cough("featurize", f"{b}/raw", "--out", "nosuch://x/out"), 2, "nosuch://x/out")
    _one_line(_cough("featurize", "s3://cough-no-such-bucket/raw", "--out", str(tmp_path / "o")), 1,
              "s3://cough-no-such-bucket/raw", "does not exist")
    _one_line(_cough("featurize", f"{b}/raw", "--out", "s3://cough-no-such-bucket/out"), 1,
              "s3://cough-no-such-bucket/out", "bucket cough-no-such-bucket does not exist")
    no_keys = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    _one_line(_cough("featurize", f"{b}/raw", "--out", out, env=no_keys), 1, out, "credentials")
    _one_line(_cough("featurize", f"{b}/raw", "--out", out, env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}), 1,
              out, "connect")
    assert not (tmp_path / "o").exists() and _objects(out) == {}
