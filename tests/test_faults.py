"""The jobs against a store that fails: a fault-injecting proxy (tests/faultproxy.py) between
them and the S3 server (moto's, its own process on loopback) answers some requests with 503
SlowDown or 500, resets or drops the connection, cuts an answer mid-headers or mid-body, or
delays it. Every job retries (cough.tables.storage: the clients' own retries, then cough's
one policy), so faults that end change nothing: every recording is in PRED exactly once, the
file ledger agrees with PRED, and a rerun without faults does nothing. A recording the store
keeps failing to give is a transient error row that the ledger does not record, and the next
night reads it again; an artifact a job cannot read stops it (exit 1) with one line naming
it and the cause. See docs/storage.md."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest

from cough.cli import main as cli
from cough.tables.listing import UNREAD

from .conftest import SAMPLE
from .faultproxy import Rule
from .helpers import write_model

pytestmark = pytest.mark.slow

#: About 15% of all requests fail, every kind of fault.
FLAKY = [Rule("503", rate=0.04), Rule("500", rate=0.02), Rule("reset", rate=0.02), Rule("cut_headers", rate=0.02),
         Rule("cut_body", rate=0.02), Rule("drop", rate=0.02), Rule("delay", rate=0.01, delay_s=1.0)]


def _objects(uri: str) -> dict:
    """Every object under ``uri``: key -> (size, mtime), read past the proxy."""
    fs, path = pafs.FileSystem.from_uri(uri)
    return {i.path: (i.size, i.mtime) for i in fs.get_file_info(pafs.FileSelector(path, recursive=True,
                                                                                  allow_not_found=True))
            if i.type == pafs.FileType.File}


def _delta(uri: str) -> pd.DataFrame:
    from deltalake import DeltaTable

    from cough.tables.delta import storage_options

    return DeltaTable(uri, storage_options=storage_options()).to_pandas()


def _errors(out: str) -> list:
    """The reasons of an OUT's error rows."""
    import pyarrow.parquet as pq

    fs, path = pafs.FileSystem.from_uri(out)
    table = pq.read_table(f"{path}/recordings", filesystem=fs, columns=["path", "status", "error"]).to_pylist()
    return [(r["path"], r["error"]) for r in table if r["status"] == "error"]


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _consistent(pred: str, n: int) -> pd.DataFrame:
    """PRED holds ``n`` rows, one per path and per recording; the ledger holds every path of
    PRED but its transient errors, once per file version."""
    rows, ledger = _delta(pred), _delta(f"{pred}/_ledger")
    assert len(rows) == n and rows.path.is_unique, rows.path.value_counts().head()
    readable = rows.recording_id.dropna()
    assert readable.is_unique
    unread = rows.error.fillna("").str.startswith(UNREAD)
    assert set(ledger.path) == set(rows.path[~unread])
    assert not ledger.duplicated(["path", "file_size", "file_mtime_ns", "model_version"]).any()
    return rows


@pytest.fixture(scope="module")
def model(tmp_path_factory, sample_features) -> Path:
    return write_model(tmp_path_factory.mktemp("faults-model") / "model", train_on=sample_features)


#: The recordings of seven participants (22 files): the smaller archive of the nights' tests.
SMALL = sorted(p.name for p in (SAMPLE / "raw").iterdir() if p.name[:8] <= "s7p00006")
#: A recording whose GET always fails (503), one whose HEAD answer is always cut (it would
#: read as 0 bytes), one whose HEAD answer is cut once.
NO_GET, NO_HEAD, ONE_HEAD = SMALL[1], SMALL[5], SMALL[9]


@pytest.fixture
def small_store(s3, fresh_ray, model, tmp_path):
    """A new bucket holding :data:`SMALL` (raw/), the labels and MODEL, uploaded past the proxy."""
    import shutil

    bucket = s3.bucket()
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in SMALL:
        shutil.copy(SAMPLE / "raw" / name, raw / name)
    s3.upload(raw, f"{bucket}/raw")
    s3.upload(SAMPLE / "labels.csv", f"{bucket}/labels.csv")
    s3.upload(model, f"{bucket}/model")
    return bucket


@pytest.fixture
def store(s3, fresh_ray, model):
    """A new bucket holding the sample archive (raw/, labels.csv) and MODEL, uploaded past the
    proxy; Ray starts afresh inside the jobs, its workers reaching the store through it."""
    bucket = s3.bucket()
    s3.upload(SAMPLE / "raw", f"{bucket}/raw")
    s3.upload(SAMPLE / "labels.csv", f"{bucket}/labels.csv")
    s3.upload(model, f"{bucket}/model")
    return bucket


