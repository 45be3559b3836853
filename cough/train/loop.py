"""Training with Ray Train: class weights, the per-worker training loop, its sizing, and the
validation metrics and threshold written into MODEL/model.json.

The driver (cough/train/job.py) reads only the small columns of ``SHARDS/images``
(cough/train/trainset.py) to split by participant (cough/train/splits.py); the images themselves
stream to the workers as Ray Data shards. Each worker runs
:func:`train_loop` under ``tf.distribute.MultiWorkerMirroredStrategy`` (tf_keras), so the
gradients of every step are all-reduced across workers before the weights change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from typing import Any
import tempfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from ..errors import CoughError
from ..logs import say
from ..evaluation.metrics import auc, binary_metrics, choose_threshold, finite
from ..runtime import tensorflow_env
from ..model.inference import aggregate_windows, predict_windows
from ..model.networks import CLASS_NAMES, build_model, rescale
from ..model.store import WEIGHTS_FILE

log = logging.getLogger("cough.train")

STATE_FILE = "state.json"
BEST_FILE = "best.h5"
OPTIMIZER_FILE = "optimizer.npz"
PREDICTIONS_FILE = "predictions.parquet"


# --------------------------------------------------------------------------- class weights


def class_weights(labels) -> dict[int, float]:
    """'balanced' weights (scikit-learn): n / (2 · n_class), so each class carries half the loss.

    >>> class_weights([0, 0, 0, 1])
    {0: 0.6666666666666666, 1: 2.0}
    """
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels, dtype=int)
    weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    return {0: float(weights[0]), 1: float(weights[1])}


# --------------------------------------------------------------------------- metrics


def recording_scores(windows: pd.DataFrame) -> pd.DataFrame:
    """Window rows (recording_id, label, prob) → one row per recording, scored by
    :func:`cough.model.inference.aggregate_windows` (the rule scoring uses too)."""
    return (windows.groupby("recording_id", sort=True)
            .agg(label=("label", "first"), score=("prob", aggregate_windows), windows=("prob", "size"))
            .reset_index())


def evaluate_splits(predictions: pd.DataFrame) -> tuple[float, dict]:
    """Window predictions of the final model (split, recording_id, label, prob) → the
    threshold chosen on the validation recordings, and metrics per split at that threshold."""
    scores = {name: recording_scores(part) for name, part in predictions.groupby("split")}
    threshold = choose_threshold(scores["val"]["label"], scores["val"]["score"])
    return threshold, {name: binary_metrics(s["label"], s["score"], threshold) for name, s in scores.items()}


# --------------------------------------------------------------------------- Ray Train


@dataclass
class TrainConfig:
    """Everything a worker needs; recorded in model.json under ``training``."""

    arch: str = "pooled"
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    dropout: float = 0.5
    seed: int = 0
    early_stopping: bool = False
    patience: int = 5
    image_size: int = 150
    class_weight: dict = field(default_factory=lambda: {0: 1.0, 1: 1.0})
    train_images: int = 0
    shuffle_buffer: int = 512
    threads: int = 1
    eval_splits: list = field(default_factory=lambda: ["val", "test"])
    trace_dir: str | None = None

    def steps_per_epoch(self, world_size: int) -> int:
        """Steps per epoch: Ray Data splits the training images equally across the workers
        (dropping at most ``world_size - 1``), each step takes ``batch_size / world_size``
        images per worker, so one global step sees ``batch_size`` images."""
        per_worker = self.train_images // world_size
        return max(1, math.ceil(per_worker / self.worker_batch(world_size)))

    def worker_batch(self, world_size: int) -> int:
        return max(1, self.batch_size // world_size)


def worker_batches(shard, *, batch_size: int, steps: int, seed: int, shuffle_buffer: int = 0):
    """Yield ``steps`` batches ``(uint8 images, int64 labels)`` from one worker's Ray Data shard
    (numpy batches of the fixed-shape ``image`` column), as they are stored.

    It ends after the last of them without asking the shard for more: tf.data's prefetch asks
    past the epoch's end, and a split shard answers that ask only after a wait. With 2 workers
    the wait held `model.fit` 4-6 s after the epoch's last step, every other epoch
    (docs/benchmarks.md).
    """
    batches = iter(shard.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2,
                                      local_shuffle_buffer_size=shuffle_buffer or None,
                                      local_shuffle_seed=seed if shuffle_buffer else None))
    try:
        for _ in range(steps):
            batch = next(batches, None)
            if batch is None:
                return
            yield batch["image"], batch["label"].astype(np.int64)
    finally:
        batches.close()  # Ray Data's generator: stops the epoch's reading here, not at GC


def _tf_dataset(tf, shard, config: TrainConfig, world_size: int, epoch: int, rank: int):
    """The shard's batches as (images in [0, 1], one-hot labels, class weights). The scaling,
    one-hot and weights run in TensorFlow's threads: the Python generator only hands over
    uint8 images (a quarter of the float32 bytes), under the GIL, beside the training."""
    size = config.image_size
    signature = (tf.TensorSpec((None, size, size, 3), tf.uint8), tf.TensorSpec((None,), tf.int64))
    weights = tf.constant([config.class_weight[0], config.class_weight[1]], tf.float32)

    @tf.autograph.experimental.do_not_convert  # nothing to convert; see cough.model.inference._forward
    def model_inputs(images, labels):
        return (rescale(tf, images), tf.one_hot(labels, len(CLASS_NAMES)),
                tf.gather(weights, labels))

    return tf.data.Dataset.from_generator(
        lambda: worker_batches(shard, batch_size=config.worker_batch(world_size),
                               steps=config.steps_per_epoch(world_size),
                               seed=config.seed * 1000 + epoch * 10 + rank, shuffle_buffer=config.shuffle_buffer),
        output_signature=signature).map(model_inputs).prefetch(2)


def evaluate_shard(model, shard, class_weight: dict, *, batch_size: int = 64) -> pd.DataFrame:
    """Window predictions over a whole (unsplit) shard: recording_id, window_index, label, prob, loss
    (class-weighted cross-entropy, the quantity training minimises)."""
    parts = []
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
        prob = predict_windows(model, batch["image"], batch_size=batch_size)
        label = batch["label"].astype(int)
        p_true = np.clip(np.where(label == 1, prob, 1 - prob), 1e-7, 1.0)
        weight = np.where(label == 1, class_weight[1], class_weight[0])
        parts.append(pd.DataFrame({"recording_id": batch["recording_id"].astype(str),
                                   "window_index": batch["window_index"].astype(int), "label": label,
                                   "prob": prob, "loss": -np.log(p_true) * weight}))
    if not parts:
        return pd.DataFrame(columns=["recording_id", "window_index", "label", "prob", "loss"])
    return pd.concat(parts, ignore_index=True)


def _auc(windows: pd.DataFrame):
    recs = recording_scores(windows)
    return finite(auc(recs["label"], recs["score"]))


class _StepTrace:
    """Keras callback factory: after every step append (rank, pid, node, epoch, step, weights
    digest) to ``trace_dir/rank-R.jsonl`` on the worker's machine. A diagnostic: it shows
    that all workers hold the same weights after each step, and which process did which epoch."""

    @staticmethod
    def make(tf, trace_dir: str, rank: int, epoch_ref: list):
        import ray

        node = ray.get_runtime_context().get_node_id()
        os.makedirs(trace_dir, exist_ok=True)
        target = os.path.join(trace_dir, f"rank-{rank}.jsonl")

        class StepTrace(tf.keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                digest = hashlib.sha256()
                for w in self.model.get_weights():
                    digest.update(np.ascontiguousarray(w).tobytes())
                line = {"rank": rank, "pid": os.getpid(), "node": node, "epoch": epoch_ref[0], "step": int(batch),
                        "digest": digest.hexdigest(), "time": time.time()}
                with open(target, "a") as f:
                    f.write(json.dumps(line) + "\n")

        return StepTrace()


def train_loop(config: dict) -> None:
    """The per-worker training function that Ray Train's TensorflowTrainer runs.

    Every worker builds the model under MultiWorkerMirroredStrategy (TF_CONFIG comes from
    Ray Train), resumes from ``ray.train.get_checkpoint()`` when there is one, and per epoch
    fits on its own Ray Data shard and reports to Ray Train; rank 0 attaches a checkpoint
    (weights, best weights, optimizer state, history). Rank 0 alone predicts the validation shard and broadcasts its verdict
    (history row, early stopping), so every worker takes the same decision. A last report
    carries the chosen weights and their validation and test window predictions.
    """
    import ray.train
    from ray.train.collective import broadcast_from_rank_zero

    from ..model.networks import tensorflow

    cfg = TrainConfig(**config)
    cfg.class_weight = {int(k): float(v) for k, v in cfg.class_weight.items()}
    tf = tensorflow(threads=cfg.threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    tf.keras.utils.set_random_seed(cfg.seed)
    # One worker has nothing to all-reduce: the default strategy spares each step the
    # collective ops and the distributed input pipeline (the same arithmetic).
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if world > 1 else tf.distribute.get_strategy()
    with strategy.scope():
        model = build_model(cfg.arch, image_size=cfg.image_size, learning_rate=cfg.learning_rate,
                            dropout=cfg.dropout)
        model.optimizer.build(model.trainable_variables)
    state: dict[str, Any] = {"epoch": -1, "parameters": int(model.count_params()), "history": [], "best_epoch": None,
             "best_val_loss": None, "wait": 0, "resumed_from_epochs": [], "final": False}
    best_weights = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            with open(os.path.join(d, STATE_FILE)) as f:
                state = json.load(f)
            model.load_weights(os.path.join(d, WEIGHTS_FILE))
            with np.load(os.path.join(d, OPTIMIZER_FILE), allow_pickle=False) as opt:
                model.optimizer.set_weights([opt[str(i)] for i in range(len(opt.files))])
            if os.path.exists(os.path.join(d, BEST_FILE)):
                current = model.get_weights()
                model.load_weights(os.path.join(d, BEST_FILE))
                best_weights = model.get_weights()
                model.set_weights(current)
        if not state["final"]:
            state["resumed_from_epochs"].append(state["epoch"])
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    epoch_ref = [0]
    callbacks = [_StepTrace.make(tf, cfg.trace_dir, rank, epoch_ref)] if cfg.trace_dir else []
    for epoch in range(cfg.epochs if state["final"] else state["epoch"] + 1, cfg.epochs):
        epoch_ref[0] = epoch
        data = _tf_dataset(tf, train_shard, cfg, world, epoch, rank) if world == 1 else \
            strategy.distribute_datasets_from_function(
                lambda _ctx, epoch=epoch: _tf_dataset(tf, train_shard, cfg, world, epoch, rank))
        start, cpu = time.perf_counter(), cpu_seconds()
        fitted = model.fit(data, epochs=1, steps_per_epoch=cfg.steps_per_epoch(world), verbose=0,
                           callbacks=callbacks)
        fit_s, fit_cpu_s = time.perf_counter() - start, cpu_seconds() - cpu
        update = None
        if rank == 0:  # one worker judges the epoch; all workers get its verdict
            update = _judge_epoch(model, val_shard, cfg, state, epoch, fitted.history, world)
            update["row"].update(fit_s=fit_s, fit_cpu_s=fit_cpu_s, val_s=time.perf_counter() - start - fit_s)
        update = broadcast_from_rank_zero(update)
        state = update["state"]
        state["history"].append(update["row"])
        if rank == 0:
            say(epoch_line(update["row"], cfg.epochs, best=update["improved"] and cfg.early_stopping))
        if update["improved"] and cfg.early_stopping:
            best_weights = model.get_weights()
        _report(model, state, update["row"], rank, best_weights=best_weights)
        if update["stop"]:
            break
    if cfg.early_stopping and best_weights is not None:
        model.set_weights(best_weights)
    state["final"] = True
    predictions = None
    if rank == 0:
        parts = []
        for name in cfg.eval_splits:
            shard = ray.train.get_dataset_shard(name)
            parts.append(evaluate_shard(model, shard, cfg.class_weight).assign(split=name))
        predictions = pd.concat(parts, ignore_index=True)
    _report(model, state, {"epoch": state["epoch"], "final": True}, rank, predictions=predictions)


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


def epoch_line(row: dict, epochs: int, *, best: bool = False) -> str:
    """One training epoch as a person reads it."""
    auc = "n/a" if row["val_auc"] is None else f"{row['val_auc']:.3f}"
    return (f"train: epoch {row['epoch'] + 1}/{epochs}: loss {row['loss']:.4f}, accuracy {row['accuracy']:.3f}, "
            f"val_loss {row['val_loss']:.4f}{' (best)' if best else ''}, val_auc {auc} "
            f"({row['fit_s'] + row['val_s']:.1f} s)")


def cpu_seconds() -> float:
    """CPU seconds this process has used (all its threads): an epoch's cost that other jobs
    on a shared machine disturb less than its wall time."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _judge_epoch(model, val_shard, cfg: TrainConfig, state: dict, epoch: int, fit_history: dict,
                 world: int) -> dict:
    """Validation after one epoch: the history row, the new early-stopping state, and
    whether the weights improved (lower class-weighted validation loss) or training stops."""
    val = evaluate_shard(model, val_shard, cfg.class_weight)
    val_loss = float(val["loss"].mean())
    row = {"epoch": epoch, "loss": float(fit_history["loss"][-1]),
           "accuracy": float(fit_history["accuracy"][-1]), "val_loss": val_loss, "val_auc": _auc(val),
           "images": cfg.train_images // world * world}
    state = {**state, "epoch": epoch}
    improved = state["best_val_loss"] is None or val_loss < state["best_val_loss"]
    if improved:
        state.update(best_val_loss=val_loss, best_epoch=epoch, wait=0)
    else:
        state["wait"] += 1
    stop = cfg.early_stopping and state["wait"] >= cfg.patience
    return {"row": row, "state": state, "improved": improved, "stop": stop}


def _report(model, state: dict, metrics: dict, rank: int, *, best_weights=None, predictions=None):
    """``ray.train.report`` from every worker (it is a barrier); rank 0 attaches the checkpoint."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="cough-ckpt-") as d:
        model.save_weights(os.path.join(d, WEIGHTS_FILE))
        np.savez(os.path.join(d, OPTIMIZER_FILE),
                 **{str(i): v.numpy() for i, v in enumerate(model.optimizer.variables)})
        if best_weights is not None:
            current = model.get_weights()
            model.set_weights(best_weights)
            model.save_weights(os.path.join(d, BEST_FILE))
            model.set_weights(current)
        if predictions is not None:
            predictions.to_parquet(os.path.join(d, PREDICTIONS_FILE), index=False)
        with open(os.path.join(d, STATE_FILE), "w") as f:
            json.dump(state, f)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


#: How often Ray Train's controller polls the workers (ray.train.v2's HEALTH_CHECK_INTERVAL_S_ENV_VAR).
CONTROLLER_POLL_ENV, CONTROLLER_POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25"


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

    resources, threads, use_gpu = worker_resources(workers)
    config.threads = threads
    trainer = TensorflowTrainer(
        train_loop,
        train_loop_config=asdict(config),
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(  # type: ignore[call-arg]  # worker_runtime_env: Ray Train v2's RunConfig
            name=name, storage_path=storage,
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
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CoughError(f"training failed ({reason}); rerun with --resume to continue from the "
                         "last checkpoint") from exc
    finally:
        if ours:  # the caller's environment as it was
            os.environ.pop(CONTROLLER_POLL_ENV, None)
