"""Connecting to Ray: a local instance by default, a cluster when given an address."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("cough")

#: Environment every Ray worker gets. TF_USE_LEGACY_KERAS must be set before TensorFlow
#: is imported: Keras 3 cannot run MultiWorkerMirroredStrategy (keras-team/keras#20585).
WORKER_ENV = {
    "TF_USE_LEGACY_KERAS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
}


def init_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Start or join Ray. No address and no RAY_ADDRESS: a local instance sized to the machine
    (or ``num_cpus``), with the dashboard bound to localhost."""
    import ray

    if ray.is_initialized():
        return
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)
    runtime_env = {"env_vars": _env_vars_not_set_by_job()}
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), runtime_env=runtime_env,
                 include_dashboard=False, dashboard_host="127.0.0.1")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True


def _env_vars_not_set_by_job() -> dict:
    """WORKER_ENV minus keys that a submitted job's runtime_env already sets: Ray refuses to
    merge a driver's env var with the same key from ``ray job submit --runtime-env``."""
    import json

    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    job = json.loads(os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR, "{}"))
    taken = (job.get("runtime_env") or {}).get("env_vars") or {}
    return {k: v for k, v in WORKER_ENV.items() if k not in taken}


def cpus() -> int:
    """CPUs Ray can use now (all nodes)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def archive_dataset(frame, batch_size: int):
    """``(dataset, batch_size)``: an archive's rows (a DataFrame, one row per recording) as a
    Ray Dataset of batches of at most ``batch_size`` rows, smaller for small archives so
    that every CPU still gets about 4 batches. Call after :func:`init_ray`."""
    import ray

    batch_size = max(1, min(batch_size, -(-len(frame) // (4 * cpus()))))
    parts = [frame.iloc[i:i + batch_size] for i in range(0, len(frame), batch_size)]
    return ray.data.from_pandas(parts), batch_size
