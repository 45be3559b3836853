"""The train job: fit a CNN on a featurize OUT with Ray Train and commit MODEL/.

:func:`train` checks SHARDS, reads its small columns (cough/train/trainset.py), splits the
participants into train/val/test (cough/train/splits.py), streams each split's images to Ray
Train (cough/train/loop.py: one shard of the training images per worker, gradients
all-reduced every step), scores the validation and test recordings against their true
labels, picks the threshold on validation, and commits MODEL/ by writing model.json last
(cough.model.store.write_model). :func:`cross_validate` is ``--cv K``. Checkpoints live under
MODEL's folder/.cough-train until MODEL commits. cough/commands/train.py parses the flags.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..model.meta import ModelMeta
from ..tables.artifacts import RunRecord
from ..errors import CoughError, UsageError
from ..model.networks import CLASS_NAMES

if TYPE_CHECKING:  # pandas and the training loop load when a job runs
    import pandas as pd

    from .loop import TrainConfig

DEFAULT_ARCH = "pooled"
RUN_FILE = "cough-run.json"
#: Settings that must match for --resume to continue a run.
RESUME_KEYS = ("shards", "featurizer_version", "arch", "batch_size", "seed", "val_fraction",
               "test_fraction", "learning_rate", "dropout", "early_stopping", "patience")
log = logging.getLogger("cough.train")


@dataclass(frozen=True)
class TrainSettings:
    """How to train: the flags of ``cough train`` (cough/commands/train.py says what each means).
    Checked on construction: settings that bound each other are refused with the flags to fix."""

    arch: str = DEFAULT_ARCH
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    dropout: float = 0.5
    workers: int = 1
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    early_stopping: bool = False
    patience: int = 5
    resume: bool = False
    storage: str | None = None
    max_failures: int = 3
    cv: int | str | None = None
    cv_pred: str | None = None
    trace_dir: str | None = None
    address: str | None = None
    num_cpus: int | None = None
    #: local folders every node of the cluster sees at the same path (--shared-path)
    shared_paths: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "shared_paths", tuple(self.shared_paths))
        if self.batch_size < self.workers:
            raise UsageError("--batch-size is the global batch: it must be at least --workers")
        if self.val_fraction + self.test_fraction >= 1:
            raise UsageError("--val-fraction and --test-fraction must leave groups to train on (their sum below 1)")
        if self.cv is not None and self.cv != "loo" and not (isinstance(self.cv, int) and self.cv >= 2):
            raise UsageError(f"--cv takes a number of folds of at least 2, or 'loo', not {self.cv!r}")

    @classmethod
    def from_args(cls, args) -> "TrainSettings":
        """The settings among parsed flags (an argparse Namespace holds others too)."""
        import dataclasses

        values: dict[str, Any] = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
        if hasattr(args, "shared_path"):
            values["shared_paths"] = tuple(args.shared_path)
        return cls(**values)


def _storage(out: str, settings: TrainSettings) -> tuple[str, str, bool]:
    """(storage_path, run name, whether it is ours to delete after success) of MODEL ``out``."""
    model = out.rstrip("/")
    parent, name = model.rsplit("/", 1) if "/" in model else (".", model)
    if settings.storage:
        return settings.storage, name, False
    if "://" not in parent:
        parent = os.path.abspath(parent)
    return f"{parent}/.cough-train", name, True


def _remove_run(run_dir: str) -> None:
    """Delete a finished run's checkpoints, and the hidden storage folder once it is empty."""
    from ..tables.storage import Location

    run = Location.of(run_dir)
    run.delete()
    parent = run.like(run.path.rsplit("/", 1)[0])
    if not parent.listdir():
        parent.delete()


def _prepare_run(run_dir: str, record_of: dict, resume: bool) -> None:
    """Start fresh, or check that the interrupted run in ``run_dir`` had the same settings."""
    from ..tables.storage import Location

    run = Location.of(run_dir)
    record = run.join(RUN_FILE)
    if record.exists() and resume:
        before = record.read_json()
        changed = [k for k in RESUME_KEYS if before.get(k) != record_of.get(k)]
        if changed:
            raise CoughError(f"cannot --resume: the interrupted run used {', '.join(f'{k}={before.get(k)!r}' for k in changed)}; "
                             "rerun with the same settings, or without --resume to start afresh")
        log.info("resuming the run in %s", run_dir)
        return
    if run.exists():
        log.info("%s: starting afresh (an earlier run's checkpoints are discarded%s)", run_dir,
                 "" if resume else "; --resume would continue it")
        run.delete()
    elif resume:
        log.info("no interrupted run in %s: starting afresh", run_dir)
    record.write_json(record_of)


