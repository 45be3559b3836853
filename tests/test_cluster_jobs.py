"""Jobs submitted to a real Ray cluster with `ray start --head` and `ray job submit`,
as the README tells users to do."""

from __future__ import annotations

import sys

import pyarrow.parquet as pq
import pytest

from .cluster import last_json, ray_head, submit
from .conftest import ROOT

pytestmark = pytest.mark.slow


def test_featurize_submitted_as_a_ray_job(tmp_path, fresh_ray):
    out = tmp_path / "features"
    with ray_head() as (_, url):
        job = submit(url, sys.executable, "-m", "jobs.featurize", str(ROOT / "data" / "sample" / "raw"),
                     "--labels", str(ROOT / "data" / "sample" / "labels.csv"), "--out", str(out), "--json",
                     cwd=ROOT)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    summary = last_json(job.stdout)
    assert summary["inputs"] == summary["ok"] == pq.read_table(out / "recordings").num_rows == 60
