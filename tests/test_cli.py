"""The command line's conventions: --version, no abbreviations, suggestions for mistyped
jobs, one JSON object on stdout whatever happens, the gist of an unexpected error with
its advice (all of it with -v), --dry-run, `python -m jobs.<name>`, a quiet default log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cough import __version__
from cough.cli import JOBS, brief, main

from .conftest import ROOT, SAMPLE


def _json(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return json.loads(out[0])


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"cough {__version__}"


@pytest.mark.parametrize("argv, message", [
    (["featurise", "x", "--out", "y"], "did you mean 'featurize'?"),
    (["featurize", "x", "--o", "y"], "the following arguments are required: --out"),
    (["featurize", "x", "--out", "y", "--label", "l.csv"], "unrecognized arguments: --label l.csv; did you mean --labels?"),
    (["featurize", "x", "--out", "y", "--num-cpu", "2"], "unrecognized arguments: --num-cpu 2; did you mean --num-cpus?"),
    (["featurize", "x", "--out", "y", "-v", "-q"], "not allowed with argument"),
])
def test_usage_errors_exit_2_with_one_json_object(capsys, argv, message):
    assert main([*argv, "--json"]) == 2
    summary = _json(capsys)
    assert summary["status"] == "error" and summary["exit_code"] == 2 and message in summary["error"]


def test_a_mistyped_flag_is_the_jobs_own_usage_error_with_a_suggestion(capsys):
    """It was the top-level parser's: `usage: cough [-h] [--version] JOB ...` and
    `cough: error: unrecognized arguments: --lables ...`, with no word of the job's flags."""
    assert main(["score", "x", "--model", "m", "--out", "y", "--lables", "l.csv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage: cough score ")
    assert err[-1] == "cough score: error: unrecognized arguments: --lables l.csv; did you mean --labels?"


def test_a_missing_labels_csv_is_named_plainly(tmp_path, capsys):
    """It came with pyarrow's wording: "[Errno 2] Failed to open local file '...'. Detail: ..."."""
    csv = tmp_path / "labels.cvs"
    assert main(["featurize", str(SAMPLE / "raw"), "--out", str(tmp_path / "out"), "--labels", str(csv)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"cough featurize: error: labels CSV {csv} does not exist"]
    assert not (tmp_path / "out").exists()


def test_a_failed_job_prints_its_error_as_json(tmp_path, capsys):
    assert main(["featurize", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--json"]) == 1
    summary = _json(capsys)
    assert (summary["status"], summary["exit_code"], summary["job"]) == ("error", 1, "featurize")
    assert "does not exist" in summary["error"]


def test_an_unexpected_error_keeps_its_gist_and_advice_and_all_of_it_with_v(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = ["synth", "--out", str(blocker / "archive"), "--n", "1"]  # a directory inside a file
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "NotADirectoryError" in err and "rerun with -v" in err and "Traceback" not in err
    assert main([*argv, "-v"]) == 1
    assert "Traceback" in capsys.readouterr().err
    text = brief(RuntimeError("Could not connect.\n  at gcs_client.cc:210\nTo fix this, set RAY_ADDRESS."))
    assert text == "RuntimeError: Could not connect.\nTo fix this, set RAY_ADDRESS."


def test_dry_runs_say_what_would_happen_without_ray_or_writing(tmp_path, capsys, sample_pred, model_dir):
    import ray

    ray.shutdown()
    out = tmp_path / "features"
    assert main(["featurize", str(SAMPLE / "raw"), "--labels", str(SAMPLE / "labels.csv"), "--out", str(out),
                 "--dry-run", "--json"]) == 0
    plan = _json(capsys)
    assert (plan["would_read"], plan["labelled"], plan["participants"]) == (60, 60, 22)
    assert plan["formats"] == {"flac": 16, "mp3": 30, "ogg": 14} and not plan["would_replace"]
    archive = tmp_path / "raw"
    archive.mkdir()
    for f in sorted((SAMPLE / "raw").iterdir())[:5]:  # five already in PRED
        (archive / f.name).write_bytes(f.read_bytes())
    (archive / "new.mp3").write_bytes(b"ID3" + b"\0" * 100)
    before = sorted(p.name for p in sample_pred.iterdir())
    assert main(["score", str(archive), "--model", str(model_dir), "--out", str(sample_pred), "--dry-run",
                 "--json"]) == 0
    plan = _json(capsys)
    assert (plan["would_read"], plan["would_skip"], plan["would_score"]) == (6, 5, 1)
    assert not out.exists() and sorted(p.name for p in sample_pred.iterdir()) == before
    assert not ray.is_initialized()


def test_every_job_runs_as_python_m_jobs_name():
    for job in JOBS:
        result = subprocess.run([sys.executable, "-m", f"jobs.{job}", "--help"], cwd=ROOT, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0 and f"cough {job}" in result.stdout, (job, result.stderr[-2000:])


@pytest.mark.slow
def test_training_logs_one_line_per_epoch_and_no_noise(tmp_path, sample_features, fresh_ray):
    result = subprocess.run([sys.executable, "-m", "cough", "train", str(sample_features), "--out",
                             str(tmp_path / "model"), "--epochs", "2", "--num-cpus", "2", "--address", "local"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if not line.startswith("cough train: ")] == [], lines
    epochs = [line for line in lines if line.startswith("cough train: epoch ")]
    assert len(epochs) == 2 and "val_auc" in epochs[0] and epochs[1].startswith("cough train: epoch 2/2: loss ")


def test_quiet_keeps_only_warnings(tmp_path, capsys, ray_local):
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in sorted((SAMPLE / "raw").iterdir())[:3]:
        (raw / f.name).write_bytes(f.read_bytes())
    (raw / "broken.mp3").write_bytes(b"ID3" + b"\0" * 100)
    assert main(["featurize", str(raw), "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "cough featurize: featurizing 4 recordings" in err and "cough featurize: warning: 1 of 4" in err
    assert main(["featurize", str(raw), "--out", str(tmp_path / "b"), "-q"]) == 0
    quiet = capsys.readouterr().err.strip().splitlines()
    assert len(quiet) == 1 and quiet[0].startswith("cough featurize: warning: 1 of 4"), quiet


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory) -> Path:
    from .helpers import write_model

    return write_model(tmp_path_factory.mktemp("untrained") / "model")


@pytest.mark.slow
def test_scoring_prints_its_own_lines_only(tmp_path, untrained_model, fresh_ray):
    """Every `cough score` printed an error-looking line of Ray's C++ core worker, from the
    driver itself (no worker output filter sees it), when Ray Data created the inference
    actors: '[... E ...] core_worker.cc:...: Actor with class name: ... has constructor
    arguments in the object store and max_restarts > 0. ...'."""
    result = subprocess.run([sys.executable, "-m", "cough", "score", str(SAMPLE / "raw"), "--model",
                             str(untrained_model), "--out", str(tmp_path / "pred"), "--num-cpus", "2",
                             "--address", "local"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert lines and [line for line in lines if not line.startswith("cough score: ")] == [], lines


def test_ray_datas_false_alarm_about_free_cpus_is_dropped_and_its_other_warnings_kept(monkeypatch):
    """Ray Data warns that a dataset "will hang" when its view of the cluster's resources,
    which lags behind tasks that have just ended, shows no free CPU: `cough score` on 2 CPUs
    printed it at times, right after its own listing tasks. Its console handlers drop it now;
    its log file keeps it."""
    import logging

    from cough import logs

    def warning(message: str) -> logging.LogRecord:
        return logging.LogRecord("ray.data.dataset", logging.WARNING, __file__, 1, message, None, None)

    monkeypatch.setattr(logs, "_mode", "default")
    logs.tame_ray()
    alarm = warning("Warning: The Ray cluster currently does not have any available CPUs. The Dataset job will "
                    "hang unless more CPUs are freed up.")
    handlers = logging.getLogger("ray.data").handlers
    consoles = [h for h in handlers if isinstance(h, logging.StreamHandler)]
    assert consoles and all(not h.filter(alarm) and h.filter(warning("a warning of Ray Data's")) for h in consoles)
    assert all(h.filter(alarm) for h in handlers if h not in consoles)


def test_ray_datas_memory_advice_becomes_one_line_a_cough_user_can_act_on(monkeypatch):
    """Even with -q, Ray Data's multi-line advice to set `memory=` in 'the appropriate function
    or method call' (one a cough user never writes) reached stderr on long recordings."""
    import logging

    from cough import logs

    monkeypatch.setattr(logs, "_mode", "quiet")
    logs.tame_ray()
    advice = logging.LogRecord("ray.data.dataset", logging.WARNING, __file__, 1, (
        "\nOperator 'MapBatches(featurize_batch)' used up to 1.2GiB of memory per worker. The configured\nlogical "
        "memory was 1.0GiB. To avoid out-of-memory errors, set\n`memory=1395864371` (1.3GiB) in the appropriate\n"
        "function or method call.\n"), None, None)
    consoles = [h for h in logging.getLogger("ray.data").handlers if isinstance(h, logging.StreamHandler)
                and not isinstance(h, logging.FileHandler)]
    assert consoles and all(h.filter(advice) for h in consoles)
    line = advice.getMessage()
    assert "\n" not in line and "memory=" not in line
    assert line.startswith("cough: featurize_batch tasks used up to 1.2GiB of memory each") and "--batch-size" in line
    # and the count Ray Data logs after it, with how to turn its detectors off, is dropped (it reached stderr)
    count = logging.LogRecord("ray.data._internal.issue_detection.issue_detector_manager", logging.WARNING, __file__,
                              1, "Found 1 issues. To disable issue detection, run "
                                 "DataContext.get_current().issue_detectors_config.detectors = [].", None, None)
    assert not any(h.filter(count) for h in consoles)


@pytest.mark.parametrize("column", ["score", "threshold"])
@pytest.mark.parametrize("job", ["featurize", "score"])
def test_a_labels_column_named_like_ours_exits_2_naming_it_before_ray(tmp_path, capsys, untrained_model, job, column):
    """A ``score`` column crashed `cough score` with an Arrow type error; a ``threshold`` column
    silently became the report's decision threshold."""
    import ray

    csv = tmp_path / "labels.csv"
    csv.write_text(f"filename,label,site,{column}\nx.mp3,positive,home,0.9\n")
    model = ["--model", str(untrained_model)] if job == "score" else []
    ray_was_up = ray.is_initialized()
    code = main([job, str(SAMPLE / "raw"), "--labels", str(csv), "--out", str(tmp_path / "out"), *model, "--json"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"'{column}'" in err and "'site'" not in err
    assert ray.is_initialized() == ray_was_up and not (tmp_path / "out").exists()


def test_workers_chatter_is_filtered_and_their_warnings_kept(monkeypatch):
    """Lines Ray workers printed in `make demo` before the filter (TensorFlow's banner, Ray
    Train's reports, the placement-group cleaner's multi-line warning): gone; a warning that
    is not one of them, and our own per-epoch line, stay."""
    from cough import logs

    monkeypatch.setattr(logs, "_mode", "default")
    batch = {"actor_name": "RayTrainWorker", "lines": [
        "I0000 00:00:1795848905.429515   28141 port.cc:153] oneDNN custom operations are on. You may see",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "Reporting training result 1: TrainingReport(checkpoint=Checkpoint(filesystem=local, path=/x), metrics={})",
        "Checkpoint successfully created at: Checkpoint(filesystem=local, path=/x)",
        "Failed to register placement group with cleaner: The actor died unexpectedly before finishing this task.",
        "\tclass_name: PlacementGroupCleaner", "\tpid: 11330",
        "The actor is dead. Placement group may not be cleaned up if controller dies ungracefully.",
        "cough train: epoch 1/2: loss 0.6948, accuracy 0.413, val_loss 0.6888, val_auc 0.800 (3.9 s)",
        "MemoryError: the task ran out of memory"]}
    assert logs.worker_lines(batch) == (
        ["cough train: epoch 1/2: loss 0.6948, accuracy 0.413, val_loss 0.6888, val_auc 0.800 (3.9 s)"],
        ["MemoryError: the task ran out of memory"])
    assert logs.worker_lines({"actor_name": "PlacementGroupCleaner", "lines": ["Traceback (most recent call last):"]}) \
        == ([], [])
    monkeypatch.setattr(logs, "_mode", "quiet")
    assert logs.worker_lines(batch) == ([], [])


def test_tensorflows_banner_in_the_driver_is_dropped_and_every_other_line_kept(monkeypatch, capfd):
    """While `cough train` starts Ray beside TensorFlow's import, file descriptor 2 is held
    back: the banner's native lines go, what Ray or we log meanwhile (any thread) is kept."""
    import threading

    from cough import logs

    monkeypatch.setattr(logs, "_mode", "default")
    with logs.native_stderr_filtered():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                    b"I0000 00:00:1795848905.429515   28141 port.cc:153] oneDNN custom operations are on.\n")
        said = threading.Thread(target=lambda: sys.stderr.write("cough train: joining the Ray instance\n"))
        said.start()
        said.join()
        os.write(2, b"E0000 00:00:1795882132.418546   14669 cuda_platform.cc:52] failed call to cuInit\n"
                    b"2026-11-28 16:15:49,018 WARNING worker.py:1 -- a warning of Ray's\n")
    assert capfd.readouterr().err == "cough train: joining the Ray instance\n" \
                                     "2026-11-28 16:15:49,018 WARNING worker.py:1 -- a warning of Ray's\n"


def test_native_lines_keep_flowing_when_stderr_is_a_closed_pipe():
    """`cough score ... 2>&1 | head`: once the reader of stderr is gone, the filter must still
    drain what native code writes to fd 2, or the writer blocks for good on a full pipe."""
    script = ("import os\n"
              "from cough import logs\n"
              "logs.setup_logging()\n"
              "with logs.native_stderr_filtered():\n"
              "    for _ in range(4000):\n"
              "        os.write(2, b'a line of native output that is not noise' + b'.' * 60 + b'\\n')\n"
              "print('done', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stderr.close()
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and out == b"done\n"


def test_a_terminal_is_still_a_terminal_while_the_banner_is_held_back(monkeypatch):
    """Ray starts inside that block and decides on progress bars by ``sys.stderr.isatty()``:
    a user at a terminal keeps them."""
    import io
    import pty

    from cough import logs

    monkeypatch.setattr(logs, "_mode", "default")
    controller, terminal = pty.openpty()
    original = os.dup(2)
    os.dup2(terminal, 2)
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True))
    try:
        with logs.native_stderr_filtered():
            seen = sys.stderr.isatty()
    finally:
        os.dup2(original, 2)
        for fd in (original, controller, terminal):
            os.close(fd)
    assert seen


@pytest.mark.slow
def test_a_terminal_gets_a_progress_bar_per_stage(tmp_path):
    """In a terminal (a pseudo-terminal of 120 columns here), Ray Data's tqdm bars: the
    dataset's and one per stage. (Piped, there are none: see the training log test.)"""
    import fcntl
    import os
    import pty
    import struct
    import termios

    raw = tmp_path / "raw"
    raw.mkdir()
    for f in sorted((SAMPLE / "raw").iterdir())[:4]:
        (raw / f.name).write_bytes(f.read_bytes())
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "cough", "featurize", str(raw), "--out", str(tmp_path / "out"),
                             "--address", "local", "--num-cpus", "1"], cwd=ROOT, stdin=child, stdout=child,
                            stderr=child, close_fds=True)
    os.close(child)
    seen = b""
    while True:
        try:
            chunk = os.read(parent, 65536)
        except OSError:  # the terminal closed: the job is done
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(timeout=300) == 0, seen[-3000:]
    text = seen.decode(errors="replace")
    assert "Running Dataset" in text and "- MapBatches(featurize_batch)" in text and "%|" in text, text[-3000:]
    assert "inputs: 4" in text


@pytest.mark.slow
def test_train_v_json_prints_one_json_object_on_stdout(tmp_path, sample_features, fresh_ray):
    """With -v, Ray printed a training worker's epoch line on the driver's stdout, before the
    JSON object: `cough train -v --json | jq` failed. Worker output goes to stderr."""
    result = subprocess.run([sys.executable, "-m", "cough", "train", str(sample_features), "--out",
                             str(tmp_path / "model"), "--epochs", "1", "--num-cpus", "2", "--address", "local", "-v",
                             "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["epochs_run"] == 1, result.stdout[:3000]
    assert "cough train: epoch 1/1: loss " in result.stderr


def test_an_error_from_a_ray_task_is_its_cause_in_one_colourless_line(ray_local, capsys):
    """Ray wraps a task's error (`RayTaskError(OSError)`, whose text starts with the task's name
    in colour codes and goes on with the traceback); the job reports the cause."""
    from cough.errors import CoughError, describe, job_error

    def disk_full():
        raise OSError(28, "Error writing bytes to file")

    def refused():
        raise CoughError("cannot write /x/part-1.parquet: Access Denied")

    with pytest.raises(Exception) as full:
        ray_local.get(ray_local.remote(disk_full).remote())
    assert "\x1b[" in str(full.value)  # what Ray says: the task's name in colour, then a traceback
    assert describe(full.value) == "OSError: [Errno 28] Error writing bytes to file (ENOSPC: disk full)"
    with pytest.raises(Exception) as denied:
        ray_local.get(ray_local.remote(refused).remote())
    error = job_error(denied.value)
    assert type(error) is CoughError and str(error) == "cannot write /x/part-1.parquet: Access Denied"
