"""A real Ray cluster on loopback for tests: `ray start --head --block` in its own temp dir.

`ray stop` would kill every Ray process on the machine (other tests' instances too), so
the head runs in the foreground with --block and is stopped by terminating that process.
Its own --temp-dir keeps a plain `ray.init()` elsewhere from joining it by accident.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cough.runtime import tensorflow_env

BIN = Path(sys.executable).parent


def _env() -> dict:
    """The venv's tools first, no inherited RAY_ADDRESS, and token authentication on for both
    the head and its clients (Ray 2.60's CLI clients do not turn it on by themselves)."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def ray_head(num_cpus: int = 2, temp_dir: str | None = None, env: dict | None = None):
    """Yields ``(gcs_address, dashboard_url)`` of a running head node on 127.0.0.1 whose
    files (and address file) live in ``temp_dir`` (default: a new one); ``env``: more
    environment for the head (and the probes that wait for it)."""
    temp_dir = temp_dir or tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    os.makedirs(temp_dir, exist_ok=True)
    port, dash = free_port(), free_port()
    env = {**_env(), **(env or {})}
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
        _stop(head)
        log.close()


def _stop(node: subprocess.Popen) -> None:
    """Stop a ``ray start --block`` process (SIGTERM stops its node); its whole process group
    after 60 s."""
    node.terminate()
    try:
        node.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, 9)
        node.wait()


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


# --------------------------------------------------------------------------- two machines

#: The worker node's loopback address: another address than the head's (127.0.0.1), so that a
#: driver on this machine attaches to the head's raylet, as a driver on a real head does.
WORKER_IP = "127.0.0.2"


def can_unshare() -> str | None:
    """Why a node in its own mount namespace cannot start here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root (`unshare --mount` and tmpfs mounts for the worker node's private /tmp)"
    if shutil.which("unshare") is None:
        return "needs util-linux's unshare"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs tmpfs /tmp && test ! -e /tmp/.X-probe"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`unshare --mount` with a tmpfs over /tmp failed here: {probe.stderr.strip()[-300:]}"
    return None


def can_run_two_machines() -> str | None:
    """Why :func:`two_machines` cannot run here (None when it can): :func:`can_unshare`, and
    the checkout and its Python outside /tmp, which the worker node's own /tmp hides."""
    for what, path in (("the checkout", REPO), ("the Python environment", BIN)):
        if Path(path).resolve().is_relative_to("/tmp"):
            return f"needs {what} outside /tmp (it is at {path}: a worker node with its own /tmp cannot run it)"
    return can_unshare()


@dataclass
class TwoMachines:
    """A head node with no CPUs (cluster.yaml's) and one worker node that sees none of this
    machine's /tmp nor the ``hidden`` folders: every task runs on a machine other than the
    driver's. ``env``: what a driver on this machine needs to join it (token authentication,
    this checkout on PYTHONPATH, the AWS_* variables); ``address``: the GCS to pass as --address."""

    address: str
    dashboard: str
    env: dict
    worker_cpus: int
    hidden: list = field(default_factory=list)
    #: the worker node's mount namespace (``/proc/<pid>/ns/mnt``): tells its processes from any other
    namespace: str = ""

    def worker_processes(self, title: str) -> list[int]:
        """Pids of the worker node's processes whose title (command line) starts with ``title``, e.g.
        ``ray::MapBatches(featurize_batch)``: Ray workers of this cluster running such a task, and
        never another Ray's on this machine."""
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.readlink(f"/proc/{pid}/ns/mnt") != self.namespace:
                    continue
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().startswith(title.encode()):
                        found.append(int(pid))
            except OSError:
                pass
        return found

    def cough(self, *args: str, timeout: float = 600, ray: bool = True, read_only: tuple = ()) -> subprocess.CompletedProcess:
        """``python -m cough ARGS --address <head>`` as a driver on this machine (``ray`` False:
        without --address, for `cough report`, which runs no Ray; ``read_only``: folders the driver
        sees read-only, through a read-only bind mount in a mount namespace of its own)."""
        address = ["--address", self.address] if ray else []
        wrap = []
        if read_only:
            mounts = " && ".join(f"mount --bind {str(f)!r} {str(f)!r} && mount -o remount,bind,ro {str(f)!r} {str(f)!r}"
                                 for f in read_only)
            wrap = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{mounts} && exec "$@"', "sh"]
        return subprocess.run([*wrap, sys.executable, "-m", "cough", *args, *address], env=self.env,
                              cwd=REPO, capture_output=True, text=True, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "cough", *args, "--address", self.address], env=self.env,
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)