def _start_ray(settings: TrainSettings, *, shards: str, storage: str) -> None:
    """Start Ray while TensorFlow loads in a thread: Ray Train's TensorFlow backend imports it
    in the driver (~3 s of CPU), and a local Ray's start is mostly waiting for its own
    processes. Side by side they took 8.2 s against 11.2 s one after the other (2 cores).

    Then the locations that Ray Train's workers open (:func:`cough.runtime.check_topology`):
    SHARDS, the checkpoints' ``storage``, --trace-dir. MODEL (and --cv-pred) are written by
    this process, from the last checkpoint."""
    import threading

    from ..logs import native_stderr_filtered
    from ..model.networks import tensorflow
    from ..runtime import init_ray

    with native_stderr_filtered():  # TensorFlow's banner
        loading = threading.Thread(target=tensorflow, name="cough-tensorflow-import", daemon=True)
        loading.start()
        try:
            init_ray(settings.address, num_cpus=settings.num_cpus, shared_paths=settings.shared_paths,
                     paths={"SHARDS": shards, "--storage" if settings.storage else "checkpoints (--storage default)":
                            storage, "--trace-dir": settings.trace_dir})
        finally:
            loading.join()


@dataclass
class Fitted:
    """One model that :func:`_fit` trained."""

    weights_h5: bytes
    #: the training state of the last checkpoint (history, best epoch, parameters)
    state: dict
    #: window predictions (split, recording_id, label, prob) of every split but ``train``
    predictions: "pd.DataFrame"
    #: the index rows (one per image) of each split
    windows: dict
    config: "TrainConfig"
    class_weight: dict
    #: Ray Train's folder of this run's checkpoints
    run_dir: str


def _fit(features, index, dropped_paths: list[str], groups: dict, settings: TrainSettings, *, storage: str,
         name: str) -> Fitted:
    """Train one model on ``groups``' splits of the featurize OUT ``features``."""
    from ..tables.storage import join
    from .splits import split_datasets, split_windows
    from .evaluate import class_weights
    from .launch import final_checkpoint, fit
    from .loop import TrainConfig

    windows = split_windows(index, groups, dropped_paths)
    weights = class_weights(windows["train"]["label"])
    config = TrainConfig(arch=settings.arch, epochs=settings.epochs, batch_size=settings.batch_size,
                         learning_rate=settings.learning_rate, dropout=settings.dropout, seed=settings.seed,
                         early_stopping=settings.early_stopping, patience=settings.patience,
                         image_size=features.info.image_size, class_weight=weights,
                         train_images=len(windows["train"]), eval_splits=[s for s in groups if s != "train"],
                         trace_dir=settings.trace_dir)
    log.info("splits (participants): %s; class weights %s", ", ".join(f"{k} {len(v)}" for k, v in groups.items()),
             ", ".join(f"{CLASS_NAMES[k]} {w:.3g}" for k, w in weights.items()))
    run_dir = join(storage, name)
    _prepare_run(run_dir, {"shards": features.loc.uri, "featurizer_version": features.info.featurizer_version,
                           **{k: getattr(settings, k) for k in RESUME_KEYS[2:]}}, settings.resume)
    datasets = split_datasets(features.images, groups, dropped_paths,
                              image_bytes=sum(map(len, windows.values())) * config.image_size ** 2 * 3)
    result = fit(datasets, config, workers=settings.workers, storage=storage, name=name,
                 max_failures=settings.max_failures)
    weights_h5, state, predictions = final_checkpoint(result.checkpoint)
    return Fitted(weights_h5, state, predictions, windows, config, weights, run_dir)


def _cv_name(cv: int | str) -> str:
    """How a report and model.json name the cross-validation: '4-fold', 'leave-one-participant-out'."""
    return "leave-one-participant-out" if cv == "loo" else f"{cv}-fold"


def _meta(settings: TrainSettings, features, groups: dict, fitted: Fitted, dropped_paths: list[str], started: float,
          **decision) -> ModelMeta:
    """model.json's content; ``decision``: the caller's threshold, threshold_rule, metrics (and cv)."""
    import ray

    windows, state = fitted.windows, fitted.state
    return ModelMeta(
        arch=settings.arch, parameters=state["parameters"], class_names=CLASS_NAMES,
        aggregation="mean of the windows' P(positive) per recording (cough.model.inference.aggregate_windows)",
        featurizer=features.info.featurizer, featurizer_version=features.info.featurizer_version,
        min_cough_probability=features.info.min_cough_probability, shards=features.loc.uri,
        splits={s: {"groups": members, "recordings": int(windows[s]["recording_id"].nunique()),
                    "images": len(windows[s]), "positive_images": int(windows[s]["label"].sum())}
                for s, members in groups.items()},
        excluded_paths=dropped_paths,
        class_weight={CLASS_NAMES[k]: v for k, v in fitted.class_weight.items()},
        history=state["history"],
        training={**{k: v for k, v in vars(fitted.config).items() if k not in ("class_weight", "trace_dir")},
                  "workers": settings.workers, "epochs_run": len(state["history"]),
                  "best_epoch": state["best_epoch"], "restored_best": settings.early_stopping,
                  "resumed_from_epochs": state["resumed_from_epochs"],
                  "wall_s": round(time.perf_counter() - started, 1)},
        cough_version=__version__, ray_version=ray.__version__,
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(), **decision)


