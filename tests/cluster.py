"""A real Ray cluster on loopback for tests: `ray start --head --block` in its own temp dir.

`ray stop` would kill every Ray process on the machine (other tests' instances too), so
the head runs in the foreground with --block and is stopped by terminating that process.
Its own --temp-dir keeps a plain `ray.init()` elsewhere from joining it by accident.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

from cough.runtime import tensorflow_env
from pathlib import Path

BIN = Path(sys.executable).parent


def _env() -> dict:
    """The venv's tools first, no inherited RAY_ADDRESS, and token authentication on for both
    the head and its clients (Ray 2.60's CLI clients do not turn it on by themselves)."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def ray_head(num_cpus: int = 2, temp_dir: str | None = None):
    """Yields ``(gcs_address, dashboard_url)`` of a running head node on 127.0.0.1 whose
    files (and address file) live in ``temp_dir`` (default: a new one)."""
    temp_dir = temp_dir or tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    os.makedirs(temp_dir, exist_ok=True)
    port, dash = free_port(), free_port()
    env = _env()
    log = open(os.path.join(temp_dir, "head.log"), "wb")
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         f"--num-cpus={num_cpus}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
         # Ray's fixed default ports clash with any other Ray on the machine (the agent's
         # HTTP server then stays down and jobs cannot be submitted): take free ones.
         f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
         f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
         f"--ray-client-server-port={free_port()}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        while True:
            probe = subprocess.run([str(BIN / "ray"), "job", "list", "--address", url], env=env,
                                   capture_output=True, text=True)
            # `ray start` writes its address file only after the dashboard answers: wait for both,
            # or a job started at once finds no running instance (a race seen on a loaded machine).
            if probe.returncode == 0 and Path(temp_dir, "ray_current_cluster").exists():
                break
            if head.poll() is not None or time.time() > deadline:
                tail = Path(temp_dir, "head.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"ray head did not start: {tail}\n{probe.stderr[-2000:]}")
            time.sleep(1)
        yield f"127.0.0.1:{port}", url
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, 9)
        log.close()


@contextmanager
def three_nodes():
    """A head node (1 CPU) and two worker nodes (1 CPU each); this process is the driver."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 300 << 20})
    workers = [cluster.add_node(num_cpus=1, object_store_memory=300 << 20) for _ in range(2)]
    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, runtime_env={"env_vars": tensorflow_env()})
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()
