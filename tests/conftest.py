"""Shared fixtures: a real local Ray instance, the bundled sample archive, its features.

Ray on 2 cores: one 2-CPU local instance is shared by the in-process tests; tests that
need another topology (a multi-node Cluster, `ray start`) shut it down first and the
next test that asks for ``ray_local`` starts it again.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cough.runtime import WORKER_ENV

for _k, _v in WORKER_ENV.items():
    os.environ.setdefault(_k, _v)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
SHARED = Path(os.environ.get("COUGH_SHARED_DATA", ROOT.parent / "shared" / "data" / "covid19-cough"))
#: Fixtures that start Ray or give a test the sample archive to run a job on. The fast tier
#: (`make test-fast`, ``-m fast``) is every doctest and every test that uses none of them,
#: directly or through another fixture, and is not marked slow, shared or whole_report.
SLOW_FIXTURES = {"ray_local", "fresh_ray", "sample_archive", "sample_features", "shared_archive", "ray_tmpdir"}
NOT_FAST_MARKERS = ("slow", "shared", "whole_report")


@pytest.hookimpl(tryfirst=True)  # before -m selects on the marker
def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())) and not any(
                item.get_closest_marker(name) for name in NOT_FAST_MARKERS):
            item.add_marker(pytest.mark.fast)


@pytest.fixture
def ray_local():
    """A running 2-CPU local Ray instance (started once, reused)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": dict(WORKER_ENV)})
    yield ray


@pytest.fixture
def fresh_ray():
    """No Ray in this process before or after the test (for tests that start their own)."""
    import ray

    ray.shutdown()
    yield
    ray.shutdown()


@pytest.fixture
def sample_archive(tmp_path) -> Path:
    """A private copy of data/sample (raw/ + labels.csv) that a test may change."""
    dst = tmp_path / "sample"
    shutil.copytree(SAMPLE, dst)
    return dst


@pytest.fixture(scope="session")
def sample_features(tmp_path_factory) -> Path:
    """``cough featurize`` output for data/sample, made once per session."""
    import ray

    from jobs.featurize import featurize

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": dict(WORKER_ENV)})
    out = tmp_path_factory.mktemp("features") / "out"
    featurize(str(SAMPLE / "raw"), str(out), labels=str(SAMPLE / "labels.csv"))
    return out


@pytest.fixture(scope="session")
def shared_archive() -> Path:
    """The real covid19-cough archive in ../shared; skips when it is absent."""
    if not (SHARED / "raw").is_dir():
        pytest.skip(f"shared archive not found at {SHARED}")
    return SHARED
