"""The processes a job runs in: connecting to Ray (a local instance by default, a cluster
when given an address) and the environment TensorFlow reads when a process imports it."""

from __future__ import annotations

import logging
import os
import re
import socket

from .errors import CoughError, UsageError, one_line
from .logs import ray_log_level, tame_ray, tensorflow_log_level

log = logging.getLogger("cough")
#: Set by Ray's job supervisor for the entrypoint of a job submitted with ``ray job submit``
#: (ray._private.runtime_env.constants.RAY_JOB_CONFIG_JSON_ENV_VAR; not imported: that loads Ray).
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
#: The address that always means a new, private local instance (Ray's own convention).
LOCAL = "local"



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


def init_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Start or join Ray, unless this process is connected already.

    - ``address`` (or RAY_ADDRESS): join that cluster; ``num_cpus`` is then a usage error.
    - ``"local"``: start a private local instance of ``num_cpus`` CPUs (default: all).
    - neither: join the local instance that a ``ray start`` on this machine recorded in its
      address file (said on stderr); start a private one when there is none, or when the
      file is stale (a head stopped by a signal leaves it behind; the reason is logged).
    A local instance's dashboard is off and would bind only localhost.
    """
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


def job_error(exc: BaseException) -> BaseException:
    """An error that came out of Ray (a task's or an actor's, wrapped in Ray's error with the
    worker's traceback and ANSI colours) as the error a person can read: a CoughError raised
    in a worker (a model that fails to load in the inference actors, a store that kept
    failing) as that CoughError; any other cause as a CoughError naming it in one line, without
    colour codes (``a Ray task failed: OSError: ...``). An error that is not Ray's comes back
    unchanged.

    >>> job_error(ValueError("not Ray's")).__class__.__name__
    'ValueError'
    """
    import sys

    if "ray" not in sys.modules:
        return exc
    from ray.exceptions import RayError

    seen: BaseException | None = exc
    causes: list[BaseException] = []
    while seen is not None and seen not in causes:
        causes.append(seen)
        if isinstance(seen, CoughError) and not isinstance(seen, RayError):
            return type(seen)(str(seen)) if type(seen).__init__ is CoughError.__init__ else CoughError(str(seen))
        seen = getattr(seen, "cause", None) or seen.__cause__
    if not isinstance(exc, RayError):
        return exc
    # ActorDiedError keeps only the text of its creation task's error (traceback included)
    found = re.findall(r"cough\.errors\.\w*Error: (.*)", str(exc))
    if found:
        return CoughError(one_line(ValueError(found[-1])))
    cause = next((c for c in causes[1:] if not isinstance(c, RayError)), None)
    if cause is None:
        return CoughError(f"a Ray task failed: {one_line(ValueError(_last_line(str(exc))))}")
    return CoughError(f"a Ray task failed: {type(cause).__name__}: {one_line(cause)}")


def _last_line(text: str) -> str:
    """The last non-empty line of a Ray error's text (its cause, after the traceback)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else text