def train(shards: str, out: str, settings: TrainSettings = TrainSettings()) -> dict:
    """Train on the featurize OUT ``shards`` and commit MODEL ``out`` (model.json last);
    with ``settings.cv``, :func:`cross_validate`. Returns the job's summary."""
    from ..model.store import KIND, write_model
    from ..tables.storage import claim
    from .splits import split_groups
    from .evaluate import evaluate_splits
    from .trainset import left_out, read_index, read_manifest, recordings

    started = time.perf_counter()
    features = read_manifest(shards)
    output = claim(out, KIND, inputs={"SHARDS": features.loc})
    index = read_index(features)
    recs, dropped_paths = recordings(index)
    dropped = left_out(index, recs, dropped_paths)
    if dropped["duplicates"]:
        log.info("%d files hold bytes trained on under another name and are left out (one recording, one split): "
                 "%s%s", dropped["duplicates"], "; ".join(dropped["duplicate_examples"]),
                 "; all in model.json excluded_paths" if dropped["duplicates"] > len(dropped["duplicate_examples"]) else "")
    storage, name, ours = _storage(out, settings)
    if settings.cv:
        return {**cross_validate(features, output, settings, index=index, recs=recs, dropped_paths=dropped_paths,
                                 storage=storage, name=name, ours=ours, started=started), **_counts(recs, dropped)}
    groups = split_groups(recs, val_fraction=settings.val_fraction, test_fraction=settings.test_fraction, seed=settings.seed)

    _start_ray(settings, shards=features.loc.uri, storage=storage)
    fitted = _fit(features, index, dropped_paths, groups, settings, storage=storage, name=name)
    threshold, metrics = evaluate_splits(fitted.predictions)
    meta = _meta(settings, features, groups, fitted, dropped_paths, started,
                 threshold=threshold,
                 threshold_rule=("Youden's J (sensitivity + specificity - 1) maximised on the validation recordings; "
                                 "midway between the best point's score and the next lower validation score"),
                 metrics=metrics)
    version = write_model(output, fitted.weights_h5, meta)
    if ours:  # the checkpoints served their purpose once MODEL is complete
        _remove_run(fitted.run_dir)
    return {"out": output.loc.uri, "version": version, "arch": settings.arch, "epochs_run": len(fitted.state["history"]),
            "threshold": round(threshold, 4), "val_auc": metrics["val"]["auc"],
            "test_auc": metrics["test"]["auc"] if "test" in metrics else None,
            # how little an AUC on a handful of participants says (`cough report` gives intervals)
            "val_participants": len(groups["val"]), "test_participants": len(groups.get("test", [])),
            **_counts(recs, dropped), "wall_s": (meta.training or {}).get("wall_s")}


def _counts(recs, dropped: dict) -> dict:
    """What train's summary says of its input: the recordings (contents) and participants it
    trained on, and the files it left out by reason (cough.train.trainset.left_out)."""
    return {"recordings": len(recs), "participants": int(recs["participant"].nunique()),
            "unlabelled_files": dropped["unlabelled"], "duplicate_files": dropped["duplicates"],
            "conflicting_files": dropped["conflicting"], "duplicate_examples": dropped["duplicate_examples"]}


