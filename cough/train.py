"""Training on featurize shards with Ray Train: checks, leakage-free splits, class weights,
the per-worker training loop, and the metrics and threshold written into MODEL/model.json.

The driver (jobs/train.py) reads only the small columns of ``SHARDS/images`` to split by
group; the images themselves stream to the workers as Ray Data shards. Each worker runs
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
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from .errors import CoughError
from .logs import say
from .runtime import WORKER_ENV
from .schema import current_names, stored_names
from .model import CLASS_NAMES, WEIGHTS_FILE, aggregate_windows, build_model, predict_windows

log = logging.getLogger("cough.train")

SPLITS = ("train", "val", "test")
#: Columns the workers read; ``log_mel`` is never read for training.
IMAGE_COLUMNS = ["recording_id", "window_index", "label", "image"]
#: Columns the driver reads to split (no tensors).
INDEX_COLUMNS = ["recording_id", "path", "window_index", "label", "participant"]
STATE_FILE = "state.json"
BEST_FILE = "best.h5"
OPTIMIZER_FILE = "optimizer.npz"
PREDICTIONS_FILE = "predictions.parquet"


# --------------------------------------------------------------------------- input checks


def read_manifest(shards: str):
    """The committed ``cough featurize`` OUT at ``shards`` (:class:`cough.shards.FeaturesOut`),
    or a CoughError saying what is wrong."""
    from .shards import read_out

    out = read_out(shards)
    if not out.images.is_dir():
        raise CoughError(f"SHARDS {out.loc.uri} has no {out.info.tables['images']}/ folder: is it complete?")
    nested = [i.path for i in out.images.listdir(recursive=True) if i.path.endswith("manifest.json")]
    if nested:
        raise CoughError(f"SHARDS {out.images.uri} holds another featurize output ({nested[0]}): "
                         "shards of several runs cannot be mixed; featurize them together instead")
    return out


def read_index(out) -> pd.DataFrame:
    """One row per image (no tensors): recording_id, path, window_index, label, participant
    (also from a cough 0.1 OUT, whose columns were named window and group).

    Refuses shards that disagree with their manifest (image count or image shape): those
    hold shards of several featurize runs, possibly with other featurizer versions.
    """
    import pyarrow.dataset as pads

    shards, manifest = out.loc.uri, out.info
    try:
        dataset = pads.dataset(out.images.path, filesystem=out.images.fs, format="parquet",
                               exclude_invalid_files=False)
        fragments = list(dataset.get_fragments())
    except Exception as exc:
        raise CoughError(f"SHARDS {shards}: cannot read images/ ({exc})") from None
    if not fragments:
        raise CoughError(f"SHARDS {shards} holds no images: nothing to train on")
    size = manifest.image_size
    for fragment in fragments:
        schema = fragment.physical_schema
        shape = list(schema.field("image").type.shape) if "image" in schema.names else None
        if shape != [size, size, 3]:
            raise CoughError(f"SHARDS {shards}: {os.path.basename(fragment.path)} holds images of shape "
                             f"{shape}, but manifest.json says {size}x{size}x3: shards of another "
                             "featurizer were mixed in; featurize again")
    table = current_names(dataset.to_table(columns=stored_names(INDEX_COLUMNS, dataset.schema.names)))
    if table.num_rows != manifest.images:
        raise CoughError(f"SHARDS {shards}: images/ holds {table.num_rows} images but manifest.json says "
                         f"{manifest.images}: shards were added or removed; featurize again")
    index = table.to_pandas()
    index["label"] = index["label"].astype("Int8")
    return index


def recordings(index: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One row per labelled recording (recording_id, path, label, participant, windows) and the
    paths whose images are left out: unlabelled ones, and the second name of the same bytes
    (one recording, one split). When copies of the same bytes disagree on the label the
    recording is left out entirely.

    >>> recordings(index)            # doctest: +SKIP
    """
    if index.empty:
        raise CoughError("SHARDS holds no images: nothing to train on")
    per_path = (index.groupby("path", sort=True)
                .agg(recording_id=("recording_id", "first"), label=("label", "first"),
                     participant=("participant", "first"), windows=("window_index", "size")).reset_index())
    labelled = per_path[per_path["label"].notna()]
    if labelled.empty:
        raise CoughError("SHARDS has no labelled images; train needs labels: featurize with --labels "
                         "or put recordings in pos/ and neg/ folders")
    conflicting = labelled.groupby("recording_id")["label"].nunique()
    conflicting = set(conflicting[conflicting > 1].index)
    if conflicting:
        log.warning("%d recordings appear under several names with different labels; left out",
                    len(conflicting))
    kept = labelled[~labelled["recording_id"].isin(conflicting)].drop_duplicates("recording_id")
    dropped = sorted(set(per_path["path"]) - set(kept["path"]))
    if kept.empty:
        raise CoughError("SHARDS has no recording with a consistent label: nothing to train on")
    kept = kept.assign(label=kept["label"].astype(int),
                       participant=kept["participant"].fillna(kept["recording_id"]))
    return kept.reset_index(drop=True), dropped


