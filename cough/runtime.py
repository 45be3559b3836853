"""The processes a job runs in: connecting to Ray (a local instance by default, a cluster
when given an address) and the environment TensorFlow reads when a process imports it."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from typing import Any, Iterator

from .errors import CoughError, UsageError
from .logs import ray_log_level, tame_ray, tensorflow_log_level

log = logging.getLogger("cough")
#: Set by Ray's job supervisor for the entrypoint of a job submitted with ``ray job submit``
#: (ray._private.runtime_env.constants.RAY_JOB_CONFIG_JSON_ENV_VAR; not imported: that loads Ray).
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
#: The address that always means a new, private local instance (Ray's own convention).
LOCAL = "local"
#: The marker a job writes into each --shared-path folder for every node to read back.
SHARED_MARKER = ".cough-shared-path-"
#: Seconds the --shared-path check waits for every node's answer.
SHARED_CHECK_TIMEOUT_S = 120


def tensorflow_env(*, onednn: bool | None = None) -> dict[str, str]:
    """The environment TensorFlow reads when a process imports it; the one place cough sets it.

    - ``TF_USE_LEGACY_KERAS=1``: tf_keras, because Keras 3 cannot train under
      MultiWorkerMirroredStrategy (keras-team/keras#20585);
    - ``TF_CPP_MIN_LOG_LEVEL``: this process's value, else what the log level asks
      (:func:`cough.logs.tensorflow_log_level`);
    - ``TF_ENABLE_ONEDNN_OPTS``: on when ``onednn`` (the Train workers and the inference
      actors: oneDNN kernels train and predict several times faster on CPU, docs/train.md),
      off when ``onednn`` is False; when None, this process's value, else off (other processes
      do not run TensorFlow's kernels, or, as train's driver, evaluate with the plain ones).

    >>> tensorflow_env(onednn=True)["TF_ENABLE_ONEDNN_OPTS"], tensorflow_env()["TF_USE_LEGACY_KERAS"]
    ('1', '1')
    """
    onednn_opts = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "0") if onednn is None else "1" if onednn else "0"
    return {"TF_USE_LEGACY_KERAS": "1",
            "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", tensorflow_log_level()),
            "TF_ENABLE_ONEDNN_OPTS": onednn_opts}


def set_tensorflow_env(*, onednn: bool | None = None) -> None:
    """Set :func:`tensorflow_env` in this process; call where a process starts, before it
    imports TensorFlow (later, TensorFlow has read its environment already)."""
    os.environ.update(tensorflow_env(onednn=onednn))


def add_ray_arguments(parser) -> None:
    """Flags every Ray job takes, spelled the same everywhere."""
    from .flags import integer

    parser.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else the instance `ray start` "
                                           f"runs on this machine, else a new local one); '{LOCAL}': always a new local one")
    parser.add_argument("--num-cpus", type=integer(at_least=1), help="CPUs of the local Ray instance cough starts (default: all); "
                                                     "not with --address")
    parser.add_argument("--shared-path", action="append", default=[], metavar="FOLDER",
                        help="a local folder that every node of the Ray cluster sees at this same path (an NFS or "
                             "other shared mount; repeatable). On a cluster whose tasks run on other machines, "
                             "local paths are refused unless they lie under one; the job then checks, from a "
                             "task on each node, that the node reads back a marker it writes there. Object "
                             "storage (s3://, gs://) needs none")


def check_ray_args(address: str | None, num_cpus: int | None) -> None:
    """Usage errors in the Ray flags, found before anything starts."""
    if num_cpus is not None and _given_address(address) not in (None, LOCAL):
        raise UsageError(f"--num-cpus sizes a local instance that cough starts, but the job joins the Ray "
                         f"cluster at {_given_address(address)} (--address or RAY_ADDRESS), whose size is set "
                         f"by whoever started it: drop --num-cpus, or give --address {LOCAL} for a private instance")


def check_paths(paths: dict[str, str]) -> None:
    """Under ``ray job submit`` a job runs in Ray's copy of the submitter's working directory,
    on whichever node runs the driver: a relative path would be read from, or written into,
    that copy, and vanish with it. So there, every path must be absolute or a URI."""
    if RAY_JOB_ENV not in os.environ:
        return
    relative = [f"{name.upper()} {path}" for name, path in paths.items()
                if path and "://" not in path and not os.path.isabs(path)]
    if relative:
        raise UsageError(f"{', '.join(relative)}: a relative path under `ray job submit` would resolve in Ray's "
                         f"copy of the working directory ({os.getcwd()}), and what is written there vanishes "
                         "with it; give absolute paths (e.g. \"$PWD/...\") or URIs")


def check_shared_paths(shared: list[str] | tuple[str, ...]) -> None:
    """Usage errors in ``--shared-path``, found before Ray starts: each must be an absolute
    path of a folder on this machine (a mount; object storage needs none)."""
    for folder in shared:
        if "://" in folder and not folder.startswith("file://"):
            raise UsageError(f"--shared-path {folder}: object storage is seen by every node already; --shared-path "
                             "names local folders that every node mounts at the same path")
        path = _local_path(folder)
        if not path or not os.path.isabs(path):
            raise UsageError(f"--shared-path {folder}: give the shared mount's absolute path (every node sees it "
                             "at that same path)")
        if not os.path.isdir(path):
            raise UsageError(f"--shared-path {folder} is not a folder on this machine")


def _local_path(where: str) -> str | None:
    """The path on this machine's disk that ``where`` names (a plain path or ``file://``); None
    for object storage and other URIs."""
    if where.startswith("file://"):
        return where[len("file://"):]
    return None if "://" in where else where


def _under(path: str, folder: str) -> bool:
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def check_topology(paths: dict[str, str | None], shared: tuple[str, ...] | list[str] = ()) -> None:
    """Refuse, with a UsageError (exit 2) before any work, local paths that the job's tasks would
    open on machines that are not this one. Call right after joining Ray.

    The job's tasks run on another machine when the cluster has an alive node other than this
    process's, or when this node offers no CPU (cluster.yaml's head: every task runs on workers,
    including those an autoscaler has yet to start). Then every local path of ``paths``
    (``{"SOURCE": "/data/raw", "--out": "s3://b/f", ...}``) must lie under a ``shared`` folder
    (``--shared-path``), which is checked from a task on every other alive node: each must read
    back the marker this process writes there (:func:`check_shared`). Nodes that join later are
    not checked."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    here = ray.get_runtime_context().get_node_id()
    others = [n for n in nodes if n["NodeID"] != here]
    cpus_here = sum(n["Resources"].get("CPU", 0) for n in nodes if n["NodeID"] == here)
    if not others and cpus_here > 0:
        return
    local = {name: _local_path(p) for name, p in paths.items() if p and _local_path(p)}
    if not local:
        return
    folders = [os.path.abspath(_local_path(f) or f) for f in shared]
    unshared = [f"{name} {paths[name]}" for name, path in local.items()
                if path and not any(_under(path, f) for f in folders)]
    if unshared:
        where = (f"{len(others)} other node{'s' if len(others) > 1 else ''} "
                 f"({', '.join(sorted({n['NodeManagerAddress'] for n in others}))})" if others else
                 "other nodes (this node offers no CPU: an autoscaler starts the workers)")
        raise UsageError(f"{', '.join(unshared)}: {'local paths' if len(unshared) > 1 else 'a local path'}, but "
                         f"this Ray cluster runs the job's tasks on "
                         f"{where}, which cannot see this machine's files; use object storage (s3://..., gs://...), "
                         "or a mount that every node sees at the same path, named with --shared-path FOLDER")
    used = sorted({f for f in folders for path in local.values() if path and _under(path, f)})
    if not others:
        log.warning("no other node has joined this Ray cluster yet: --shared-path %s is checked on none (nodes that "
                    "join later are not checked)", " ".join(used))
        return
    check_shared(used, others)


