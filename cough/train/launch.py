"""Launching the training loop on Ray Train: worker sizing, ordered ingest, the trainer and
its failure handling, and reading back the run's final checkpoint."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict

import pandas as pd

from ..errors import CoughError, describe
from ..model.store import WEIGHTS_FILE
from ..runtime import tensorflow_env
from .loop import PREDICTIONS_FILE, STATE_FILE, TrainConfig, train_loop

#: How often Ray Train's controller polls the workers (ray.train.v2's HEALTH_CHECK_INTERVAL_S_ENV_VAR).
CONTROLLER_POLL_ENV, CONTROLLER_POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25"


def _ordered_ingest():
    """Ray Data's ingest options for training with blocks delivered in the dataset's order:
    by default they come as their reads finish, so the seeded shuffle buffer saw another
    order from time to time and two runs with one seed gave different models (the same
    losses for 3 epochs, then not; test AUC 0.86 against 0.93 after 10)."""
    import copy

    import ray.data

    # A copy of the context's options, as Ray Train's default_ingest_options() takes, whose
    # constructor call warns about a deprecated field on every run.
    options = copy.deepcopy(ray.data.DataContext.get_current().execution_options)
    options.preserve_order = True
    return options


def worker_resources(workers: int) -> tuple[dict, int, bool]:
    """Resources per Ray Train worker, TensorFlow threads per worker, and whether to use GPUs.

    GPUs are used when the cluster has at least one per worker. Without GPUs the workers
    reserve all CPUs but one, which Ray Data keeps for listing and reading the shards
    (its listing task needs a whole CPU; reading tasks take a quarter each); TensorFlow
    still runs ``CPUs / workers`` threads per worker, since reading is light.
    """
    import ray

    total = ray.cluster_resources()
    if total.get("GPU", 0) >= workers:
        return {"CPU": 1, "GPU": 1}, 2, True
    cpus = total.get("CPU", 0)
    per_node = max(n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive"))
    reserve = math.floor(min((cpus - 1) / workers, per_node) * 4) / 4
    if reserve < 0.25:
        raise CoughError(f"--workers {workers} is too many for {cpus:g} CPUs: each worker needs a "
                         "quarter CPU and Ray Data one CPU; use fewer workers or more CPUs")
    threads = max(1, int(min(cpus / workers, per_node)))
    return {"CPU": reserve}, threads, False


def final_checkpoint(checkpoint) -> tuple[bytes, dict, pd.DataFrame]:
    """(weights.h5 bytes, training state, window predictions) of the run's last checkpoint."""
    if checkpoint is None:
        raise CoughError("training ended without a checkpoint; rerun with --resume")
    with checkpoint.as_directory() as d:
        with open(os.path.join(d, STATE_FILE)) as f:
            state = json.load(f)
        if not state.get("final"):
            raise CoughError("training ended without its final checkpoint; rerun with --resume")
        with open(os.path.join(d, WEIGHTS_FILE), "rb") as f:
            weights = f.read()
        predictions = pd.read_parquet(os.path.join(d, PREDICTIONS_FILE))
    return weights, state, predictions


def fit(datasets: dict, config: TrainConfig, *, workers: int = 1, storage: str, name: str = "run",
        max_failures: int = 3):
    """Run :func:`train_loop` on ``workers`` Ray Train workers; returns the ray.train Result.

    Checkpoints go under ``storage/name``; when that folder holds an earlier attempt's
    checkpoints, Ray Train hands the latest one to the workers and training continues
    from it (this is how ``--resume`` works). A worker that dies is replaced and training
    resumes from the last checkpoint, up to ``max_failures`` times.
    """
    import ray.train
    from ray.train.tensorflow import TensorflowTrainer

    from ..tables.storage import Location

    # On a store, Ray Train writes its checkpoints through cough's filesystem (its retries,
    # cough.tables.storage.StoreHandler), not one of its own with the SDK's defaults.
    where = Location.of(storage)
    place = {} if where.local else {"storage_path": where.path, "storage_filesystem": where.fs}
    resources, threads, use_gpu = worker_resources(workers)
    config.threads = threads
    trainer = TensorflowTrainer(
        train_loop,
        train_loop_config=asdict(config),
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(  # type: ignore[call-arg]  # worker_runtime_env: Ray Train v2's RunConfig
            name=name, **{"storage_path": storage, **place},
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            # oneDNN kernels train the CNNs 3.5-8x faster on CPU (docs/train.md); set before the
            # worker imports TensorFlow, which Ray's TensorFlow backend does before train_loop runs
            worker_runtime_env={"env_vars": tensorflow_env(onednn=True)}),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"], execution_options=_ordered_ingest()),
    )
    # Ray Train's controller looks at its workers every 2 s and takes in one report per look,
    # so a run ended seconds after its last report (4.8 s of a 4-epoch run, docs/benchmarks.md).
    # Ray Train propagates this variable from the driver to its controller; a user's value wins.
    ours = CONTROLLER_POLL_ENV not in os.environ
    os.environ.setdefault(CONTROLLER_POLL_ENV, CONTROLLER_POLL_S)
    try:
        return trainer.fit()
    except Exception as exc:
        raise CoughError(f"training failed ({describe(exc)}); rerun with --resume to continue from the "
                         "last checkpoint") from exc
    finally:
        if ours:  # the caller's environment as it was
            os.environ.pop(CONTROLLER_POLL_ENV, None)
