"""Secrets stay out: a whole s3:// run (labels, featurize, train, score, nightly, report) writes
its access key and secret nowhere (no object in the bucket, no local output, no Ray log, no
line of stdout, stderr or --json), and a URI that carries credentials is refused without
repeating them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from .conftest import ROOT, SAMPLE

pytestmark = pytest.mark.slow


def _cough(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cough", *args, "--json"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


def _everything_under(uri: str) -> bytes:
    fs, path = pafs.FileSystem.from_uri(uri)
    out = b""
    for info in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as f:
                out += f.read()
    return out


def test_a_whole_s3_run_writes_its_credentials_nowhere(s3, fresh_ray, tmp_path):
    secret, key = os.environ["AWS_SECRET_ACCESS_KEY"], os.environ["AWS_ACCESS_KEY_ID"]
    bucket = s3.bucket()
    s3.upload(SAMPLE / "raw", f"{bucket}/raw")
    s3.upload(SAMPLE / "labels.csv", f"{bucket}/labels.csv")
    ray_dir = Path(tempfile.mkdtemp(prefix="ck", dir="/tmp"))  # Ray's sockets need a short path: its logs too
    env = {**os.environ, "RAY_TMPDIR": str(ray_dir), "PYTHONPATH": str(ROOT)}
    said = []
    for args in (["featurize", f"{bucket}/raw", "--labels", f"{bucket}/labels.csv", "--out", f"{bucket}/features"],
                 ["train", f"{bucket}/features", "--out", f"{bucket}/model", "--epochs", "1"],
                 ["score", f"{bucket}/raw", "--model", f"{bucket}/model", "--out", f"{bucket}/pred", "-v"],
                 ["nightly", f"{bucket}/raw", "--model", f"{bucket}/model", "--pred", f"{bucket}/pred"],
                 ["report", f"{bucket}/pred", "--out", f"{bucket}/report", "--n-boot", "100"],
                 ["report", f"{bucket}/pred", "--out", str(tmp_path / "report"), "--n-boot", "100"]):
        done = _cough([*args, *(["--num-cpus", "2", "--address", "local"] if args[0] in
                                ("featurize", "train", "score", "nightly") else [])], env)
        assert done.returncode == 0, done.stderr[-3000:]
        said += [done.stdout, done.stderr]
    stored = _everything_under(bucket)
    local = b"".join(p.read_bytes() for folder in (tmp_path, ray_dir) for p in folder.rglob("*")
                     if p.is_file() and not p.is_symlink())
    shutil.rmtree(ray_dir, ignore_errors=True)
    assert len(stored) > 1_000_000 and len(local) > 10_000  # what was searched: OUT, MODEL, PRED, reports, logs
    for planted in (secret, key):
        assert planted.encode() not in stored and planted.encode() not in local
        assert not any(planted in text for text in said)


@pytest.mark.parametrize("uri", ["s3://{key}:{secret}@bucket/raw", "gs://{key}:{secret}@bucket/raw",
                                 "ftp://{key}:{secret}@host/raw"])
def test_a_uri_with_credentials_is_refused_without_repeating_them(uri, tmp_path):
    key, secret = "AKIAPLANTEDKEY0000", "planted/Secret+Value0123456789"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = _cough(["featurize", uri.format(key=key, secret=secret), "--out", str(tmp_path / "out")], env)
    assert done.returncode == 2
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert "credentials" in summary["error"] and "AWS_ACCESS_KEY_ID" in summary["error"]
    for text in (done.stdout, done.stderr):
        assert secret not in text and key not in text
    assert not Path(tmp_path / "out").exists()