# --------------------------------------------------------------------------- splits


def split_groups(recs: pd.DataFrame, *, val_fraction: float = 0.15, test_fraction: float = 0.15,
                 seed: int = 0, attempts: int = 20) -> dict[str, list[str]]:
    """Assign every group (participant) to one of train/val/test, stratified by label.

    scikit-learn's StratifiedGroupKFold cuts off the test groups (one fold of about
    ``1/test_fraction``), then the validation groups from the rest. Every split must hold
    both classes (a split without positives can give no AUC or threshold); when a
    shuffle misses that, the next seed derived from ``seed`` is tried. Deterministic for
    ``seed``. ``test_fraction`` 0 means no test split.

    >>> split_groups(recs, val_fraction=0.2, test_fraction=0.2, seed=0)   # doctest: +SKIP
    {'train': ['p01', ...], 'val': [...], 'test': [...]}
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 0.9:
        raise CoughError("--val-fraction must lie in (0, 1), --test-fraction in [0, 1), "
                         "and together they must leave at least 10% for training")
    labels = recs["label"].to_numpy()
    if len(np.unique(labels)) < 2:
        only = CLASS_NAMES[int(labels[0])]
        raise CoughError(f"every labelled recording is {only}: training needs both classes")
    splits = ["train", "val"] + (["test"] if test_fraction > 0 else [])
    per_class = recs.groupby("label")["participant"].nunique()
    if per_class.min() < len(splits):
        raise CoughError(f"too few groups: {per_class.to_dict()} groups per label, but the {len(splits)} "
                         f"splits ({', '.join(splits)}) each need a group of each class; add recordings"
                         + (" or pass --test-fraction 0" if test_fraction > 0 else ""))
    rng = np.random.RandomState(seed)
    for _ in range(attempts):
        assign = np.full(len(recs), "train", dtype=object)
        rest = np.arange(len(recs))
        for name, fraction, of in (("test", test_fraction, 1.0), ("val", val_fraction, 1.0 - test_fraction)):
            if fraction == 0:
                continue
            n_splits = max(2, min(int(round(of / fraction)), recs["participant"].iloc[rest].nunique()))
            folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True,
                                         random_state=int(rng.randint(2**31 - 1)))
            _, held = next(folds.split(rest, labels[rest], recs["participant"].iloc[rest]))
            assign[rest[held]] = name
            rest = np.delete(rest, held)
        if all(len(np.unique(labels[assign == s])) == 2 for s in splits):
            return {s: sorted(recs["participant"][assign == s].unique().tolist()) for s in splits}
    raise CoughError(f"cannot split {recs['participant'].nunique()} groups into {', '.join(splits)} with both "
                     "classes in each; add recordings or change --val-fraction/--test-fraction")


def class_weights(labels) -> dict[int, float]:
    """'balanced' weights (scikit-learn): n / (2 · n_class), so each class carries half the loss.

    >>> class_weights([0, 0, 0, 1])
    {0: 0.6666666666666666, 1: 2.0}
    """
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels, dtype=int)
    weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    return {0: float(weights[0]), 1: float(weights[1])}


def split_datasets(images, groups: dict[str, list[str]], exclude_paths: list[str]) -> dict:
    """One Ray Dataset per split: the images of its groups (a :class:`cough.storage.Location`
    of an OUT's images folder), read lazily (the filter is pushed down into the Parquet
    scan; ``log_mel`` is not read). A cough 0.1 OUT's columns come out under their current
    names."""
    import pyarrow.dataset as pads
    import ray
    from ray.data.expressions import col

    fs, path = images.fs, images.path
    available = pads.dataset(path, filesystem=fs, format="parquet").schema.names
    participant, *columns = stored_names(["participant", *IMAGE_COLUMNS], available)
    renamed = {old: new for old, new in zip(columns, IMAGE_COLUMNS) if old != new}
    out = {}
    for name, members in groups.items():
        keep = col(participant).is_in(list(members)) & col("label").is_not_null()
        if exclude_paths:
            keep = keep & ~col("path").is_in(list(exclude_paths))
        ds = ray.data.read_parquet(path, filesystem=fs, num_cpus=0.25).filter(expr=keep).select_columns(columns)
        out[name] = ds.rename_columns(renamed) if renamed else ds
    return out


def cache_small(datasets: dict, n_images: int, image_size: int, *, fraction: float = 0.2) -> dict:
    """Materialize the splits in Ray's object store when their images take less than
    ``fraction`` of it, so that each epoch iterates memory instead of re-reading Parquet
    (a Ray Data read costs seconds of scheduling per pass, which dominates small epochs).
    Larger datasets keep streaming from storage every epoch."""
    import ray

    need = n_images * image_size * image_size * 3
    have = ray.cluster_resources().get("object_store_memory", 0)
    if need > fraction * have:
        log.debug("streaming %d images (%.0f MB) from storage every epoch", n_images, need / 1e6)
        return datasets
    log.debug("caching %d images (%.0f MB) in the object store", n_images, need / 1e6)
    return {name: ds.materialize() for name, ds in datasets.items()}


def split_windows(index: pd.DataFrame, groups: dict[str, list[str]], exclude_paths: list[str]) -> dict:
    """The index rows (one per image) each split trains or evaluates on."""
    used = index[~index["path"].isin(exclude_paths) & index["label"].notna()]
    split_of = {g: name for name, members in groups.items() for g in members}
    split = used["participant"].fillna(used["recording_id"]).map(split_of)
    return {name: used[split == name].assign(label=lambda f: f["label"].astype(int)) for name in groups}


# --------------------------------------------------------------------------- metrics


def recording_scores(windows: pd.DataFrame) -> pd.DataFrame:
    """Window rows (recording_id, label, prob) → one row per recording, scored by
    :func:`cough.model.aggregate_windows` (the rule scoring uses too)."""
    return (windows.groupby("recording_id", sort=True)
            .agg(label=("label", "first"), score=("prob", aggregate_windows), windows=("prob", "size"))
            .reset_index())


def choose_threshold(labels, scores) -> float:
    """The decision threshold that maximises Youden's J = sensitivity + specificity − 1 on
    the validation recordings (scikit-learn's ROC curve; ties go to the higher threshold).
    A recording is called positive when its score is ≥ the threshold.

    Every threshold between the best ROC point's score and the next lower validation score
    gives the same J; we take the midpoint, so that no validation recording sits on the
    threshold, where a rounding difference (another TensorFlow kernel, another machine)
    would flip its call.

    >>> round(choose_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 6)
    0.6
    """
    from sklearn.metrics import roc_curve

    labels = np.asarray(labels, dtype=int)
    if len(np.unique(labels)) < 2:
        raise CoughError("the validation split needs both classes to choose a threshold")
    fpr, tpr, thresholds = roc_curve(labels, np.asarray(scores, dtype=float), drop_intermediate=False)
    finite = np.isfinite(thresholds)
    j = np.where(finite, tpr - fpr, -np.inf)
    best = np.flatnonzero(j >= j.max() - 1e-9)[0]  # thresholds decrease: the first tie is the highest
    below = thresholds[best + 1] if best + 1 < len(thresholds) else 0.0  # the next lower score
    return float((thresholds[best] + below) / 2)


def binary_metrics(labels, scores, threshold: float) -> dict:
    """AUC (scikit-learn), accuracy, sensitivity and specificity at ``threshold``, against the
    true labels. Values that cannot be computed (one class only) are None.

    >>> binary_metrics([0, 1, 1], [0.2, 0.7, 0.4], threshold=0.5)["sensitivity"]
    0.5
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score

    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    predicted = (scores >= threshold).astype(int)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(labels, predicted, labels=[0, 1]).ravel())
    both = len(np.unique(labels)) == 2
    return {
        "n": int(len(labels)), "positives": int(labels.sum()),
        "auc": float(roc_auc_score(labels, scores)) if both else None,
        "accuracy": float(accuracy_score(labels, predicted)) if len(labels) else None,
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "threshold": float(threshold),
    }


