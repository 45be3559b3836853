"""Benchmarks for `cough train` on featurize shards (a script, not a timed test).

speed (default), side by side in one run on the same training images:
  (a) plain Keras ``fit`` in this process on the images in memory (all cores),
  (b) ``cough train`` with 1 Ray Train worker,
  (c) ``cough train`` with 2 Ray Train workers.
Per-epoch fit time and images/s (first epoch left out: tracing and warm-up), plus wall time
(of ``fit`` for (a), of the ``train`` call for (b) and (c), Ray already started). Then, as a
user sees them, each a fresh process from start to exit:
  (a2) a plain Keras script (``--what script``): read the training images from the shards,
       import TensorFlow, fit, save the weights;
  (b2) ``python -m cough train SHARDS --workers 1 --address local``.

arch: grouped, stratified k-fold cross-validation of each architecture with plain Keras
(the architecture is measured, not the infrastructure): recording-level AUC on the held-out
fold after every epoch, and training cost (s per epoch, images/s, parameters).

    .venv/bin/python bench/train.py /work/cache/covid-features --num-cpus 2
    .venv/bin/python bench/train.py /work/cache/covid-features --what arch --epochs 20 --folds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cough.runtime import set_tensorflow_env  # noqa: E402

set_tensorflow_env(onednn=True)  # as in the Train workers

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from cough.model.inference import predict_windows  # noqa: E402
from cough.model.networks import build_model, preprocess, tensorflow  # noqa: E402
from cough.tables.schema import to_numpy  # noqa: E402
from cough.train.splits import split_groups  # noqa: E402
from cough.train.evaluate import class_weights, recording_scores  # noqa: E402
from cough.train.loop import cpu_seconds  # noqa: E402
from cough.train.trainset import read_index, read_manifest, recordings  # noqa: E402


def load(shards: str):
    out = read_manifest(shards)
    index = read_index(out)
    recs, dropped = recordings(index)
    table = pq.read_table(Path(shards) / "images", columns=["recording_id", "path", "label", "participant", "image"])
    frame = table.drop(["image"]).to_pandas()
    keep = (~frame["path"].isin(dropped) & frame["label"].notna()).to_numpy()
    images = to_numpy(table["image"])[keep]
    return recs, frame[keep].reset_index(drop=True), images


def keras_fit(arch, images, labels, *, epochs, batch_size, weights, threads, on_epoch=None, cpu_times=None):
    """Plain Keras: (seconds per epoch, model); CPU seconds per epoch appended to ``cpu_times``."""
    tf = tensorflow(threads)
    tf.keras.utils.set_random_seed(0)
    model = build_model(arch)
    times, cpu_times = [], [] if cpu_times is None else cpu_times

    class Timer(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t, self.cpu = time.perf_counter(), cpu_seconds()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)
            cpu_times.append(cpu_seconds() - self.cpu)
            if on_epoch:
                on_epoch(epoch, model)

    x = preprocess(images)
    y = np.eye(2, dtype=np.float32)[labels]
    model.fit(x, y, batch_size=batch_size, epochs=epochs, class_weight=weights, verbose=0, shuffle=True,
              callbacks=[Timer()])
    return times, model


def script(args):
    """A plain Keras training script, as (a2) of ``speed`` runs it in a fresh process."""
    recs, frame, images = load(args.shards)
    train_rows = frame["participant"].isin(split_groups(recs, seed=0)["train"]).to_numpy()
    labels = frame["label"].to_numpy(dtype=int)[train_rows]
    _, model = keras_fit(args.arch, images[train_rows], labels, epochs=args.epochs, batch_size=32,
                         weights=class_weights(labels), threads=args.num_cpus)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_weights(os.path.join(tmp, "weights.h5"))


def fresh_process_walls(args) -> dict:
    """(a2) and (b2) of ``speed``: seconds from start to exit of a fresh process each."""
    import subprocess

    walls = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for name, cmd in (("a2_keras_script", [__file__, args.shards, "--what", "script"]),
                          ("b2_cough_train_cli", ["-m", "cough", "train", args.shards, "--out", f"{tmp}/model",
                                                  "--workers", "1", "--address", "local", "-q"])):
            start = time.perf_counter()
            subprocess.run([sys.executable, *cmd, "--arch", args.arch, "--epochs", str(args.epochs),
                            "--num-cpus", str(args.num_cpus)], check=True, cwd=Path(__file__).resolve().parents[1],
                           stdout=subprocess.DEVNULL)
            walls[name] = {"wall_s": time.perf_counter() - start, "load": os.getloadavg()[0]}
            print(f"({name.split('_')[0]}) {name}: {walls[name]['wall_s']:.1f} s from start to exit "
                  f"(load {walls[name]['load']:.1f})", flush=True)
    ratio = walls["b2_cough_train_cli"]["wall_s"] / walls["a2_keras_script"]["wall_s"]
    print(f"(b2)/(a2) = {ratio:.2f}x (target: wall for the epochs <= 2x plain Keras)")
    return {**walls, "b2_vs_a2": ratio}


def speed(args):
    from cough.cli import build_parser
    from cough.runtime import init_ray
    from cough.train import TrainSettings, train

    recs, frame, images = load(args.shards)
    groups = split_groups(recs, seed=0)
    train_rows = frame["participant"].isin(groups["train"]).to_numpy()
    labels = frame["label"].to_numpy(dtype=int)[train_rows]
    weights = class_weights(labels)
    n = int(train_rows.sum())
    out = {"machine": args.machine, "arch": args.arch, "epochs": args.epochs, "train_images": n, "runs": {}}
    print(f"{n} training images, arch {args.arch}, {args.epochs} epochs, batch 32", flush=True)

    start, cpu = time.perf_counter(), []
    times, _ = keras_fit(args.arch, images[train_rows], labels, epochs=args.epochs, batch_size=32,
                         weights=weights, threads=args.num_cpus, cpu_times=cpu)
    out["runs"]["a_keras_fit"] = {"epoch_s": times, "epoch_cpu_s": cpu, "wall_s": time.perf_counter() - start,
                                  "load": os.getloadavg()[0]}
    del images

    init_ray(None, num_cpus=args.num_cpus)
    for workers in (1, 2):
        with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
            cli = build_parser().parse_args(["train", args.shards, "--out", f"{tmp}/model", "--arch", args.arch,
                                             "--epochs", str(args.epochs), "--workers", str(workers)])
            start = time.perf_counter()
            train(args.shards, cli.out, TrainSettings.from_args(cli))
            wall = time.perf_counter() - start
            meta = json.loads(Path(tmp, "model", "model.json").read_text())
        out["runs"][f"{'bc'[workers - 1]}_cough_train_{workers}w"] = {
            "epoch_s": [h["fit_s"] for h in meta["history"]], "val_s": [h["val_s"] for h in meta["history"]],
            "epoch_cpu_s": [h["fit_cpu_s"] for h in meta["history"]],
            "images": meta["history"][0]["images"], "wall_s": wall, "load": os.getloadavg()[0]}

    base = base_cpu = base_wall = None
    print(f"\n{'way':24} {'s/epoch':>8} {'images/s':>9} {'vs (a)':>7} {'CPU s/epoch':>12} {'vs (a)':>7} "
          f"{'wall s':>7} {'vs (a)':>7} {'load':>5}")
    for name, run in out["runs"].items():
        steady = statistics.median(run["epoch_s"][1:] or run["epoch_s"])
        steady_cpu = statistics.median(run["epoch_cpu_s"][1:] or run["epoch_cpu_s"])
        run.update(steady_epoch_s=steady, steady_epoch_cpu_s=steady_cpu, images_per_s=run.get("images", n) / steady)
        base, base_cpu, base_wall = base or steady, base_cpu or steady_cpu, base_wall or run["wall_s"]
        run.update(vs_a=steady / base, cpu_vs_a=steady_cpu / base_cpu, wall_vs_a=run["wall_s"] / base_wall)
        print(f"{name:24} {steady:8.1f} {run['images_per_s']:9.1f} {run['vs_a']:6.2f}x {steady_cpu:12.1f} "
              f"{run['cpu_vs_a']:6.2f}x {run['wall_s']:7.0f} {run['wall_vs_a']:6.2f}x {run['load']:5.1f}")
    print("targets: 1 worker <= 1.15x (a) per epoch, wall for the epochs <= 2x (a)")
    import ray

    ray.shutdown()  # (a2) and (b2) run alone, not beside this process's idle Ray instance
    out["fresh_processes"] = fresh_process_walls(args)
    return out


def arch(args):
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    recs, frame, images = load(args.shards)
    labels = frame["label"].to_numpy(dtype=int)
    folds = StratifiedGroupKFold(n_splits=args.folds, shuffle=True, random_state=0)
    per_rec = recs.set_index("recording_id")
    out = {"machine": args.machine, "epochs": args.epochs, "folds": args.folds, "archs": {}}
    for name in args.archs.split(","):
        result = {"auc": [], "epoch_s": [], "parameters": int(build_model(name).count_params())}
        for k, (_, held) in enumerate(folds.split(per_rec.index, per_rec["label"], per_rec["participant"])):
            if k == args.max_folds:
                break
            test_ids = set(per_rec.index[held])
            test = frame["recording_id"].isin(test_ids).to_numpy()
            curve = []

            def on_epoch(epoch, model, test=test, curve=curve):
                prob = predict_windows(model, images[test])
                scores = recording_scores(frame[test].assign(prob=prob))
                curve.append(float(roc_auc_score(scores["label"], scores["score"])))

            times, _ = keras_fit(name, images[~test], labels[~test], epochs=args.epochs, batch_size=32,
                                 weights=class_weights(labels[~test]), threads=args.num_cpus, on_epoch=on_epoch)
            result["auc"].append(curve)
            result["epoch_s"].append(times)
            print(f"{name} fold {k}: AUC by epoch {np.round(curve, 3).tolist()}, "
                  f"{statistics.median(times):.1f} s/epoch", flush=True)
        auc = np.array(result["auc"])
        result["auc_last_mean"], result["auc_last_sd"] = float(auc[:, -1].mean()), float(auc[:, -1].std())
        result["auc_mean_by_epoch"] = auc.mean(axis=0).round(4).tolist()
        result["train_images_per_fold"] = int(len(frame) * (1 - 1 / args.folds))
        result["s_per_epoch"] = float(np.median(result["epoch_s"]))
        out["archs"][name] = result
        print(f"{name}: {result['parameters']:,} parameters, AUC after {args.epochs} epochs "
              f"{result['auc_last_mean']:.3f} ± {result['auc_last_sd']:.3f}, {result['s_per_epoch']:.1f} s/epoch",
              flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shards", help="a `cough featurize` OUT (e.g. of ../shared/data/covid19-cough)")
    p.add_argument("--what", choices=["speed", "arch", "script"], default="speed")
    p.add_argument("--arch", default="pooled", help="speed: the architecture to time")
    p.add_argument("--archs", default="pooled,seed", help="arch: architectures to compare")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--max-folds", type=int, help="arch: stop after this many of the folds (same folds, less time)")
    p.add_argument("--num-cpus", type=int, default=os.cpu_count())
    p.add_argument("--machine", default=f"{os.cpu_count()} cores, no GPU, Python {sys.version.split()[0]}")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    result = {"speed": speed, "arch": arch, "script": script}[args.what](args)
    if args.json and result:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
