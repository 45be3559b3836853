"""Which Ray a job runs on: a running local instance is joined, a stale address file is
not fatal, and contradicting flags are usage errors. Each test keeps Ray's files (and
its address file) under its own RAY_TMPDIR, so other Ray instances on the machine are
neither joined nor disturbed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from .cluster import free_port, ray_head
from .conftest import ROOT, SAMPLE


@pytest.fixture
def ray_tmpdir():
    root = tempfile.mkdtemp(prefix="rq", dir="/tmp")  # short: Ray's socket paths have a length limit
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def three_recordings(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in sorted((SAMPLE / "raw").iterdir())[:3]:
        shutil.copy(f, raw)
    return raw


def _featurize(raw, out, *flags, env=None):
    return subprocess.run([sys.executable, "-m", "cough", "featurize", str(raw), "--out", str(out), "--json", *flags],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def test_a_stale_address_file_starts_a_fresh_local_instance(tmp_path, ray_tmpdir, three_recordings):
    os.makedirs(f"{ray_tmpdir}/ray")
    with open(f"{ray_tmpdir}/ray/ray_current_cluster", "w") as f:  # what a head killed by a signal leaves
        f.write(f"127.0.0.1:{free_port()}")
    result = _featurize(three_recordings, tmp_path / "out", "--num-cpus", "1", env={"RAY_TMPDIR": ray_tmpdir})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1])["ok"] == 3
    assert "nothing answers there" in result.stderr and "starting a fresh local instance" in result.stderr


@pytest.mark.slow
def test_a_local_job_joins_the_instance_ray_start_runs(tmp_path, ray_tmpdir, three_recordings, fresh_ray):
    with ray_head(num_cpus=1, temp_dir=f"{ray_tmpdir}/ray") as (gcs, _):
        result = _featurize(three_recordings, tmp_path / "out", "--num-cpus", "1",
                            env={"RAY_TMPDIR": ray_tmpdir, "RAY_AUTH_MODE": "token"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1])["ok"] == 3
    port = gcs.rsplit(":", 1)[1]  # `ray start` records the machine's address, not the loopback one
    assert "joining the Ray instance running on this machine at" in result.stderr and f":{port} " in result.stderr
    assert "--num-cpus 1 is ignored" in result.stderr


@pytest.mark.parametrize("flags, env", [(["--address", "127.0.0.1:1"], {}), ([], {"RAY_ADDRESS": "127.0.0.1:1"})])
def test_num_cpus_with_an_address_is_a_usage_error(tmp_path, flags, env):
    result = _featurize(SAMPLE / "raw", tmp_path / "out", "--num-cpus", "2", *flags, env=env)
    assert result.returncode == 2
    assert "--num-cpus" in result.stderr.splitlines()[-1] and "127.0.0.1:1" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("folder, message", [("data", "absolute path"), ("s3://bucket/x", "object storage"),
                                             ("/no/such/folder", "is not a folder on this machine")])
def test_a_bad_shared_path_is_a_usage_error_before_ray(tmp_path, folder, message):
    result = _featurize(SAMPLE / "raw", tmp_path / "out", "--shared-path", folder)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_head_without_cpus_refuses_local_paths_before_any_worker_has_joined(tmp_path, ray_tmpdir,
                                                                               three_recordings, fresh_ray):
    """cluster.yaml's head has no CPU and its workers come from the autoscaler: every task will run
    on a machine that has not even started yet, so local paths are refused though the head is alone."""
    with ray_head(num_cpus=0, temp_dir=f"{ray_tmpdir}/ray") as (gcs, _):
        result = _featurize(three_recordings, tmp_path / "out", "--address", gcs,
                            env={"RAY_TMPDIR": ray_tmpdir, "RAY_AUTH_MODE": "token"})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"SOURCE {three_recordings}, --out {tmp_path / 'out'}: local paths" in lines[-1]
    assert "this node offers no CPU: an autoscaler starts the workers" in lines[-1]
    assert not (tmp_path / "out").exists()