def test_featurize_train_score_report_survive_a_flaky_store_and_a_rerun_changes_nothing(store, faults, capsys):
    b = store
    faults.reset(FLAKY)
    assert cli(["featurize", f"{b}/raw", "--labels", f"{b}/labels.csv", "--out", f"{b}/features",
                "--num-cpus", "2", "--json"]) == 0
    featurized = _json(capsys)
    assert (featurized["inputs"], featurized["ok"] + featurized["rejected"], featurized["unread"]) == (60, 60, 0), \
        _errors(f"{b}/features")
    assert cli(["train", f"{b}/features", "--out", f"{b}/trained", "--epochs", "1", "--workers", "1",
                "--storage", f"{b}/checkpoints", "--json"]) == 0
    trained = _json(capsys)
    assert cli(["score", f"{b}/raw", "--model", f"{b}/trained", "--out", f"{b}/pred", "--labels", f"{b}/labels.csv",
                "--json"]) == 0
    scored = _json(capsys)
    assert (scored["inputs"], scored["scored"], scored["unread"]) == (60, 60, 0)
    assert cli(["report", f"{b}/pred", "--out", f"{b}/report", "--n-boot", "100", "--json"]) == 0
    reported = _json(capsys)
    hit = dict(faults.counts)
    assert all(hit.get(kind) for kind in ("503", "500", "reset", "cut_headers", "cut_body", "drop")), hit

    faults.reset()
    rows = _consistent(f"{b}/pred", 60)
    assert (rows.status != "error").all() and set(rows.model_version) == {trained["version"]}
    fs, root = pafs.FileSystem.from_uri(b)
    metrics = json.loads(fs.open_input_stream(f"{root}/report/metrics.json").read())
    assert metrics["run"]["model"] == f"{b}/trained" and metrics["n"] == reported["n"]
    assert metrics["threshold_source"].startswith("the model")  # model.json was read, not a fallback
    before = _objects(f"{b}/pred")
    assert cli(["score", f"{b}/raw", "--model", f"{b}/trained", "--out", f"{b}/pred", "--json"]) == 0
    again = _json(capsys)
    assert (again["seen_before"], again["bytes_read"], again["scored"], again["run_id"]) == (60, 0, 0, None)
    assert _objects(f"{b}/pred") == before
    print("faults:", hit)


def _night(b: str, capsys) -> tuple[int, dict]:
    code = cli(["nightly", f"{b}/raw", "--model", f"{b}/model", "--pred", f"{b}/pred", "--labels", f"{b}/labels.csv",
                "--max-error-rate", "0.2", "--json"])
    return code, _json(capsys)


def test_a_recording_the_store_keeps_failing_is_read_again_the_next_night(small_store, faults, capsys):
    b, n = small_store, len(SMALL)
    faults.reset([Rule("503", methods={"GET"}, key=f"/raw/{NO_GET}$"),
                  Rule("cut_headers", methods={"HEAD"}, key=f"/raw/{NO_HEAD}$"),
                  Rule("cut_headers", methods={"HEAD"}, key=f"/raw/{ONE_HEAD}$", times=1), *FLAKY])
    code, night = _night(b, capsys)
    assert code == 0, night
    assert (night["listed"], night["scored"], night["errors"], night["unread"]) == (n, n, 2, 2), night
    assert faults.counts["cut_headers"] >= 2
    faults.reset()  # the test's own reads go through the proxy too
    rows = _consistent(f"{b}/pred", n)
    unread = rows[rows.error.fillna("").str.startswith(UNREAD)]
    assert sorted(p.rsplit("/", 1)[1] for p in unread.path) == sorted([NO_GET, NO_HEAD])
    assert (unread.status == "error").all() and unread.recording_id.isna().all()
    assert unread.error.str.contains("after 5 attempts").all(), list(unread.error)
    once = rows[rows.path.str.endswith(f"/{ONE_HEAD}")]
    assert list(once.status) != ["error"], list(once.error)  # one cut answer: read again at once, not 0 bytes

    faults.reset(FLAKY)  # the store gives them now: the next night reads the two again, and only them
    code, night = _night(b, capsys)
    assert code == 0, night
    assert (night["seen_before"], night["new"], night["scored"], night["unread"]) == (n - 2, 2, 2, 0), night
    faults.reset()
    rows = _consistent(f"{b}/pred", n)
    assert not rows.error.fillna("").str.startswith(UNREAD).any()
    assert rows.recording_id.notna().all()

    faults.reset()
    before = _objects(f"{b}/pred")
    code, night = _night(b, capsys)
    assert code == 0 and (night["seen_before"], night["scored"], night["run_id"]) == (n, 0, None), night
    assert _objects(f"{b}/pred") == before


