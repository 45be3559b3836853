"""train: fit a CNN on featurize shards with Ray Train and write MODEL/.

Driver: check SHARDS, read its small columns, split the groups (participants) into
train/val/test, stream each split's images to Ray Train's TensorflowTrainer (one shard of
the training images per worker, gradients all-reduced every step), then score the
validation and test recordings against their true labels, pick the threshold on
validation, and swap MODEL/ in atomically.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import time

from cough import __version__
from cough.cli import add_ray_arguments, run_module
from cough.errors import CoughError, UsageError
from cough.model import ARCHITECTURES, CLASS_NAMES, META_FILE, WEIGHTS_FILE

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
    p.add_argument("--out", required=True, metavar="MODEL", help="model directory to write (weights.h5, model.json)")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default=DEFAULT_ARCH,
                   help=f"network: 'seed' is the seed article's CNN (75.8M parameters); 'pooled' pools "
                        f"before its head (65k parameters); default {DEFAULT_ARCH} (see docs/train.md)")
    p.add_argument("--epochs", type=int, default=30, help="epochs to train (default 30; the seed used 100)")
    p.add_argument("--batch-size", type=int, default=32, help="global batch size, split across workers (default 32)")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default 0.001)")
    p.add_argument("--dropout", type=float, default=0.5, help="dropout before the head while training (default 0.5, the seed's)")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (data-parallel replicas, default 1)")
    p.add_argument("--val-fraction", type=float, default=0.15, help="share of groups for validation (default 0.15)")
    p.add_argument("--test-fraction", type=float, default=0.15,
                   help="share of groups held out for the test metrics (default 0.15; 0: no test split)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, initial weights and shuffling (default 0)")
    p.add_argument("--early-stopping", action="store_true",
                   help="stop when validation loss has not improved for --patience epochs, keep the best epoch's weights")
    p.add_argument("--patience", type=int, default=5, help="epochs without improvement before stopping (default 5)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of this MODEL from its last checkpoint")
    p.add_argument("--storage", help="where Ray Train keeps checkpoints (default: MODEL's folder/.cough-train, "
                                     "removed after success); use shared storage on a multi-node cluster")
    p.add_argument("--max-failures", type=int, default=3,
                   help="worker failures to recover from, each from the last checkpoint (default 3)")
    p.add_argument("--trace-dir", help="diagnostic: each worker appends one JSON line per step "
                                       "(pid, epoch, weights digest) to DIR/rank-N.jsonl")
    add_ray_arguments(p)


def _check_args(args) -> None:
    if args.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.batch_size < args.workers:
        raise UsageError("--batch-size is the global batch: it must be at least --workers")
    if args.patience < 1 or args.max_failures < 0:
        raise UsageError("--patience must be at least 1 and --max-failures at least 0")
    if not 0 <= args.dropout < 1:
        raise UsageError("--dropout must lie in [0, 1)")
    if not args.learning_rate > 0:
        raise UsageError("--learning-rate must be positive")


def _storage(args) -> tuple[str, str, bool]:
    """(storage_path, run name, whether it is ours to delete after success)."""
    model = args.out.rstrip("/")
    parent, name = model.rsplit("/", 1) if "/" in model else (".", model)
    if args.storage:
        return args.storage, name, False
    if "://" not in parent:
        parent = os.path.abspath(parent)
    return f"{parent}/.cough-train", name, True


def _prepare_run(run_dir: str, settings: dict, resume: bool) -> None:
    """Start fresh, or check that the interrupted run in ``run_dir`` had the same settings."""
    from cough.storage import exists, join, read_json, resolve, write_json

    fs, path = resolve(run_dir)
    if exists(join(run_dir, RUN_FILE)) and resume:
        before = read_json(join(run_dir, RUN_FILE))
        changed = [k for k in RESUME_KEYS if before.get(k) != settings.get(k)]
        if changed:
            raise CoughError(f"cannot --resume: the interrupted run used {', '.join(f'{k}={before.get(k)!r}' for k in changed)}; "
                             "rerun with the same settings, or without --resume to start afresh")
        log.info("resuming the run in %s", run_dir)
        return
    if exists(run_dir):
        log.info("%s: starting afresh (an earlier run's checkpoints are discarded%s)", run_dir,
                 "" if resume else "; --resume would continue it")
        fs.delete_dir(path)
    elif resume:
        log.info("no interrupted run in %s: starting afresh", run_dir)
    fs.create_dir(path, recursive=True)
    write_json(join(run_dir, RUN_FILE), settings)


def _read_checkpoint(checkpoint) -> tuple[bytes, dict, "object"]:
    import pandas as pd

    from cough.train import PREDICTIONS_FILE, STATE_FILE

    with checkpoint.as_directory() as d:
        with open(os.path.join(d, WEIGHTS_FILE), "rb") as f:
            weights = f.read()
        with open(os.path.join(d, STATE_FILE)) as f:
            state = json.load(f)
        predictions = pd.read_parquet(os.path.join(d, PREDICTIONS_FILE))
    if not state.get("final"):
        raise CoughError("training ended without its final checkpoint; rerun with --resume")
    return weights, state, predictions


def evaluate(predictions) -> tuple[float, dict]:
    """Recording-level scores per split → (threshold chosen on val, metrics per split)."""
    from cough.train import binary_metrics, choose_threshold, recording_scores

    scores = {name: recording_scores(part) for name, part in predictions.groupby("split")}
    threshold = choose_threshold(scores["val"]["label"], scores["val"]["score"])
    metrics = {name: binary_metrics(s["label"], s["score"], threshold) for name, s in scores.items()}
    return threshold, metrics


def train(shards: str, out: str, args) -> dict:
    import ray

    from cough.runtime import init_ray
    from cough.storage import atomic_dir, join, resolve, write_json
    from cough.train import (TrainConfig, cache_small, class_weights, fit, read_index, read_manifest, recordings,
                             split_datasets, split_groups)

    started = time.perf_counter()
    manifest = read_manifest(shards)
    index = read_index(shards, manifest)
    recs, dropped_paths = recordings(index)
    groups = split_groups(recs, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                          seed=args.seed)
    used = index[~index["path"].isin(dropped_paths) & index["label"].notna()]
    split_of = {g: name for name, members in groups.items() for g in members}
    used = used.assign(split=used["group"].fillna(used["recording_id"]).map(split_of))
    windows = {name: used[used["split"] == name] for name in groups}
    weights = class_weights(windows["train"]["label"].astype(int))
    config = TrainConfig(arch=args.arch, epochs=args.epochs, batch_size=args.batch_size,
                         learning_rate=args.learning_rate, seed=args.seed,
                         early_stopping=args.early_stopping, patience=args.patience,
                         image_size=int(manifest["featurizer"]["image_size"]), class_weight=weights,
                         train_images=len(windows["train"]), eval_splits=[s for s in groups if s != "train"],
                         trace_dir=args.trace_dir, dropout=args.dropout)
    log.info("splits: %s; class weights %s", {k: f"{len(v)} groups" for k, v in groups.items()}, weights)

    init_ray(args.address, num_cpus=args.num_cpus)
    storage, name, ours = _storage(args)
    run_dir = join(storage, name)
    settings = {"shards": shards, "featurizer_version": manifest["featurizer_version"], "arch": args.arch,
                "batch_size": args.batch_size, "seed": args.seed, "val_fraction": args.val_fraction,
                "test_fraction": args.test_fraction, "learning_rate": args.learning_rate,
                "dropout": config.dropout, "early_stopping": args.early_stopping, "patience": args.patience}
    _prepare_run(run_dir, settings, args.resume)
    datasets = cache_small(split_datasets(join(shards, "images"), groups, dropped_paths),
                           len(used), config.image_size)
    result = fit(datasets, config, workers=args.workers, storage=storage, name=name,
                 max_failures=args.max_failures)
    weights_h5, state, predictions = _read_checkpoint(result.checkpoint)
    threshold, metrics = evaluate(predictions)

    meta = {
        "arch": args.arch,
        "parameters": state["parameters"],
        "class_names": CLASS_NAMES,
        "threshold": threshold,
        "threshold_rule": "Youden's J (sensitivity + specificity - 1) maximised on validation recordings",
        "aggregation": "mean of window P(positive) per recording (cough.model.aggregate_windows)",
        "featurizer": manifest["featurizer"],
        "featurizer_version": manifest["featurizer_version"],
        "shards": shards,
        "splits": {s: {"groups": members, "recordings": int(windows[s]["recording_id"].nunique()),
                       "images": int(len(windows[s])), "positive_images": int(windows[s]["label"].sum())}
                   for s, members in groups.items()},
        "excluded_paths": dropped_paths,
        "class_weight": {CLASS_NAMES[k]: v for k, v in weights.items()},
        "history": state["history"],
        "metrics": metrics,
        "training": {**{k: v for k, v in vars(config).items() if k not in ("class_weight", "trace_dir")},
                     "workers": args.workers, "epochs_run": len(state["history"]),
                     "best_epoch": state["best_epoch"], "restored_best": args.early_stopping,
                     "resumed_from_epochs": state["resumed_from_epochs"],
                     "wall_s": round(time.perf_counter() - started, 1)},
        "format": "tf_keras HDF5 weights only; the architecture is rebuilt from code by name",
        "cough_version": __version__, "ray_version": ray.__version__,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    blob = json.dumps(meta, sort_keys=True, default=str).encode()
    meta["version"] = hashlib.sha256(weights_h5 + blob).hexdigest()[:16]
    with atomic_dir(out) as staging:
        fs, path = resolve(join(staging, WEIGHTS_FILE))
        with fs.open_output_stream(path) as f:
            f.write(weights_h5)
        write_json(join(staging, META_FILE), meta)
    if ours:
        fs, path = resolve(run_dir)
        fs.delete_dir(path)
    test = metrics.get("test", metrics["val"])
    return {"out": out, "version": meta["version"], "arch": args.arch, "epochs_run": len(state["history"]),
            "threshold": round(threshold, 4),
            "val_auc": metrics["val"]["auc"], "test_auc": test["auc"] if "test" in metrics else None,
            "wall_s": meta["training"]["wall_s"]}


def run(args) -> dict:
    _check_args(args)
    return train(args.shards, args.out, args)


if __name__ == "__main__":
    run_module("train")
