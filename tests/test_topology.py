"""The jobs where every task runs on a machine that is not the driver's: a head with no CPUs (as
cluster.yaml's) and one worker node in its own mount namespace, which sees neither this machine's
/tmp nor the repository's data/ (tests/cluster.py ``two_machines``), joined with token
authentication on loopback. The drivers run here and join with --address; the store is moto's S3
server on loopback, which the worker node reaches with the same AWS_* variables.

Local paths are refused before any work unless they lie under a --shared-path that every node
reads back; featurize, train, score, nightly and report run on s3://; a night that reads not one
file fails and commits nothing; a featurize refused by the store stops its tasks before it cleans
up; a driver killed mid-score is rerun and every recording is scored once."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from cough.tables.storage import OWNER_FILE

from .cluster import can_run_two_machines, two_machines
from .conftest import ROOT, SAMPLE
from .helpers import store_objects, store_rows

pytestmark = pytest.mark.slow
N = 60  # recordings in data/sample/raw


@pytest.fixture(scope="module")
def machines(s3):
    """The two machines, for the whole module (~12 s to start)."""
    reason = can_run_two_machines()
    if reason:
        pytest.skip(f"a worker node with a private /tmp {reason}")
    with two_machines([ROOT / "data"]) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def bucket(s3, machines) -> str:
    b = s3.bucket()
    s3.upload(SAMPLE / "raw", f"{b}/raw")
    s3.upload(SAMPLE / "labels.csv", f"{b}/labels.csv")
    for f in sorted((SAMPLE / "raw").iterdir())[:6]:  # tonight's arrivals, and a folder the store may lock
        s3.upload(f, f"{b}/tonight/{f.name}")
        s3.upload(f, f"{b}/locked/{f.name}")
    return b


@pytest.fixture
def shared_folder():
    """A folder both machines see at the same path (the worker hides only /tmp and data/)."""
    folder = tempfile.mkdtemp(prefix="cough-shared-", dir="/var/tmp")
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


def _summary(result) -> dict:
    """The one JSON object on stdout (``json.loads`` of all of it: nothing else may be there)."""
    assert result.stdout.strip(), result.stderr[-3000:]
    return json.loads(result.stdout)


def _refused(result, *needles: str) -> str:
    """Exit 2 with one line on stderr that says each of ``needles``; returns the line."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


def _exists(uri: str) -> bool:
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def test_local_paths_are_refused_before_any_work_unless_every_node_reads_them(machines, bucket, shared_folder,
                                                                              tmp_path):
    b, raw = bucket, str(SAMPLE / "raw")
    line = _refused(machines.cough("featurize", raw, "--out", f"{b}/f-local", "--json"),
                    f"SOURCE {raw}", "127.0.0.2", "s3://", "--shared-path")
    assert f"{b}/f-local" not in line and not _exists(f"{b}/f-local")  # the out was fine, and nothing is there
    _refused(machines.cough("featurize", f"{b}/raw", "--out", str(tmp_path / "out")), f"--out {tmp_path / 'out'}")
    assert not (tmp_path / "out").exists()
    # a folder only this machine has, named as shared: the worker node lacks the marker written here
    _refused(machines.cough("featurize", f"{b}/raw", "--out", str(tmp_path / "out"), "--shared-path", str(tmp_path)),
             f"--shared-path: not the folder this machine sees: {tmp_path} on node 127.0.0.2")
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())  # the marker went too

    # folders every node sees: SOURCE in one the driver may only read (checked by its entries), OUT in
    # one it writes (checked by a marker); the labels CSV, read by the driver alone, where only it has it
    ro, rw = shared_folder / "ro", shared_folder / "rw"
    (ro / "raw").mkdir(parents=True)
    rw.mkdir()
    for f in sorted((SAMPLE / "raw").iterdir())[:3]:
        shutil.copy(f, ro / "raw")
    shutil.copy(SAMPLE / "labels.csv", tmp_path / "labels.csv")
    done = machines.cough("featurize", str(ro / "raw"), "--labels", str(tmp_path / "labels.csv"), "--out",
                          str(rw / "out"), "--shared-path", str(ro), "--shared-path", str(rw), "--json",
                          read_only=(ro,))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (_summary(done)["ok"], _summary(done)["labelled"]) == (3, 3)
    assert f"--shared-path {ro}: cannot write a marker there (Read-only file system)" in done.stderr
    assert (rw / "out" / "manifest.json").is_file()
    assert not [p for p in (*ro.iterdir(), *rw.iterdir()) if p.name.startswith(".cough-shared")]


