"""train: fit a CNN on featurize shards with Ray Train and write MODEL/.

Driver: check SHARDS, read its small columns, split the groups (participants) into
train/val/test, stream each split's images to Ray Train's TensorflowTrainer (one shard of
the training images per worker, gradients all-reduced every step), then score the
validation and test recordings against their true labels, pick the threshold on
validation, and commit MODEL/ by writing model.json last (cough.model.write_model).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cough import __version__
from cough.artifacts import ModelMeta
from cough.errors import CoughError, UsageError
from cough.flags import integer, number
from cough.model import ARCHITECTURES, CLASS_NAMES
from cough.runtime import add_ray_arguments

if TYPE_CHECKING:  # pandas and the training loop load when a job runs, not with the parser
    import pandas as pd

    from cough.train import TrainConfig

HELP = "train the CNN on featurize shards with Ray Train (group-wise splits, checkpoints)"
EXAMPLE = "cough train out/features --out out/model --epochs 20 --workers 2"
DEFAULT_ARCH = "pooled"
RUN_FILE = "cough-run.json"
#: Settings that must match for --resume to continue a run.
RESUME_KEYS = ("shards", "featurizer_version", "arch", "batch_size", "seed", "val_fraction",
               "test_fraction", "learning_rate", "dropout", "early_stopping", "patience")
log = logging.getLogger("cough.train")


def add_arguments(p) -> None:
    p.add_argument("shards", metavar="SHARDS", help="output directory of `cough featurize` (images/, manifest.json)")
    p.add_argument("--out", required=True, metavar="MODEL",
                   help="model folder to write (weights-<version>.h5, model.json): new, empty, or an earlier "
                        "`cough train` output, which this run replaces when it commits; anything else is refused")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default=DEFAULT_ARCH,
                   help=f"network: 'seed' is the seed article's CNN (75.8M parameters); 'pooled' pools "
                        f"before its head (65k parameters); default {DEFAULT_ARCH} (see docs/train.md)")
    p.add_argument("--epochs", type=integer(at_least=1), default=30, help="epochs to train (default 30; the seed used 100)")
    p.add_argument("--batch-size", type=integer(at_least=1), default=32, help="global batch size, split across workers (default 32)")
    p.add_argument("--learning-rate", type=number(above=0, at_most=1), default=1e-3, help="Adam learning rate (default 0.001)")
    p.add_argument("--dropout", type=number(at_least=0, below=1), default=0.5, help="dropout before the head while training (default 0.5, the seed's)")
    p.add_argument("--workers", type=integer(at_least=1), default=1, help="Ray Train workers (data-parallel replicas, default 1)")
    p.add_argument("--val-fraction", type=number(above=0, below=1), default=0.15, help="share of groups for validation (default 0.15)")
    p.add_argument("--test-fraction", type=number(at_least=0, below=1), default=0.15,
                   help="share of groups held out for the test metrics (default 0.15; 0: no test split)")
    p.add_argument("--seed", type=integer(at_least=0), default=0, help="seed of the split, initial weights and shuffling (default 0)")
    p.add_argument("--early-stopping", action="store_true",
                   help="stop when validation loss has not improved for --patience epochs, keep the best epoch's weights")
    p.add_argument("--patience", type=integer(at_least=1), default=5, help="epochs without improvement before stopping (default 5)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of this MODEL from its last checkpoint")
    p.add_argument("--storage", help="where Ray Train keeps checkpoints (default: MODEL's folder/.cough-train, "
                                     "removed after success); use shared storage on a multi-node cluster")
    p.add_argument("--max-failures", type=integer(at_least=0), default=3,
                   help="worker failures to recover from, each from the last checkpoint (default 3)")
    p.add_argument("--cv", type=integer(at_least=2, at_most=50), metavar="K",
                   help="grouped K-fold cross-validation (folds by participant, stratified by label): every "
                        "participant is scored once by a model that never saw it, into --cv-pred, and MODEL is a "
                        "final model trained on all of them with the threshold chosen out of fold. For small "
                        "clinical sets, where a held-out test split is a handful of people")
    p.add_argument("--cv-pred", metavar="PRED",
                   help="where --cv writes the out-of-fold predictions, a PRED for `cough report` "
                        "(default: MODEL-oof beside MODEL)")
    p.add_argument("--trace-dir", help="diagnostic: each worker appends one JSON line per step "
                                       "(pid, epoch, weights digest) to DIR/rank-N.jsonl")
    add_ray_arguments(p)


def _check_args(args) -> None:
    """What the parser's types cannot see: flags that bound each other."""
    if args.batch_size < args.workers:
        raise UsageError("--batch-size is the global batch: it must be at least --workers")
    if args.val_fraction + args.test_fraction >= 1:
        raise UsageError("--val-fraction and --test-fraction must leave groups to train on (their sum below 1)")