def cross_validate(features, output, settings: TrainSettings, *, index, recs, dropped_paths: list[str],
                   storage: str, name: str, ours: bool, started: float) -> dict:
    """``--cv K``: K models, each scoring the participants of its fold out of fold; the
    threshold chosen on those scores; a final model trained on every participant; the
    out-of-fold predictions committed to a PRED (``--cv-pred``) as one run. ``storage``,
    ``name``: where Ray Train keeps checkpoints (:func:`_storage`), deleted after each model
    when ``ours``."""
    import pandas as pd
    import pyarrow.parquet as pq

    from .crossval import OOF_RUN_PREFIX, grouped_folds, oof_table
    from ..model.store import write_model
    from ..tables.pred import LOG_DIR, RunWriter, claim_pred
    from ..tables.schema import current_names, pred_schema
    from ..tables.storage import retry
    from ..evaluation.metrics import binary_metrics, choose_threshold
    from .splits import split_groups
    from .evaluate import evaluate_splits, recording_scores

    if settings.resume:
        raise UsageError("--resume does not apply to --cv: rerun the cross-validation")
    target, pred_output = claim_pred(settings.cv_pred or f"{output.loc.uri.rstrip('/')}-oof",
                                     inputs={"SHARDS": features.loc, "MODEL": output.loc})
    assert settings.cv is not None  # train() calls this function only with --cv
    folds = grouped_folds(recs, k=settings.cv, seed=settings.seed)
    _start_ray(settings, shards=features.loc.uri, storage=storage)
    oof, fold_info = [], []
    for k, test_groups in enumerate(folds):
        rest = recs[~recs["participant"].isin(test_groups)]
        groups = {**split_groups(rest, val_fraction=settings.val_fraction, test_fraction=0, seed=settings.seed + k),
                  "test": test_groups}
        log.info("cross-validation fold %d of %d: %d participants held out", k + 1, len(folds), len(test_groups))
        fold = _fit(features, index, dropped_paths, groups, settings, storage=storage, name=f"{name}.fold-{k + 1}")
        _, metrics = evaluate_splits(fold.predictions)
        oof.append(fold.predictions[fold.predictions["split"] == "test"])
        fold_info.append({"fold": k + 1, "test_groups": test_groups, "train_groups": len(groups["train"]),
                          "val_groups": len(groups["val"]), "test_auc": metrics["test"]["auc"],
                          "epochs_run": len(fold.state["history"])})
        if ours:
            _remove_run(fold.run_dir)
    oof_windows = pd.concat(oof, ignore_index=True)
    scores = recording_scores(oof_windows)
    threshold = choose_threshold(scores["label"], scores["score"])
    oof_metrics = binary_metrics(scores["label"], scores["score"], threshold)

    groups = split_groups(recs, val_fraction=settings.val_fraction, test_fraction=0, seed=settings.seed)
    log.info("final model on every participant (%d), threshold %.4f chosen out of fold", recs["participant"].nunique(),
             threshold)
    fitted = _fit(features, index, dropped_paths, groups, settings, storage=storage, name=name)
    val = recording_scores(fitted.predictions[fitted.predictions["split"] == "val"])
    meta = _meta(settings, features, groups, fitted, dropped_paths, started,
                 threshold=threshold,
                 threshold_rule=(f"Youden's J maximised on the out-of-fold scores of {_cv_name(settings.cv)} grouped "
                                 "cross-validation (every participant scored once by a model that never saw it); "
                                 "midway between the best point's score and the next lower score"),
                 metrics={"out_of_fold": oof_metrics, "val": binary_metrics(val["label"], val["score"], threshold)},
                 cv={"k": settings.cv, "folds": fold_info, "out_of_fold_pred": target.loc.uri})
    version = write_model(output, fitted.weights_h5, meta)
    if ours:
        _remove_run(fitted.run_dir)

    manifest, columns = features.info, features.info.metadata_columns
    recordings_table = current_names(retry(
        lambda: pq.read_table(features.recordings.path, filesystem=features.recordings.fs),
        what=f"read {features.recordings.uri}", where=features.recordings))
    run_id = f"{OOF_RUN_PREFIX}{version}"
    schema = pred_schema(columns)
    with pred_output.writing(LOG_DIR):
        table = target.table()
        writer = RunWriter(target, run_id, schema, read_version=table.version() if table is not None else None)
        try:
            writer.add(oof_table(scores, oof_windows, recordings_table, schema=schema, threshold=threshold,
                                 model_version=version, featurizer_version=manifest.featurizer_version,
                                 run_id=run_id))
            rejected = recordings_table["status"].to_pylist().count("rejected")
            writer.commit(RunRecord(model_version=version, featurizer_version=manifest.featurizer_version,
                                    source=features.loc.uri, model=output.loc.uri, out_of_fold=True,
                                    cv_folds=len(folds), metadata_columns=columns, cough_version=__version__,
                                    inputs=len(scores) + rejected, ok=len(scores), errors=0, rejected=rejected,
                                    skipped=0),
                          model_version=version, rescore=True)
        finally:
            writer.close()
    return {"out": output.loc.uri, "version": version, "arch": settings.arch, "cv": settings.cv,
            "out_of_fold_pred": target.loc.uri, "threshold": round(threshold, 4),
            "out_of_fold_auc": oof_metrics["auc"], "fold_aucs": [f["test_auc"] for f in fold_info],
            "wall_s": round(time.perf_counter() - started, 1)}
