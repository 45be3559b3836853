"""The per-worker training loop of Ray Train: its configuration, each worker's batches and
tf.data pipeline, validation after every epoch, early stopping and checkpoints (launched by
cough/train/launch.py; class weights and split metrics in cough/train/evaluate.py).

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
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..logs import say
from ..model.networks import CLASS_NAMES, build_model, rescale
from ..model.store import WEIGHTS_FILE
from .evaluate import evaluate_shard, recording_auc

log = logging.getLogger("cough.train")

STATE_FILE = "state.json"
BEST_FILE = "best.h5"
OPTIMIZER_FILE = "optimizer.npz"
PREDICTIONS_FILE = "predictions.parquet"


# --------------------------------------------------------------------------- class weights



# --------------------------------------------------------------------------- metrics



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
           "accuracy": float(fit_history["accuracy"][-1]), "val_loss": val_loss, "val_auc": recording_auc(val),
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