def _storage(args) -> tuple[str, str, bool]:
    """(storage_path, run name, whether it is ours to delete after success)."""
    model = args.out.rstrip("/")
    parent, name = model.rsplit("/", 1) if "/" in model else (".", model)
    if args.storage:
        return args.storage, name, False
    if "://" not in parent:
        parent = os.path.abspath(parent)
    return f"{parent}/.cough-train", name, True


def _remove_run(run_dir: str) -> None:
    """Delete a finished run's checkpoints, and the hidden storage folder once it is empty."""
    from cough.storage import Location

    run = Location.of(run_dir)
    run.delete()
    parent = run.like(run.path.rsplit("/", 1)[0])
    if not parent.listdir():
        parent.delete()


def _prepare_run(run_dir: str, settings: dict, resume: bool) -> None:
    """Start fresh, or check that the interrupted run in ``run_dir`` had the same settings."""
    from cough.storage import Location

    run = Location.of(run_dir)
    record = run.join(RUN_FILE)
    if record.exists() and resume:
        before = record.read_json()
        changed = [k for k in RESUME_KEYS if before.get(k) != settings.get(k)]
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
    record.write_json(settings)


def _start_ray(args) -> None:
    from cough.logs import native_stderr_muted
    from cough.runtime import init_ray

    with native_stderr_muted():  # Ray Train's TensorFlow backend imports TensorFlow in the driver
        import ray.train.tensorflow  # noqa: F401
    init_ray(args.address, num_cpus=args.num_cpus)


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


def _fit(features, index, dropped_paths: list[str], groups: dict, args, *, name: str) -> Fitted:
    """Train one model on ``groups``' splits of the featurize OUT ``features``."""
    from cough.storage import join
    from cough.splits import split_datasets, split_windows
    from cough.train import TrainConfig, cache_small, class_weights, fit, final_checkpoint

    windows = split_windows(index, groups, dropped_paths)
    weights = class_weights(windows["train"]["label"])
    config = TrainConfig(arch=args.arch, epochs=args.epochs, batch_size=args.batch_size,
                         learning_rate=args.learning_rate, dropout=args.dropout, seed=args.seed,
                         early_stopping=args.early_stopping, patience=args.patience,
                         image_size=features.info.image_size, class_weight=weights,
                         train_images=len(windows["train"]), eval_splits=[s for s in groups if s != "train"],
                         trace_dir=args.trace_dir)
    log.info("splits (participants): %s; class weights %s", ", ".join(f"{k} {len(v)}" for k, v in groups.items()),
             ", ".join(f"{CLASS_NAMES[k]} {w:.3g}" for k, w in weights.items()))
    storage, _, _ = _storage(args)
    run_dir = join(storage, name)
    _prepare_run(run_dir, {"shards": features.loc.uri, "featurizer_version": features.info.featurizer_version,
                           **{k: getattr(args, k) for k in RESUME_KEYS[2:]}}, args.resume)
    datasets = cache_small(split_datasets(features.images, groups, dropped_paths),
                           sum(map(len, windows.values())), config.image_size)
    result = fit(datasets, config, workers=args.workers, storage=storage, name=name,
                 max_failures=args.max_failures)
    weights_h5, state, predictions = final_checkpoint(result.checkpoint)
    return Fitted(weights_h5, state, predictions, windows, config, weights, run_dir)