@pytest.fixture(scope="module")
def trained(machines, bucket) -> tuple[dict, dict, str]:
    """featurize, then train (2 epochs, with -v --json), on s3://: their summaries and the stderr of train."""
    b = bucket
    done = machines.cough("featurize", f"{b}/raw", "--labels", f"{b}/labels.csv", "--out", f"{b}/features", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    trained = machines.cough("train", f"{b}/features", "--out", f"{b}/model", "--epochs", "2", "-v", "--json")
    assert trained.returncode == 0, trained.stderr[-3000:]
    return _summary(done), _summary(trained), trained.stderr


def test_featurize_train_score_nightly_report_on_s3_with_every_task_on_another_machine(machines, bucket, trained,
                                                                                        tmp_path):
    b, (featurized, model, train_log) = bucket, trained
    assert featurized["inputs"] == featurized["ok"] + featurized["rejected"] == N and featurized["errors"] == 0
    # -v --json: stdout was the JSON object alone (_summary parsed all of it); the workers' epoch
    # lines and Ray's own went to stderr
    assert model["epochs_run"] == 2 and "epoch 2/2" in train_log
    assert not _exists(f"{b}/.cough-train")  # its checkpoints, beside MODEL on the store, removed after success

    # MODEL copied to this machine: the inference actors elsewhere could not load it
    fs, root = pafs.FileSystem.from_uri(f"{b}/model")
    (tmp_path / "model").mkdir()
    pafs.copy_files(root, str(tmp_path / "model"), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    _refused(machines.cough("score", f"{b}/raw", "--model", str(tmp_path / "model"), "--out", f"{b}/pred"),
             f"--model {tmp_path / 'model'}")
    assert not _exists(f"{b}/pred")

    run = machines.cough("score", f"{b}/raw", "--model", f"{b}/model", "--out", f"{b}/pred", "--labels",
                         f"{b}/labels.csv", "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    scored = _summary(run)
    assert scored["scored"] == N and scored["errors"] == 0
    rows = store_rows(f"{b}/pred")
    assert len(rows) == N and rows.recording_id.is_unique and (rows.score.notna() == (rows.status == "ok")).all()

    night = machines.cough("nightly", f"{b}/tonight", "--model", f"{b}/model", "--pred", f"{b}/nights", "--json")
    assert night.returncode == 0, night.stderr[-3000:]
    summary = _summary(night)
    assert summary["scored"] == 6 and summary["report"] == f"{b}/nights/_reports/{summary['run_id']}"
    assert _exists(f"{summary['report']}/metrics.json")

    report = machines.cough("report", f"{b}/pred", "--out", f"{b}/report", "--n-boot", "100", "--include-training",
                            "--json", ray=False)  # no Ray: the report is made here, from PRED on the store
    assert report.returncode == 0, report.stderr[-3000:]
    assert _summary(report)["n"] == scored["ok"] and _exists(f"{b}/report/report.html")  # the scored recordings


def test_a_night_that_reads_not_one_file_fails_commits_nothing_and_the_next_scores_them(machines, bucket, trained,
                                                                                          s3):
    """The worker nodes may list the files but not read them (the store's policy): every file
    fails. Before, the night said ok, committed 6 error rows and the ledger remembered the files,
    so no later night read them again."""
    b = bucket
    with s3.denied(*(("s3:GetObject", f"{b}/locked/*.{kind}") for kind in ("mp3", "wav", "ogg", "flac"))):
        night = machines.cough("nightly", f"{b}/locked", "--model", f"{b}/model", "--pred", f"{b}/locked-pred",
                               "--json")
        featurized = machines.cough("featurize", f"{b}/locked", "--out", f"{b}/locked-features", "--json")
    for result, job in ((night, "nightly"), (featurized, "featurize")):
        assert result.returncode == 1, result.stderr[-3000:]
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith(f"cough {job}: error: every one of the 6 files") and "ACCESS_DENIED" in line, line
        assert "nothing was committed" in line and "Traceback" not in result.stderr
        assert _summary(result)["status"] == "error" and _summary(result)["errors"] == 6
    assert not _exists(f"{b}/locked-pred") and not _exists(f"{b}/locked-features")

    again = machines.cough("nightly", f"{b}/locked", "--model", f"{b}/model", "--pred", f"{b}/locked-pred", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (_summary(again)["new"], _summary(again)["ok"]) == (6, 6)


def test_a_shard_the_store_refuses_is_one_line_naming_it_and_the_stores_code(machines, bucket, s3):
    """The store refuses the events shards: the run fails with the cause of the first task's
    error, out of Ray's wrappers: one line naming the shard and the store's error code, no
    colour codes in --json; nothing is left without the owner marker, and the rerun works."""
    b, out = bucket, f"{bucket}/denied"
    with s3.denied(("s3:PutObject", f"{out}/events/*")):
        failed = machines.cough("featurize", f"{b}/tonight", "--out", out, "--json")
        left = store_objects(out)
    assert failed.returncode == 1, failed.stderr[-3000:]
    lines = failed.stderr.strip().splitlines()
    assert lines[-1].startswith(f"cough featurize: error: cannot write {out}/events/") and "ACCESS_DENIED" in lines[-1]
    assert "Traceback" not in failed.stderr and "\x1b[" not in failed.stdout, failed.stderr[-3000:]
    assert "ACCESS_DENIED" in _summary(failed)["error"] and _summary(failed)["exit_code"] == 1
    assert not left or any(k.endswith(f"/denied/{OWNER_FILE}") for k in left), sorted(left)
    rerun = machines.cough("featurize", f"{b}/tonight", "--out", out, "--json")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _summary(rerun)["inputs"] == 6


def _uploading(uri: str, s3) -> bool:
    """Whether a multipart upload (an open shard writer) is in progress under ``uri``."""
    import boto3

    bucket, _, prefix = uri.split("://", 1)[1].partition("/")
    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1", **s3.credentials)
    return bool(client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads"))


def _signal(pids, sig) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # Ray ends a finished job's workers
            os.kill(pid, sig)


def test_a_failed_featurize_stops_its_tasks_before_it_cleans_up(machines, bucket, s3):
    """Featurize fails (here: interrupted) while its tasks are writing shards, and those tasks are
    slow to stop (their processes stalled, as on a swamped node). Before, the run removed what it
    had written, owner marker first, while they still ran; they then completed their shards, and
    the rerun was refused ("files that cough featurize did not write") until a person deleted
    them. Now it waits until its tasks have ended, then cleans up: nothing is left.

    The interleaving is forced: the tasks are stopped while an images shard is being uploaded;
    once the run has cleaned up (or after 6 s of not doing so), the driver is stopped, the tasks
    resume and finish, then the driver resumes."""
    b, out = bucket, f"{bucket}/interrupted"
    run = machines.popen("featurize", f"{b}/raw", "--out", out, "--batch-size", "8", "--json")
    stalled: list[int] = []
    try:
        deadline = time.time() + 120
        while not stalled and time.time() < deadline and run.poll() is None:
            if _uploading(f"{out}/images/", s3):
                stalled = machines.worker_processes("ray::MapBatches(featurize_batch)")
                _signal(stalled, signal.SIGSTOP)
            time.sleep(0.02)
        assert stalled, "no featurize task was seen writing"
        run.send_signal(signal.SIGINT)
        until, cleaned = time.time() + 6, False  # before, the run cleaned up within 1-2 s of the signal
        while time.time() < until and run.poll() is None and not cleaned:
            cleaned = not [k for k in store_objects(out) if k.endswith(OWNER_FILE) or "/images/" in k]
            time.sleep(0.05)
        if run.poll() is None:
            run.send_signal(signal.SIGSTOP)  # the driver waits while the tasks go on
        _signal(stalled, signal.SIGCONT)
        time.sleep(2)
        run.send_signal(signal.SIGCONT)
        stdout, stderr = run.communicate(timeout=180)
        time.sleep(2)
        left = store_objects(out)
    finally:
        _signal(stalled, signal.SIGCONT)
        with contextlib.suppress(ProcessLookupError):
            run.send_signal(signal.SIGCONT)
        run.kill()
    assert not cleaned, "the run cleaned up while its tasks were still running"
    assert run.returncode == 130 and json.loads(stdout)["error"] == "interrupted", stderr[-3000:]
    assert not left or any(k.endswith(f"/interrupted/{OWNER_FILE}") for k in left), \
        f"left without its owner marker: {sorted(left)[:5]}"
    rerun = machines.cough("featurize", f"{b}/tonight", "--out", out, "--json")
    assert rerun.returncode == 0, rerun.stderr[-3000:]


def test_kill_9_of_the_driver_mid_score_then_rerun_gives_every_recording_once(machines, bucket, trained):
    b, pred = bucket, f"{bucket}/pred-killed"
    proc = machines.popen("score", f"{b}/raw", "--model", f"{b}/model", "--out", pred, "--labels",
                          f"{b}/labels.csv", "--batch-size", "2", "--commit-every", "1000", "--json")
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    deadline, scratch = time.time() + 240, None
    while time.time() < deadline and scratch is None and proc.poll() is None:  # rows scored, none committed
        run = next((line.split(" run ", 1)[1].split(":")[0] for line in list(lines) if " run " in line), None)
        found = list(Path(tempfile.gettempdir()).glob(f"cough-score-{run}-*/rows.parquet")) if run else []
        scratch = found[0] if found and found[0].stat().st_size > 0 else None
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the driver; its tasks and actors on the worker node go with it
    proc.wait()
    assert scratch is not None, "the run never scored a row: " + "".join(lines[-5:])
    shutil.rmtree(scratch.parent)  # what a kill -9 leaves on the driver's disk
    assert not _exists(f"{pred}/_delta_log")

    rerun = machines.cough("score", f"{b}/raw", "--model", f"{b}/model", "--out", pred, "--labels",
                           f"{b}/labels.csv", "--json")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _summary(rerun)["scored"] == N
    rows = store_rows(pred)
    assert len(rows) == N and rows.recording_id.is_unique and rows.path.is_unique
    assert list(rows.name) == sorted(p.name for p in (SAMPLE / "raw").iterdir())