def check_shared(folders: list[str], nodes: list[dict]) -> None:
    """From a task on each of ``nodes`` (``ray.nodes()`` entries), check that each of ``folders``
    is the folder this process sees: the node reads back the marker this process writes into it
    (a random token in a hidden file, removed afterwards). A folder this process may not write
    into is compared by its entries instead (names, sizes, times of the first 1000). A
    UsageError names each folder and node that does not match."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    expect: dict[str, tuple[str, str]] = {}
    written: list[str] = []
    try:
        for folder in folders:
            marker = os.path.join(folder, f"{SHARED_MARKER}{token}")
            try:
                with open(marker, "w") as f:
                    f.write(token)
                written.append(marker)
                expect[folder] = (marker, token)
            except OSError as exc:  # a read-only mount: its entries must look the same from every node
                log.info("--shared-path %s: cannot write a marker there (%s), so every node's listing of it is "
                         "compared instead", folder, exc.strerror or exc)
                expect[folder] = ("", _entries(folder))
        probe = ray.remote(_read_shared)
        refs = [probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(expect) for n in nodes]
        try:
            seen = ray.get(refs, timeout=SHARED_CHECK_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise CoughError(f"--shared-path: not every node answered within {SHARED_CHECK_TIMEOUT_S} s "
                             "(checking that it sees the folder)") from None
    finally:
        for marker in written:
            try:
                os.remove(marker)
            except OSError:
                pass
    problems = [f"{folder} on node {node['NodeManagerAddress']} ({answer[folder]})"
                for node, answer in zip(nodes, seen) for folder in folders if answer[folder] != "same"]
    if problems:
        raise UsageError(f"--shared-path: not the folder this machine sees: {'; '.join(problems)}; mount it at the "
                         "same path on every node, or use object storage (s3://..., gs://...)")


def _entries(folder: str) -> str:
    """What a folder holds, as one string: the first 1000 entries' names, sizes and times."""
    try:
        with os.scandir(folder) as it:
            entries = sorted((e.name, e.stat(follow_symlinks=False)) for e in it)[:1000]
    except OSError as exc:
        return f"cannot list it: {exc.strerror or exc}"
    return "\n".join(f"{name} {st.st_size} {st.st_mtime_ns}" for name, st in entries)


