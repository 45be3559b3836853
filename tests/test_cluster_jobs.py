"""The README's cluster walkthrough, run as written (`ray start` + `ray job submit`), beside
another Ray instance that must survive it; plus what a submitted job refuses."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from .conftest import ROOT
from .helpers import write_model

pytestmark = pytest.mark.slow
MARKER = "<!-- cluster walkthrough: tests/test_cluster_jobs.py runs this block as written -->"
STOP = "kill $HEAD_PID"
#: Run before the README's last line, while the head is up.
EXTRA = """
echo "head: $HEAD pid $HEAD_PID"
ray job submit --address $DASHBOARD --working-dir . -- python -m jobs.featurize data/sample/raw \\
    --out out/relative && echo "relative: 0" || echo "relative: $?"
ray job submit --address $DASHBOARD --working-dir . -- python -m jobs.score "$PWD/data/sample/raw" \\
    --model "$PWD/no-model" --out "$PWD/out/cluster/pred2" && echo "no model: 0" || echo "no model: $?"
echo "stopping at $(date +%s.%N)"
"""
#: Run after the README's last line.
AFTER = 'echo "stopped at $(date +%s.%N)"\n'


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text[text.index(MARKER):], re.S).group(1)
    assert block.rstrip().splitlines()[-1].startswith(STOP)
    return block


def _processes_naming(text: str) -> list[int]:
    """Pids of this machine's processes whose command line contains ``text`` (Linux /proc)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _gone(head_dir: str, timeout: float = 60) -> bool:
    """No process left whose command line names the head's temp dir."""
    deadline = time.time() + timeout
    while _processes_naming(head_dir):
        if time.time() > deadline:
            return False
        time.sleep(1)
    return True


def test_the_readme_cluster_walkthrough_runs_as_written_beside_another_ray(tmp_path, ray_local):
    repo = tmp_path / "repo"  # the files the block uses, so that its out/ lands here
    for part in ("cough", "jobs", "data/sample"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / ".venv").symlink_to(sys.prefix)
    write_model(repo / "out" / "demo" / "model")
    block = walkthrough()
    script = block.replace(STOP, EXTRA.strip() + "\n" + STOP) + AFTER
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
    done = subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    head = re.search(r"head: (\S+) pid (\d+)", done.stdout)
    assert head, output[-5000:]
    if _alive(int(head.group(2))):  # the README's last line did not stop it: clean up, then fail
        os.kill(int(head.group(2)), 15)
        pytest.fail(f"the head outlived `{STOP}`:\n{output[-3000:]}")
    assert _gone(head.group(1)), "processes of the walkthrough's head are left"
    # Ray drains a node for up to 30 s on SIGTERM unless told not to: the README's last line took 31 s
    stop = float(re.search(r"stopped at (\S+)", done.stdout).group(1)) - float(re.search(r"stopping at (\S+)", done.stdout).group(1))
    assert stop < 15, f"the head took {stop:.0f} s to stop"

    features, pred = repo / "out" / "cluster" / "features", repo / "out" / "cluster" / "pred"
    assert pq.read_table(features / "recordings").num_rows == 60, output[-5000:]
    assert DeltaTable(str(pred)).to_pyarrow_table().num_rows == 60
    assert re.search(r"relative: [1-9]", done.stdout) and "relative path under `ray job submit`" in output
    assert not (repo / "out" / "relative").exists()
    assert re.search(r"no model: [1-9]", done.stdout) and "no-model does not exist" in output
    assert not (repo / "out" / "cluster" / "pred2").exists()
    assert ray_local.cluster_resources()["CPU"] == 2  # the other instance lives on