def _meta(args, features, groups: dict, fitted: Fitted, dropped_paths: list[str], started: float,
          **decision) -> ModelMeta:
    """model.json's content; ``decision``: the caller's threshold, threshold_rule, metrics (and cv)."""
    import ray

    windows, state = fitted.windows, fitted.state
    return ModelMeta(
        arch=args.arch, parameters=state["parameters"], class_names=CLASS_NAMES,
        aggregation="mean of the windows' P(positive) per recording (cough.model.aggregate_windows)",
        featurizer=features.info.featurizer, featurizer_version=features.info.featurizer_version,
        shards=features.loc.uri,
        splits={s: {"groups": members, "recordings": int(windows[s]["recording_id"].nunique()),
                    "images": len(windows[s]), "positive_images": int(windows[s]["label"].sum())}
                for s, members in groups.items()},
        excluded_paths=dropped_paths,
        class_weight={CLASS_NAMES[k]: v for k, v in fitted.class_weight.items()},
        history=state["history"],
        training={**{k: v for k, v in vars(fitted.config).items() if k not in ("class_weight", "trace_dir")},
                  "workers": args.workers, "epochs_run": len(state["history"]),
                  "best_epoch": state["best_epoch"], "restored_best": args.early_stopping,
                  "resumed_from_epochs": state["resumed_from_epochs"],
                  "wall_s": round(time.perf_counter() - started, 1)},
        cough_version=__version__, ray_version=ray.__version__,
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(), **decision)


def train(shards: str, out: str, args) -> dict:
    from cough.model import KIND, write_model
    from cough.storage import claim
    from cough.splits import split_groups
    from cough.train import evaluate_splits
    from cough.trainset import read_index, read_manifest, recordings

    started = time.perf_counter()
    features = read_manifest(shards)
    output = claim(out, KIND, inputs={"SHARDS": features.loc})
    index = read_index(features)
    recs, dropped_paths = recordings(index)
    if getattr(args, "cv", None):
        return cross_validate(features, output, args, index=index, recs=recs, dropped_paths=dropped_paths,
                              started=started)
    groups = split_groups(recs, val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed)

    _start_ray(args)
    _, name, ours = _storage(args)
    fitted = _fit(features, index, dropped_paths, groups, args, name=name)
    threshold, metrics = evaluate_splits(fitted.predictions)
    meta = _meta(args, features, groups, fitted, dropped_paths, started,
                 threshold=threshold,
                 threshold_rule=("Youden's J (sensitivity + specificity - 1) maximised on the validation recordings; "
                                 "midway between the best point's score and the next lower validation score"),
                 metrics=metrics)
    version = write_model(output, fitted.weights_h5, meta)
    if ours:  # the checkpoints served their purpose once MODEL is complete
        _remove_run(fitted.run_dir)
    return {"out": output.loc.uri, "version": version, "arch": args.arch, "epochs_run": len(fitted.state["history"]),
            "threshold": round(threshold, 4), "val_auc": metrics["val"]["auc"],
            "test_auc": metrics["test"]["auc"] if "test" in metrics else None,
            "wall_s": meta.training["wall_s"]}