def _read_shared(expect: dict[str, tuple[str, str]]) -> dict[str, str]:
    """A node's answer for each folder of :func:`check_shared`: ``same``, or what it found."""
    answer = {}
    for folder, (marker, want) in expect.items():
        if not os.path.isdir(folder):
            answer[folder] = "no such folder there"
        elif not marker:
            answer[folder] = "same" if _entries(folder) == want else "it holds other entries"
        else:
            try:
                with open(marker) as f:
                    answer[folder] = "same" if f.read() == want else "the marker there holds something else"
            except OSError:
                answer[folder] = "the folder there lacks the marker written here: another disk"
    return answer


def init_ray(address: str | None = None, *, num_cpus: int | None = None, paths: dict[str, str | None] | None = None,
             shared_paths: tuple[str, ...] | list[str] = ()) -> None:
    """Start or join Ray, unless this process is connected already; then check that the tasks
    can reach ``paths`` (:func:`check_topology`, with ``shared_paths``).

    - ``address`` (or RAY_ADDRESS): join that cluster; ``num_cpus`` is then a usage error.
    - ``"local"``: start a private local instance of ``num_cpus`` CPUs (default: all).
    - neither: join the local instance that a ``ray start`` on this machine recorded in its
      address file (said on stderr); start a private one when there is none, or when the
      file is stale (a head stopped by a signal leaves it behind; the reason is logged).
    A local instance's dashboard is off and would bind only localhost.
    """
    _join_ray(address, num_cpus=num_cpus)
    check_topology(paths or {}, shared_paths)


def _join_ray(address: str | None, *, num_cpus: int | None) -> None:
    import ray

    if ray.is_initialized():
        tame_ray()
        return
    check_ray_args(address, num_cpus)
    set_tensorflow_env()
    runtime_env = {"env_vars": _env_vars_not_set_by_job()}
    address = _given_address(address)
    if address is None:
        address = _running_local_instance()
        if address and num_cpus is not None:
            log.warning("--num-cpus %d is ignored: joining the Ray instance already running on this machine "
                        "(give --address %s for a private instance of that size)", num_cpus, LOCAL)
    if address and address != LOCAL:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True, logging_level=ray_log_level())
    else:
        ray.init(address=LOCAL, num_cpus=num_cpus or os.cpu_count(), runtime_env=runtime_env,
                 include_dashboard=False, dashboard_host="127.0.0.1", logging_level=ray_log_level())
        log.debug("started a local Ray instance with %d CPUs", cpus())
    tame_ray()


def _given_address(address: str | None) -> str | None:
    return address or os.environ.get("RAY_ADDRESS") or None


def _running_local_instance() -> str | None:
    """The GCS address in Ray's address file (``/tmp/ray/ray_current_cluster``, written by
    ``ray start``) when something answers there; None (and the reason logged) otherwise."""
    from ray._common.utils import get_ray_address_file
    from ray._private.utils import read_ray_address

    address = read_ray_address()
    if not address:
        return None
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except (OSError, ValueError):
        log.warning("%s names a Ray instance at %s, but nothing answers there (a head stopped by a signal "
                    "leaves this file behind): starting a fresh local instance", get_ray_address_file(None),
                    address)
        return None
    log.info("joining the Ray instance running on this machine at %s (recorded in %s by `ray start`); "
             "give --address %s for a private one", address, get_ray_address_file(None), LOCAL)
    return address