def evaluate(predictions: pd.DataFrame) -> tuple[float, dict]:
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
    (numpy batches of the fixed-shape ``image`` column), as they are stored."""
    batches = shard.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2,
                                 local_shuffle_buffer_size=shuffle_buffer or None,
                                 local_shuffle_seed=seed if shuffle_buffer else None)
    done = 0
    for batch in batches:
        if done == steps:
            break
        yield batch["image"], batch["label"].astype(np.int64)
        done += 1


def _tf_dataset(tf, shard, config: TrainConfig, world_size: int, epoch: int, rank: int):
    """The shard's batches as (images in [0, 1], one-hot labels, class weights). The scaling,
    one-hot and weights run in TensorFlow's threads: the Python generator only hands over
    uint8 images (a quarter of the float32 bytes), under the GIL, beside the training."""
    size = config.image_size
    signature = (tf.TensorSpec((None, size, size, 3), tf.uint8), tf.TensorSpec((None,), tf.int64))
    weights = tf.constant([config.class_weight[0], config.class_weight[1]], tf.float32)

    def model_inputs(images, labels):  # the same numbers as cough.model.preprocess
        return (tf.cast(images, tf.float32) * (1.0 / 255.0), tf.one_hot(labels, len(CLASS_NAMES)),
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
    from sklearn.metrics import roc_auc_score

    recs = recording_scores(windows)
    return float(roc_auc_score(recs["label"], recs["score"])) if recs["label"].nunique() == 2 else None


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

    from .model import tensorflow

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
    state = {"epoch": -1, "parameters": int(model.count_params()), "history": [], "best_epoch": None,
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


#: The Train workers' environment: oneDNN kernels train the CNNs 3.5-8x faster on CPU
#: (docs/train.md), while the Ray workers' default turns them off. It must be set before
#: the worker process imports TensorFlow, which Ray's TensorFlow backend does before
#: :func:`train_loop` runs.
TRAIN_WORKER_ENV = {**WORKER_ENV, "TF_ENABLE_ONEDNN_OPTS": "1"}


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
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            worker_runtime_env={"env_vars": {**TRAIN_WORKER_ENV, "TF_CPP_MIN_LOG_LEVEL": os.environ.get(
                "TF_CPP_MIN_LOG_LEVEL", TRAIN_WORKER_ENV["TF_CPP_MIN_LOG_LEVEL"])}}),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )
    try:
        return trainer.fit()
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CoughError(f"training failed ({reason}); rerun with --resume to continue from the "
                         "last checkpoint") from exc