def _last_line(capsys) -> tuple[dict, str]:
    out, err = capsys.readouterr()
    return json.loads(out.strip().splitlines()[-1]), err.strip().splitlines()[-1]


def test_a_ray_task_the_store_fails_ends_the_run_with_its_cause_in_one_line(small_store, faults, capsys):
    b = small_store
    assert cli(["score", f"{b}/raw", "--model", f"{b}/model", "--out", f"{b}/pred", "--json"]) == 0
    capsys.readouterr()
    before = _objects(f"{b}/pred")
    faults.reset([Rule("503", methods={"GET"}, key=r"/pred/_ledger/bucket(=|%3D)")])  # the ledger lookup's reads
    assert cli(["score", f"{b}/raw", "--model", f"{b}/model", "--out", f"{b}/pred", "--json"]) == 1
    summary, line = _last_line(capsys)
    for text in (line, summary["error"]):
        assert "\x1b" not in text and "ray::" not in text and "Traceback" not in text, text
        assert "file ledger" in text and "SLOW_DOWN" in text and "after 5 attempts" in text, text
    faults.reset()
    assert _objects(f"{b}/pred") == before


def test_report_stops_when_model_json_cannot_be_read_and_the_previous_report_stays(small_store, faults, capsys):
    b = small_store
    assert cli(["score", f"{b}/raw", "--model", f"{b}/model", "--out", f"{b}/pred", "--labels", f"{b}/labels.csv"]) == 0
    report = ["report", f"{b}/pred", "--out", f"{b}/report", "--n-boot", "100", "--json"]
    faults.reset([Rule("503", methods={"GET"}, key=r"/model/model\.json$", times=2)])  # a few 503s: retried
    assert cli(report) == 0
    assert _json(capsys)["threshold"] == 0.5
    fs, root = pafs.FileSystem.from_uri(b)
    metrics = json.loads(fs.open_input_stream(f"{root}/report/metrics.json").read())
    assert metrics["threshold_source"].startswith("the model") and metrics["run"]["model"] == f"{b}/model"
    before = _objects(f"{b}/report")

    faults.reset([Rule("503", methods={"GET"}, key=r"/model/model\.json$")])  # model.json unreadable: no report
    assert cli(report) == 1
    summary, line = _last_line(capsys)
    assert summary["exit_code"] == 1
    for text in (line, summary["error"]):
        assert f"{b}/model/model.json" in text and "SLOW_DOWN" in text and "after 5 attempts" in text, text
    faults.reset()
    assert _objects(f"{b}/report") == before


def test_weights_that_fail_once_are_read_and_weights_that_always_fail_stop_score_naming_why(small_store, faults,
                                                                                           capsys):
    b, n = small_store, len(SMALL)
    weights = r"/model/weights[^/]*\.h5$"
    faults.reset([Rule("cut_headers", methods={"GET"}, key=weights, times=1),
                  Rule("503", methods={"GET"}, key=weights, times=2)])
    assert cli(["score", f"{b}/raw", "--model", f"{b}/model", "--out", f"{b}/pred", "--json"]) == 0
    assert _json(capsys)["scored"] == n and faults.counts["faults"] == 3
    faults.reset([Rule("503", methods={"GET"}, key=weights)])
    assert cli(["score", f"{b}/raw", "--model", f"{b}/model", "--out", f"{b}/pred2", "--json"]) == 1
    summary, line = _last_line(capsys)
    for text in (line, summary["error"]):
        assert "weights" in text and "SLOW_DOWN" in text and "after 5 attempts" in text, text
    faults.reset()
    assert _objects(f"{b}/pred2") == {}


def _fails(text: str):
    raise OSError(text)


def test_an_error_out_of_a_ray_task_is_its_cause_in_one_line_without_colour_codes(ray_local):
    from cough.errors import describe, job_error

    ray = ray_local
    chain = "Kernel error -> Generic S3 error\n  \x1b[31m\u21b3\x1b[0m end of file before message length reached"
    with pytest.raises(Exception) as raised:
        ray.get(ray.remote(_fails).options(num_cpus=1, max_retries=0).remote(chain))
    assert "\x1b[" in str(raised.value) and "ray::_fails()" in str(raised.value)  # as Ray gives it
    assert describe(raised.value) == ("OSError: Kernel error -> Generic S3 error: end of file before message "
                                      "length reached")  # what the job's one line on stderr says
    assert job_error(ValueError("not Ray's")).__class__ is ValueError
