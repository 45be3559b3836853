"""cough maintain: PRED and its file ledger compacted, checkpointed and vacuumed, on a local
folder and on s3:// (moto's server), while a `cough score` commits to the same PRED; every
recording stays exactly once, every version stays readable, and the report shows the tables'
health."""

from __future__ import annotations

import json
import threading

import pytest
from deltalake import DeltaTable

from cough.cli import main as cli
from cough.errors import UsageError
from cough.score import ScoreSettings, score
from cough.synth import synth_archive
from cough.tables.delta import storage_options
from cough.tables.maintain import MaintainSettings, maintain

from .conftest import SAMPLE
from .helpers import write_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tmp_path_factory, sample_features):
    return write_model(tmp_path_factory.mktemp("maintain-model") / "model", train_on=sample_features)


def _rows(pred: str):
    return DeltaTable(pred, storage_options=storage_options()).to_pandas(columns=["path", "recording_id", "status"])


def _maintain_while_scoring(src: str, new: str, model: str, pred: str) -> list[dict]:
    """Score ``src`` in chunks of 5 (many small files), then score ``new`` in a thread while
    maintenance runs, again and again, on the same PRED; returns what maintenance did."""
    score(src, model, pred, ScoreSettings(commit_every=1))  # a commit per batch: small files
    runs: list[dict] = []
    scoring = threading.Thread(target=score, args=(new, model, pred, ScoreSettings(commit_every=2)))
    scoring.start()
    while scoring.is_alive() or not runs:
        runs.append(maintain(pred))
    scoring.join()
    return runs


def test_maintenance_while_a_score_commits_keeps_every_recording_once_and_every_version_readable(
        tmp_path, model, ray_local, capsys):
    synth_archive(tmp_path / "new", n=8, seed=77, max_duration_s=2)
    pred = str(tmp_path / "pred")
    runs = _maintain_while_scoring(str(SAMPLE / "raw"), str(tmp_path / "new" / "raw"), str(model), pred)
    first = runs[0]
    assert first["table"]["before"]["files"] >= 4 and first["table"]["after"]["files"] == 1  # one per chunk, then one
    assert first["ledger"]["after"]["small_files"] <= first["ledger"]["before"]["small_files"]
    assert first["table"]["checkpoint"] and first["table"]["vacuumed"] == 0  # nothing is a week old
    rows = _rows(pred)
    assert len(rows) == 68 and rows["path"].is_unique  # every recording once, the night's 8 included
    for version in range(DeltaTable(pred).version() + 1):  # compaction left every older version readable
        DeltaTable(pred, version=version).to_pyarrow_table(columns=["path"])
    ledger = DeltaTable(f"{pred}/_ledger").to_pandas(columns=["path"])
    assert set(ledger["path"]) == set(rows["path"])

    assert cli(["report", pred, "--out", str(tmp_path / "report"), "--n-boot", "100", "--json"]) == 0
    capsys.readouterr()
    tables = json.loads((tmp_path / "report" / "metrics.json").read_text())["operations"]["tables"]
    assert tables["table"]["rows"] == 68 and tables["table"]["files"] == DeltaTable(pred).get_add_actions().num_rows
    assert "The tables" in (tmp_path / "report" / "report.html").read_text()


def test_maintenance_on_s3_while_a_score_commits(s3, fresh_ray, model, tmp_path):
    bucket = s3.bucket()
    s3.upload(SAMPLE / "raw", f"{bucket}/raw")
    synth_archive(tmp_path / "new", n=6, seed=78, max_duration_s=2)
    s3.upload(tmp_path / "new" / "raw", f"{bucket}/new")
    s3.upload(model, f"{bucket}/model")
    runs = _maintain_while_scoring(f"{bucket}/raw", f"{bucket}/new", f"{bucket}/model", f"{bucket}/pred")
    assert runs[0]["table"]["after"]["files"] < runs[0]["table"]["before"]["files"]
    rows = _rows(f"{bucket}/pred")
    assert len(rows) == 66 and rows["path"].is_unique


def test_a_retention_below_deltas_default_is_refused_before_anything(tmp_path, capsys):
    with pytest.raises(UsageError, match="below Delta's 168"):
        MaintainSettings(retention_hours=24)
    assert cli(["maintain", str(tmp_path), "--retention-hours", "1"]) == 2
    assert "at least 168" in capsys.readouterr().err