REPO = Path(__file__).resolve().parents[1]


@contextmanager
def two_machines(hidden: list, *, worker_cpus: int = 2, timeout: float = 180):
    """Yields a :class:`TwoMachines`: ``ray start --head --num-cpus 0`` on 127.0.0.1, and a worker
    node on 127.0.0.2 started in its own mount namespace (``unshare --mount``) with a tmpfs over
    each of ``hidden`` and over /tmp, so the driver's files there are invisible to it, as on
    another machine. Both join with token authentication (one token, passed in RAY_AUTH_TOKEN
    rather than through ~/.ray, which the worker could read), on free loopback ports, each with
    its own --temp-dir. The worker node inherits this process's AWS_* variables (the loopback S3
    server). Needs root: call :func:`can_run_two_machines` first."""
    token = uuid.uuid4().hex
    env = {**_env(), "RAY_AUTH_TOKEN": token, "PYTHONPATH": str(REPO),
           # on kill, stop at once (by default Ray drains a node for up to 30 s)
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    with ray_head(num_cpus=0, env=env) as (gcs, dashboard):
        # the worker node's own temp dir, outside the /tmp it cannot see: its logs stay readable here
        worker_dir = tempfile.mkdtemp(prefix="rw", dir="/var/tmp")
        ports = [f"--node-manager-port={free_port(WORKER_IP)}", f"--object-manager-port={free_port(WORKER_IP)}",
                 f"--dashboard-agent-listen-port={free_port(WORKER_IP)}",
                 f"--dashboard-agent-grpc-port={free_port(WORKER_IP)}",
                 f"--runtime-env-agent-port={free_port(WORKER_IP)}", f"--metrics-export-port={free_port(WORKER_IP)}"]
        start = " ".join([str(BIN / "ray"), "start", f"--address={gcs}", "--block", f"--node-ip-address={WORKER_IP}",
                          f"--num-cpus={worker_cpus}", f"--temp-dir={worker_dir}", "--disable-usage-stats",
                          "--object-store-memory=500000000", *ports])
        # deepest first: a hidden folder under /tmp must be covered before /tmp is
        masks = [str(Path(h).resolve()) for h in hidden] + ["/tmp"]
        script = " && ".join([*(f"mount -t tmpfs tmpfs {m!r}" for m in masks),
                              f"exec {start}"])
        log = tempfile.NamedTemporaryFile(prefix="cough-worker-node-", suffix=".log", delete=False)
        worker = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for_nodes(gcs, env, 2, worker, timeout, log.name, worker_cpus, worker_dir)
            yield TwoMachines(gcs, dashboard, env, worker_cpus, masks, os.readlink(f"/proc/{worker.pid}/ns/mnt"))
        finally:
            _stop(worker)
            log.close()
            os.unlink(log.name)
            shutil.rmtree(worker_dir, ignore_errors=True)


def _wait_for_nodes(gcs: str, env: dict, n: int, worker: subprocess.Popen, timeout: float, log: str,
                    worker_cpus: int, worker_dir: str) -> None:
    """Until the cluster at ``gcs`` has ``n`` alive nodes (one connection, polled)."""
    probe = subprocess.run([sys.executable, "-c", f"""
import json, sys, time
import ray
ray.init(address={gcs!r}, logging_level="ERROR", log_to_driver=False)
deadline = time.time() + {timeout}
while time.time() < deadline:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= {n}:
        print(json.dumps([[a["NodeManagerAddress"], a["Resources"].get("CPU", 0)] for a in alive]))
        sys.exit(0)
    time.sleep(0.5)
sys.exit(1)
"""], env=env, capture_output=True, text=True, timeout=timeout + 60)
    if probe.returncode != 0 or worker.poll() is not None:
        raylet = "".join(f"\n{p}: {p.read_text(errors='replace')[-1500:]}"
                         for p in Path(worker_dir).glob("session_latest/logs/raylet.*"))
        raise RuntimeError(f"the worker node did not join (exit {worker.poll()}): {probe.stderr[-2000:]}\n"
                           f"{Path(log).read_text(errors='replace')[-2000:]}{raylet}")
    nodes = json.loads(probe.stdout.strip().splitlines()[-1])
    # the head records the machine's address whatever --node-ip-address says; the worker node, its own
    assert sorted(cpus for _, cpus in nodes) == [0, worker_cpus] and WORKER_IP in [ip for ip, _ in nodes], nodes