def _env_vars_not_set_by_job() -> dict:
    """:func:`tensorflow_env` minus keys that a submitted job's runtime_env already sets: Ray
    refuses to merge a driver's env var with the same key from ``ray job submit --runtime-env``."""
    import json

    job = json.loads(os.environ.get(RAY_JOB_ENV, "{}"))
    taken = (job.get("runtime_env") or {}).get("env_vars") or {}
    return {k: v for k, v in tensorflow_env().items() if k not in taken}


def cpus() -> int:
    """CPUs Ray can use now (all nodes)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def node_cpus() -> list[int]:
    """CPUs of each alive node of the cluster."""
    import ray

    return [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]] or [1]



# --------------------------------------------------------------------------- stopping a job's tasks

#: Seconds a failed job waits for its writing tasks to end before it cleans up.
SETTLE_TIMEOUT_S = 60


class _Gate:
    """A Ray actor that a job's writing tasks pass through (:func:`admitted`): open until the job
    fails, and it counts the tasks inside."""

    def __init__(self):
        self.open = True
        self.inside: set[str] = set()

    def enter(self, key: str) -> bool:
        if self.open:
            self.inside.add(key)
        return self.open

    def leave(self, key: str) -> None:
        self.inside.discard(key)

    def close(self) -> int:
        self.open = False
        return len(self.inside)

    def count(self) -> int:
        return len(self.inside)


class TaskGate:
    """What stops a job's writing tasks before the job cleans up after a failure.

    Ray Data cancels a failed dataset's running tasks without waiting for them, so a task could
    go on writing shards into an output the driver had just cleaned, leaving files without the
    owner marker (the rerun refused them as someone else's). Each task enters the gate before it
    writes and leaves it when done (:func:`admitted`); :meth:`settle` closes the gate (tasks
    that start later write nothing) and waits until no task is inside. Needs Ray up.
    """

    def __init__(self):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # on the driver's node: a worker node lost mid-run (Ray retries its tasks) must not take it along
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.actor: Any = ray.remote(_Gate).options(num_cpus=0, scheduling_strategy=here).remote()

    def settle(self, timeout: float = SETTLE_TIMEOUT_S) -> bool:
        """Close the gate and wait for the tasks inside to end; False when some are still
        inside after ``timeout`` seconds (a task killed with its worker never leaves)."""
        import time

        import ray

        deadline = time.monotonic() + timeout
        try:
            inside = ray.get(self.actor.close.remote(), timeout=timeout)
            while inside and time.monotonic() < deadline:
                time.sleep(0.2)
                inside = ray.get(self.actor.count.remote(), timeout=timeout)
        except Exception as exc:  # the actor is gone (its node): nothing tells whether tasks still write
            log.debug("the task gate did not answer: %s", exc)
            return False
        if inside:
            log.warning("%d task(s) of this run were still writing %d s after it failed", inside, timeout)
        return not inside

    def __enter__(self) -> "TaskGate":
        return self

    def __exit__(self, *exc) -> None:
        import ray

        with contextlib.suppress(Exception):
            ray.kill(self.actor)


class GateClosed(Exception):
    """Raised by :meth:`Permit.check` in a task of a job that has failed: the task must write nothing."""


class Permit:
    """A task's pass through a :class:`TaskGate` (what :func:`admitted` gives): asked for as the
    task starts, its answer read by :meth:`check`, which the task calls before its first write.

    The answer is read late on purpose: a task that waits on an actor's reply lends its CPU
    back to Ray, which then starts another worker process for the next task; waited for at
    once, every featurize run started one or two extra workers, each importing the
    featurizing stack again (docs/benchmarks.md, issue 24)."""

    def __init__(self, reply=None):
        self._reply = reply  # the gate's answer to enter(), an ObjectRef; None: no gate
        self._open: bool | None = None if reply is not None else True

    def check(self) -> None:
        """Return when the task may write; :class:`GateClosed` when the job has failed."""
        if self._open is None:
            import ray

            self._open = bool(ray.get(self._reply))
        if not self._open:
            raise GateClosed("the job has failed: this task writes nothing")


@contextlib.contextmanager
def admitted(gate) -> Iterator[Permit]:
    """In a task: its :class:`Permit` through ``gate`` (a :class:`TaskGate`'s actor; None: no
    gate, every check passes). The task is counted inside the gate from its start, when the
    gate is open, until the block ends."""
    if gate is None:
        yield Permit()
        return
    key = uuid.uuid4().hex
    try:
        yield Permit(gate.enter.remote(key))
    finally:
        # not waited for either (see Permit): the actor takes it after this task's enter(), and a
        # settling driver polls until it has; the gate gone: settle() then says it cannot tell
        with contextlib.suppress(Exception):
            gate.leave.remote(key)
