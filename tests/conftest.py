"""Shared fixtures: a real local Ray instance, the bundled sample archive, its features, and
a real S3-API server (moto's, its own process on a loopback port) for object storage.

Ray on 2 cores: one 2-CPU local instance is shared by the in-process tests; tests that
need another topology (a multi-node Cluster, `ray start`) shut it down first and the
next test that asks for ``ray_local`` starts it again. ``address="local"``: a private
instance, never one that a Cluster or `ray start` elsewhere on the machine recorded in
/tmp/ray/ray_current_cluster (ray.init would join it, and refuse num_cpus).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from cough.runtime import set_tensorflow_env, tensorflow_env
from cough.score import ScoreSettings, score

from .helpers import write_model

set_tensorflow_env()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Every AWS variable points at the loopback S3 server from the first line of the session, before
# any Ray worker starts: no test, and no worker, can reach a real store or a cloud metadata
# service (delta-rs asks one when it finds no credentials; here it is a closed loopback port).
S3_ENDPOINT = f"http://127.0.0.1:{free_port()}"
for _k in [k for k in os.environ if k.startswith(("AWS_", "GOOGLE_"))]:
    del os.environ[_k]
os.environ.update({"AWS_ENDPOINT_URL": S3_ENDPOINT, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_EC2_METADATA_DISABLED": "true", "AWS_METADATA_ENDPOINT": f"http://127.0.0.1:{free_port()}",
                   "AWS_ACCESS_KEY_ID": "not-yet", "AWS_SECRET_ACCESS_KEY": "not-yet",
                   "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull})

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
SHARED = Path(os.environ.get("COUGH_SHARED_DATA", ROOT.parent / "shared" / "data" / "covid19-cough"))
#: Fixtures that start Ray or give a test the sample archive to run a job on. The fast tier
#: (`make test-fast`, ``-m fast``) is every doctest and every test that uses none of them,
#: directly or through another fixture, and is not marked slow, shared or whole_report.
SLOW_FIXTURES = {"ray_local", "fresh_ray", "sample_archive", "sample_features", "shared_archive", "ray_tmpdir",
                 "untrimmed_archive"}
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
        ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": tensorflow_env()})
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

    from cough.featurize import FeaturizeSettings, featurize

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": tensorflow_env()})
    out = tmp_path_factory.mktemp("features") / "out"
    featurize(str(SAMPLE / "raw"), str(out), FeaturizeSettings(labels=str(SAMPLE / "labels.csv")))
    return out


@pytest.fixture(scope="session")
def shared_archive() -> Path:
    """The real covid19-cough archive in ../shared; skips when it is absent."""
    if not (SHARED / "raw").is_dir():
        pytest.skip(f"shared archive not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def untrimmed_archive() -> Path:
    """The same archive before it was cut to the cough, with the annotated spans, in ../shared;
    skips when it is absent."""
    untrimmed = SHARED.parent / "covid19-cough-untrimmed"
    if not (untrimmed / "raw").is_dir():
        pytest.skip(f"untrimmed archive not found at {untrimmed}")
    return untrimmed


@dataclass
class S3:
    """The loopback S3 server: ``bucket()`` makes a new bucket and returns its ``s3://`` URI."""

    endpoint: str
    credentials: dict

    @contextmanager
    def denied(self, *statements: tuple[str, str]):
        """While the block runs, the store refuses each ``(action, s3 URI pattern)`` to the test
        user (an IAM Deny beside its Allow), e.g. ``("s3:GetObject", "s3://b/locked/*")``: to the
        driver and to every Ray worker alike, as a store whose policy says no."""
        import boto3

        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name="us-east-1", **self.credentials)
        iam.put_user_policy(UserName="cough", PolicyName="deny", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": action,
                                                    "Resource": "arn:aws:s3:::" + uri.split("://", 1)[1]}
                                                   for action, uri in statements]}))
        try:
            yield
        finally:
            iam.delete_user_policy(UserName="cough", PolicyName="deny")

    def bucket(self) -> str:
        import boto3

        name = f"cough-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.endpoint, **self.credentials).create_bucket(Bucket=name)
        return f"s3://{name}"

    def upload(self, local: Path, uri: str) -> str:
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(uri)
        if local.is_dir():
            pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
        else:
            with fs.open_output_stream(path) as f:
                f.write(local.read_bytes())
        return uri


@pytest.fixture(scope="session")
def s3() -> S3:
    """moto's S3 server as its own process on a free loopback port, with authentication on:
    one IAM user whose keys go into AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (requests without
    valid keys are refused, as on a real store). Tests that run Ray against it start a fresh
    instance (``fresh_ray``) so that its workers inherit these variables."""
    import boto3

    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    port = S3_ENDPOINT.rsplit(":", 1)[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("moto's S3 server did not start")
            time.sleep(0.2)
    iam = boto3.client("iam", endpoint_url=S3_ENDPOINT)  # the three actions allowed without keys
    iam.create_user(UserName="cough")
    # s3:*, and the right to change its own policy (S3.denied: a store that refuses some requests)
    iam.put_user_policy(UserName="cough", PolicyName="s3", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*", "Action": [
            "s3:*", "iam:PutUserPolicy", "iam:DeleteUserPolicy"]}]}))
    key = iam.create_access_key(UserName="cough")["AccessKey"]
    credentials = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
    os.environ.update(AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
    yield S3(S3_ENDPOINT, credentials)
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture
def faults(s3):
    """A fault-injecting proxy (tests/faultproxy.py) in front of the S3 server, with no rules
    yet (transparent): for the test's length AWS_ENDPOINT_URL names it, so the jobs, their Ray
    workers (Ray started after this fixture, e.g. by a job after ``fresh_ray``) and delta-rs
    reach the store through it. Buckets made and files uploaded before it (``s3.bucket()``,
    ``s3.upload``) went to the server directly. Its seed is 26, or COUGH_FAULT_SEED (to try
    the same faults on other requests)."""
    from .faultproxy import FaultProxy

    proxy = FaultProxy(s3.endpoint, seed=int(os.environ.get("COUGH_FAULT_SEED", "26"))).start()
    before = os.environ["AWS_ENDPOINT_URL"]
    os.environ["AWS_ENDPOINT_URL"] = proxy.url
    try:
        yield proxy
    finally:
        os.environ["AWS_ENDPOINT_URL"] = before
        proxy.stop()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, sample_features) -> Path:
    return write_model(tmp_path_factory.mktemp("model") / "model", train_on=sample_features)


@pytest.fixture(scope="module")
def sample_pred(tmp_path_factory, model_dir, sample_features) -> Path:
    """PRED of one uninterrupted run over data/sample/raw with its labels."""
    import ray

    from cough.runtime import tensorflow_env

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": tensorflow_env()})
    pred = tmp_path_factory.mktemp("pred") / "pred"
    score(str(SAMPLE / "raw"), str(model_dir), str(pred), ScoreSettings(labels=str(SAMPLE / "labels.csv")))
    return pred