def cross_validate(features, output, args, *, index, recs, dropped_paths: list[str], started: float) -> dict:
    """``--cv K``: K models, each scoring the participants of its fold out of fold; the
    threshold chosen on those scores; a final model trained on every participant; the
    out-of-fold predictions committed to a PRED (``--cv-pred``) as one run."""
    import pandas as pd
    import pyarrow.parquet as pq

    from cough.crossval import OOF_RUN_PREFIX, grouped_folds, oof_table
    from cough.model import write_model
    from cough.pred import LOG_DIR, RunWriter, claim_pred
    from cough.schema import current_names
    from cough.score import pred_schema
    from cough.metrics import binary_metrics, choose_threshold
    from cough.splits import split_groups
    from cough.train import evaluate_splits, recording_scores

    if args.resume:
        raise UsageError("--resume does not apply to --cv: rerun the cross-validation")
    target, pred_output = claim_pred(args.cv_pred or f"{output.loc.uri.rstrip('/')}-oof",
                                     inputs={"SHARDS": features.loc, "MODEL": output.loc})
    folds = grouped_folds(recs, k=args.cv, seed=args.seed)
    _start_ray(args)
    _, name, ours = _storage(args)
    oof, fold_info = [], []
    for k, test_groups in enumerate(folds):
        rest = recs[~recs["participant"].isin(test_groups)]
        groups = {**split_groups(rest, val_fraction=args.val_fraction, test_fraction=0, seed=args.seed + k),
                  "test": test_groups}
        log.info("cross-validation fold %d of %d: %d participants held out", k + 1, args.cv, len(test_groups))
        fold = _fit(features, index, dropped_paths, groups, args, name=f"{name}.fold-{k + 1}")
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

    groups = split_groups(recs, val_fraction=args.val_fraction, test_fraction=0, seed=args.seed)
    log.info("final model on every participant (%d), threshold %.4f chosen out of fold", recs["participant"].nunique(),
             threshold)
    fitted = _fit(features, index, dropped_paths, groups, args, name=name)
    val = recording_scores(fitted.predictions[fitted.predictions["split"] == "val"])
    meta = _meta(args, features, groups, fitted, dropped_paths, started,
                 threshold=threshold,
                 threshold_rule=(f"Youden's J maximised on the out-of-fold scores of {args.cv}-fold grouped "
                                 "cross-validation (every participant scored once by a model that never saw it); "
                                 "midway between the best point's score and the next lower score"),
                 metrics={"out_of_fold": oof_metrics, "val": binary_metrics(val["label"], val["score"], threshold)},
                 cv={"k": args.cv, "folds": fold_info, "out_of_fold_pred": target.loc.uri})
    version = write_model(output, fitted.weights_h5, meta)
    if ours:
        _remove_run(fitted.run_dir)

    manifest, columns = features.info, features.info.metadata_columns
    recordings_table = current_names(pq.read_table(features.recordings.path, filesystem=features.recordings.fs)).to_pandas()
    run_id = f"{OOF_RUN_PREFIX}{version}"
    schema = pred_schema(columns)
    with pred_output.writing(LOG_DIR):
        table = target.table()
        writer = RunWriter(target, run_id, schema, read_version=table.version() if table is not None else None)
        try:
            writer.add(oof_table(scores, oof_windows, recordings_table, schema=schema, threshold=threshold,
                                 model_version=version, featurizer_version=manifest.featurizer_version,
                                 run_id=run_id))
            writer.commit({"model_version": version, "featurizer_version": manifest.featurizer_version,
                           "source": features.loc.uri, "model": output.loc.uri, "out_of_fold": True,
                           "cv_folds": args.cv, "metadata_columns": columns, "cough_version": __version__,
                           "inputs": len(scores), "ok": len(scores), "errors": 0, "rejected": 0, "skipped": 0},
                          model_version=version, rescore=True)
        finally:
            writer.close()
    return {"out": output.loc.uri, "version": version, "arch": args.arch, "cv": args.cv,
            "out_of_fold_pred": target.loc.uri, "threshold": round(threshold, 4),
            "out_of_fold_auc": oof_metrics["auc"], "participants": int(recs["participant"].nunique()),
            "wall_s": round(time.perf_counter() - started, 1)}


def run(args) -> dict:
    _check_args(args)
    return train(args.shards, args.out, args)


if __name__ == "__main__":
    from cough.cli import run_module

    run_module("train")
