"""Jobs submitted to a real Ray cluster with `ray start --head` and `ray job submit`,
as the README tells users to do."""

from __future__ import annotations

import sys

import pyarrow.parquet as pq
import pytest

from .cluster import last_json, ray_head, submit
from .conftest import ROOT, SAMPLE
from .test_score import write_model

pytestmark = pytest.mark.slow


def test_featurize_and_score_submitted_as_ray_jobs(tmp_path, fresh_ray):
    out, pred = tmp_path / "features", tmp_path / "pred"
    model = write_model(tmp_path / "model")
    with ray_head() as (_, url):
        featurized = submit(url, sys.executable, "-m", "jobs.featurize", str(SAMPLE / "raw"),
                            "--labels", str(SAMPLE / "labels.csv"), "--out", str(out), "--json", cwd=ROOT)
        assert featurized.returncode == 0, featurized.stdout[-3000:] + featurized.stderr[-3000:]
        scored = submit(url, sys.executable, "-m", "jobs.score", str(SAMPLE / "raw"), "--model", str(model),
                        "--out", str(pred), "--json", cwd=ROOT)
        assert scored.returncode == 0, scored.stdout[-3000:] + scored.stderr[-3000:]
        failed = submit(url, sys.executable, "-m", "jobs.score", str(SAMPLE / "raw"), "--model",
                        str(tmp_path / "no-model"), "--out", str(tmp_path / "pred2"), cwd=ROOT)
    summary = last_json(featurized.stdout)
    assert summary["inputs"] == summary["ok"] == pq.read_table(out / "recordings").num_rows == 60
    assert last_json(scored.stdout)["scored"] == 60 == pq.read_table(pred).num_rows
    assert failed.returncode != 0 and "has no model.json" in failed.stdout + failed.stderr
    assert not (tmp_path / "pred2").exists()
