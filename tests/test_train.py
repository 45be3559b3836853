"""cough train: splits, metrics, the Ray Train loop (synchronization, faults, resume), MODEL.

Real parts throughout: a 2-CPU local Ray, Ray Train's TensorflowTrainer with
MultiWorkerMirroredStrategy, the sample archive's real featurize shards, real files.
Training tests use the small ``pooled`` network on the 60-recording sample.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cough.cli import build_parser, main
from cough.errors import CoughError
from cough.model.inference import aggregate_windows, predict_windows
from cough.model.networks import build_model
from cough.model.store import load_model
from cough.tables.schema import to_numpy
from cough.evaluation.metrics import binary_metrics, choose_threshold
from cough.train.splits import split_groups
from cough.train.evaluate import class_weights
from cough.train.launch import fit
from cough.train.loop import TrainConfig
from cough.train.trainset import recordings

from .conftest import ROOT, SAMPLE


def _recs(n_groups=30, per_group=2, pos_every=3, seed=0):
    rng = np.random.RandomState(seed)
    rows = []
    for g in range(n_groups):
        label = int(g % pos_every == 0)
        for r in range(rng.randint(1, per_group + 1)):
            rows.append({"recording_id": f"r{g}-{r}", "path": f"/a/g{g}-{r}.mp3", "label": label,
                         "participant": f"g{g}", "windows": 1})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- pure functions


def test_split_groups_are_disjoint_stratified_and_deterministic():
    recs = _recs(n_groups=40)
    splits = split_groups(recs, val_fraction=0.2, test_fraction=0.2, seed=3)
    sets = {k: set(v) for k, v in splits.items()}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert set.union(*sets.values()) == set(recs["participant"])
    label_of = recs.groupby("participant")["label"].first()
    for name, groups in sets.items():
        assert set(label_of[list(groups)]) == {0, 1}, f"{name} lacks a class"
    assert 5 <= len(sets["test"]) <= 11 and 5 <= len(sets["val"]) <= 11
    assert split_groups(recs, val_fraction=0.2, test_fraction=0.2, seed=3) == splits
    assert split_groups(recs, val_fraction=0.2, test_fraction=0.2, seed=4) != splits
    no_test = split_groups(recs, val_fraction=0.2, test_fraction=0.0, seed=3)
    assert set(no_test) == {"train", "val"}


def test_split_groups_refuses_what_cannot_be_split():
    with pytest.raises(CoughError, match="too few participants"):
        split_groups(_recs(n_groups=4, pos_every=2), val_fraction=0.2, test_fraction=0.2)
    with pytest.raises(CoughError, match="both classes"):
        split_groups(_recs(n_groups=10).assign(label=0))
    with pytest.raises(CoughError, match="val-fraction"):
        split_groups(_recs(), val_fraction=0.5, test_fraction=0.5)


def test_same_bytes_under_two_names_is_one_recording_in_one_split():
    index = pd.DataFrame({
        "recording_id": ["a", "a", "b", "b", "c", "d", "e", "e"],
        "path": ["/x/a1.mp3", "/x/a1.mp3", "/x/b.mp3", "/x/b-copy.mp3", "/x/c.mp3", "/x/d.mp3",
                 "/x/e.mp3", "/x/e-copy.mp3"],
        "window_index": [0, 1, 0, 0, 0, 0, 0, 0],
        "label": pd.array([1, 1, 0, 0, None, 0, 1, 0], dtype="Int8"),
        "participant": ["ga", "ga", "gb", "gb2", "gc", "gd", "ge", "ge"],
    })
    recs, dropped = recordings(index)
    assert sorted(recs["recording_id"]) == ["a", "b", "d"]  # c unlabelled, e labelled both ways
    assert recs.set_index("recording_id").loc["a", "windows"] == 2
    assert dropped == ["/x/b.mp3", "/x/c.mp3", "/x/e-copy.mp3", "/x/e.mp3"]  # b-copy sorts first: kept
    with pytest.raises(CoughError, match="no labelled images"):
        recordings(index.assign(label=pd.array([None] * 8, dtype="Int8")))


@pytest.mark.parametrize("image_bytes, driver_limit", [(1, None), (1, 0), (1 << 40, None), (None, None)],
                         ids=["driver-read", "materialized", "streamed", "unknown-size"])
def test_every_way_of_reading_the_splits_gives_the_same_images(ray_local, sample_features, monkeypatch, image_bytes,
                                                                driver_limit):
    """Small splits are read by the driver, middling ones materialized by Ray Data, large ones
    streamed: the same rows, labels and pixels every way, with the excluded paths and
    unlabelled images left out."""
    from cough.train import splits
    from cough.tables.shards import read_out
    from cough.train.splits import split_datasets, split_windows
    from cough.train.trainset import read_index

    if driver_limit is not None:  # the sample is tiny: lower the driver's share to reach Ray Data's cache
        monkeypatch.setattr(splits, "DRIVER_READ_BYTES", driver_limit)

    out = read_out(str(sample_features))
    index = read_index(out)
    recs, dropped = recordings(index)
    groups = split_groups(recs, seed=0)
    dropped = dropped + [sorted(index.loc[index["label"].notna(), "path"])[0]]  # one more left out
    expected = split_windows(index, groups, dropped)
    images = to_numpy(pq.read_table(out.images.path, columns=["recording_id", "window_index", "image"])
                      .sort_by([("recording_id", "ascending"), ("window_index", "ascending")])["image"])
    keys = index.sort_values(["recording_id", "window_index"])[["recording_id", "window_index"]]
    pixels = {(r, w): images[i] for i, (r, w) in enumerate(keys.itertuples(index=False))}
    got = split_datasets(out.images, groups, dropped, image_bytes=image_bytes)
    assert set(got) == set(groups)
    materialized = {type(ds).__name__ == "MaterializedDataset" for ds in got.values()}
    assert materialized == {image_bytes is not None and image_bytes <= 1}  # only the unbounded ones stream
    for name, ds in got.items():
        rows = pd.DataFrame(ds.take_all())
        assert sorted(zip(rows["recording_id"], rows["window_index"], rows["label"])) == \
            sorted(zip(expected[name]["recording_id"], expected[name]["window_index"], expected[name]["label"]))
        for r in rows.itertuples(index=False):
            assert np.array_equal(np.asarray(r.image), pixels[(r.recording_id, r.window_index)])


def test_a_worker_reads_its_split_for_its_steps_and_asks_no_further(ray_local):
    """Each of 2 workers takes its steps' batches from its real split of the training images
    (every image once) and does not ask its split for anything past them: a split answers
    that ask only after a wait (it held `model.fit` 4-6 s at every other epoch with 2
    workers, docs/benchmarks.md)."""
    import math

    from cough.train.loop import worker_batches

    class Asked:
        """A worker's split, counting the batches asked of it (the last ask may find the end)."""

        def __init__(self, split):
            self.split, self.asks = split, 0

        def iter_batches(self, **kwargs):
            batches = iter(self.split.iter_batches(**kwargs))
            while True:
                self.asks += 1
                batch = next(batches, None)
                if batch is None:
                    return
                yield batch

    images = np.arange(100 * 2 * 2 * 3, dtype=np.uint8).reshape(100, 2, 2, 3)
    ds = ray_local.data.from_numpy(images).rename_columns({"data": "image"}).add_column(
        "label", lambda batch: np.zeros(len(batch["image"]), dtype=np.int8), batch_format="numpy")
    splits = [Asked(split) for split in ds.streaming_split(2, equal=True)]
    steps, got = math.ceil(50 / 8), {}

    def read(rank):
        got[rank] = list(worker_batches(splits[rank], batch_size=8, steps=steps, seed=0))

    readers = [threading.Thread(target=read, args=(rank,), daemon=True) for rank in (0, 1)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=120)
    assert sorted(got) == [0, 1]
    assert [len(got[rank]) for rank in (0, 1)] == [steps, steps]
    assert [split.asks for split in splits] == [steps, steps]
    seen = np.concatenate([batch for rank in (0, 1) for batch, _ in got[rank]])
    assert sorted(seen[:, 0, 0, 0].tolist()) == sorted(images[:, 0, 0, 0].tolist())


def test_class_weights_give_each_class_the_same_total_weight():
    labels = np.array([0] * 30 + [1] * 10)
    w = class_weights(labels)
    assert w[1] > w[0]
    assert np.isclose((labels == 0).sum() * w[0], (labels == 1).sum() * w[1])


def test_threshold_and_metrics_come_from_true_labels():
    labels = [0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.3, 0.6, 0.4, 0.7, 0.9]
    t = choose_threshold(labels, scores)
    # J = 2/3 at 0.7 (tpr 2/3, fpr 0) and at 0.4 (tpr 1, fpr 1/3): ties go up, and the
    # threshold sits midway to the next lower score (0.6), on no recording's score
    assert t == pytest.approx(0.65) and t not in scores
    m = binary_metrics(labels, scores, t)
    assert m["confusion_matrix"] == [[3, 0], [1, 2]]
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == 1.0
    assert m["accuracy"] == pytest.approx(5 / 6) and m["auc"] == pytest.approx(8 / 9)
    flipped = binary_metrics([1 - y for y in labels], scores, t)  # predictions never stand in for labels
    assert flipped["auc"] == pytest.approx(1 / 9)
    assert binary_metrics([0, 0], [0.2, 0.9], 0.5)["auc"] is None
    assert aggregate_windows([0.2, 0.4, 0.9]) == pytest.approx(0.5)


def test_seed_architecture_is_the_seed_model():
    seed = build_model("seed")
    assert seed.count_params() == 75_820_898
    assert [type(layer).__name__ for layer in seed.layers] == [
        "Conv2D", "MaxPooling2D", "Conv2D", "Conv2D", "Conv2D", "Flatten", "Dropout", "Dense", "Dense"]
    assert build_model("pooled").count_params() * 100 < seed.count_params()


def test_predictions_are_the_models_own_and_do_not_keep_it_alive():
    """predict_windows traces one graph per model: its numbers are the eager model's, and a
    long process that builds many models (cross-validation, a notebook) gets each one's
    memory back once the model is dropped (the seed network's weights are 300 MB)."""
    import gc
    import weakref

    model = build_model("pooled")
    images = np.random.default_rng(0).integers(0, 256, (5, 150, 150, 3), dtype=np.uint8)
    eager = model(images.astype(np.float32) / np.float32(255), training=False).numpy()[:, 1]
    np.testing.assert_allclose(predict_windows(model, images, batch_size=2), eager, rtol=1e-5, atol=1e-6)
    other = build_model("pooled")
    assert not np.allclose(predict_windows(other, images), eager)  # its own graph, not the first model's
    dropped = weakref.ref(model)
    del model
    gc.collect()
    assert dropped() is None


def test_our_graphs_leave_no_generated_source_in_tmp_when_the_process_is_killed(tmp_path):
    """Ray kills its workers at shutdown, before Python's exit handlers run: a function that
    TensorFlow's autograph converted left its generated source in /tmp on every node, once
    per score actor and per training epoch (696 such files here after a day of runs)."""
    script = ("import os, numpy as np\n"
              "from cough.model.inference import predict_windows\n"
              "from cough.model.networks import build_model, tensorflow\n"
              "from cough.train.loop import TrainConfig, _tf_dataset\n"
              "predict_windows(build_model('pooled'), np.zeros((2, 150, 150, 3), np.uint8))\n"
              "_tf_dataset(tensorflow(), None, TrainConfig(), 1, 0, 0)\n"
              "os._exit(0)  # as a killed worker: no exit handlers\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp_path)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("__autograph_generated")] == []


# ----------------------------------------------------------------------------- bad input


def _cli(capsys, *argv):
    code = main(["train", *map(str, argv)])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def _copy_features(src: Path, dst: Path, *, transform=None) -> Path:
    shutil.copytree(src, dst)
    if transform:
        for part in (dst / "images").glob("*/*.parquet"):
            pq.write_table(transform(pq.read_table(part)), part)
    return dst


def _set(table: pa.Table, column: str, values) -> pa.Table:
    i = table.schema.get_field_index(column)
    return table.set_column(i, table.schema.field(i), pa.array(values, type=table.schema.field(i).type))


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("no_manifest", "no manifest.json"),
    ("empty", "no images"),
    ("one_class", "both classes"),
    ("no_labels", "no labelled images"),
    ("few_groups", "too few participants"),
    ("mixed_versions", "featurize again"),
])
def test_bad_input_fails_with_one_line_and_writes_nothing(tmp_path, capsys, sample_features, case, message):
    src = tmp_path / "shards"
    if case == "no_manifest":
        _copy_features(sample_features, src)
        (src / "manifest.json").unlink()
    elif case == "empty":
        _copy_features(sample_features, src, transform=lambda t: t.slice(0, 0))
        manifest = json.loads((src / "manifest.json").read_text())
        (src / "manifest.json").write_text(json.dumps({**manifest, "images": 0}))
    elif case == "one_class":
        _copy_features(sample_features, src, transform=lambda t: _set(t, "label", [0] * t.num_rows))
    elif case == "no_labels":
        _copy_features(sample_features, src, transform=lambda t: _set(t, "label", [None] * t.num_rows))
    elif case == "few_groups":
        _copy_features(sample_features, src, transform=lambda t: _set(
            t, "participant", [f"g{lab}" for lab in t["label"].to_pylist()]))
    elif case == "mixed_versions":  # a shard of another featurize run (other window) copied in
        from cough.audio.features import FeaturizerParams
        from cough.featurize.batch import featurize_batch

        _copy_features(sample_features, src)
        other = tmp_path / "other"
        raw = sorted((Path(__file__).parents[1] / "data" / "sample" / "raw").iterdir())[:2]
        from cough.tables.storage import Location

        featurize_batch(pa.table({"path": [str(p) for p in raw], "label": pa.array([1, 0], pa.int8()),
                                  "participant": ["x", "y"], "site": ["a", "a"]}), images=Location.of(str(other / "images")),
                        recordings=Location.of(str(other / "recordings")), events=Location.of(str(other / "events")),
                        source=str(raw[0].parent), params=FeaturizerParams(window_s=1.0, hop_s=1.0),
                        min_cough_probability=0.5, metadata_columns=["site"])
        (version,) = (src / "images").iterdir()
        for part in (other / "images").iterdir():
            shutil.copy(part, version / ("other-" + part.name))
    out = tmp_path / "model"
    code, err = _cli(capsys, src, "--out", out, "--epochs", 1)
    assert code == 1
    assert len(err) == 1 and message in err[0] and err[0].startswith("cough train: error:"), err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_flags_are_usage_errors(tmp_path, capsys, sample_features):
    code, err = _cli(capsys, sample_features, "--out", tmp_path / "m", "--workers", 0)  # the parser's range check
    assert code == 2 and "argument --workers: must be at least 1, not 0" in err[-1]
    code, err = _cli(capsys, sample_features, "--out", tmp_path / "m", "--workers", 4, "--batch-size", 2)
    assert code == 2 and len(err) == 1 and "--batch-size is the global batch" in err[0]
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["train", "--help"])
    assert done.value.code == 0


# ----------------------------------------------------------------------------- training


TRAIN_FLAGS = ("--epochs", 4, "--workers", 2, "--val-fraction", 0.2, "--test-fraction", 0.2)


def _args(*argv):
    return build_parser().parse_args(["train", *map(str, argv)])


def _check_model(out: Path, sample_features: Path, workers: int):
    """MODEL loads; model.json has what scoring and reports need; its validation metrics are
    what the written model gives on the validation recordings' true labels (rescored here)."""
    model, meta = load_model(str(out))
    manifest = json.loads((sample_features / "manifest.json").read_text())
    assert len(meta["version"]) == 16
    assert meta["arch"] == "pooled" and meta["parameters"] == model.count_params()
    assert meta["featurizer"] == manifest["featurizer"]
    assert meta["featurizer_version"] == manifest["featurizer_version"]
    assert meta["class_names"] == ["negative", "positive"] and meta["training"]["workers"] == workers
    groups = {k: set(v["groups"]) for k, v in meta["splits"].items()}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert not (groups["val"] & groups["test"])
    assert 0 <= meta["threshold"] <= 1 and meta["metrics"]["val"]["threshold"] == meta["threshold"]
    table = pq.read_table(sample_features / "images", columns=["recording_id", "label", "participant", "image"])
    frame = table.drop(["image"]).to_pandas()
    val = frame["participant"].isin(groups["val"]).to_numpy()
    prob = predict_windows(model, to_numpy(table["image"])[val])
    scored = frame[val].assign(prob=prob).groupby("recording_id").agg(
        label=("label", "first"), score=("prob", aggregate_windows))
    again = binary_metrics(scored["label"], scored["score"], meta["threshold"])
    for key in ("n", "positives", "auc", "accuracy", "sensitivity", "specificity"):
        assert again[key] == pytest.approx(meta["metrics"]["val"][key], abs=1e-4), key
    assert meta["metrics"]["test"]["n"] == meta["splits"]["test"]["recordings"]
    assert not (out.parent / ".cough-train" / out.name).exists()  # checkpoints cleaned up
    assert sorted(p.name for p in out.iterdir()) == [".cough-output.json", "model.json", f"weights-{meta['version']}.h5"]
    assert (meta["weights"], meta["kind"], meta["shards"]) == (f"weights-{meta['version']}.h5", "train",
                                                               str(sample_features))  # absolute URI
    return meta


def _sync_datasets(sample_features, n_train=8):
    import ray

    table = pq.read_table(sample_features / "images", columns=["recording_id", "window_index", "label", "image"])
    table = table.sort_by("recording_id")
    labels = np.array(table["label"].to_pylist())
    pick_train = np.concatenate([np.where(labels == 0)[0][:n_train // 2], np.where(labels == 1)[0][:n_train // 2]])
    pick_val = np.concatenate([np.where(labels == 0)[0][-2:], np.where(labels == 1)[0][-2:]])
    return {"train": ray.data.from_arrow(table.take(pick_train)), "val": ray.data.from_arrow(table.take(pick_val))}


def _weights(result):
    from cough.model.store import WEIGHTS_FILE

    model = build_model("pooled")
    with result.checkpoint.as_directory() as d:
        model.load_weights(os.path.join(d, WEIGHTS_FILE))
    return model.get_weights()


def test_one_seed_gives_one_model(tmp_path, ray_local, sample_features):
    """Two runs of `make demo` printed the same losses for some epochs, then not, and ended
    with other weights (test AUC 0.86 against 0.93): Ray Data handed the training blocks over
    in the order they became ready, so the seeded shuffle saw another order now and then."""
    import ray

    table = pq.read_table(sample_features / "images", columns=["recording_id", "window_index", "label", "image"])
    table = table.sort_by("recording_id").slice(0, 48)
    datasets = {"train": ray.data.from_arrow([table.slice(i, 3) for i in range(0, 48, 3)]),  # 16 blocks
                "val": ray.data.from_arrow(table.slice(0, 8))}
    weights = []
    for run in range(2):
        config = TrainConfig(arch="pooled", epochs=4, batch_size=8, seed=3, train_images=48, shuffle_buffer=16,
                             eval_splits=["val"])
        weights.append(_weights(fit(datasets, config, storage=str(tmp_path / "storage"), name=f"run{run}",
                                    max_failures=0)))
    assert all(np.array_equal(a, b) for a, b in zip(*weights))


def test_two_workers_stay_in_sync_and_match_one_worker(tmp_path, ray_local, sample_features):
    """Every step all-reduces gradients: after each step both workers hold the same weights,
    and 2 workers × 4 images reach the weights that 1 worker reaches with the same 8 images."""
    datasets = _sync_datasets(sample_features)
    results = {}
    for workers in (1, 2):
        config = TrainConfig(arch="pooled", epochs=3, batch_size=8, dropout=0.0, seed=1, train_images=8,
                             shuffle_buffer=0, eval_splits=["val"], trace_dir=str(tmp_path / f"trace{workers}"))
        results[workers] = fit(datasets, config, workers=workers, storage=str(tmp_path / "storage"),
                               name=f"sync{workers}", max_failures=0)
    lines = [json.loads(x) for p in sorted((tmp_path / "trace2").glob("rank-*.jsonl")) for x in p.read_text().splitlines()]
    by_step = {}
    for line in lines:
        by_step.setdefault((line["epoch"], line["step"]), {})[line["rank"]] = line["digest"]
    assert sorted(by_step) == [(0, 0), (1, 0), (2, 0)]  # one global step per epoch
    for step, digests in by_step.items():
        assert set(digests) == {0, 1} and digests[0] == digests[1], f"workers differ after step {step}"
    assert len({d[0] for d in by_step.values()}) == 3  # and the weights did change every step
    one, two = _weights(results[1]), _weights(results[2])
    assert len(one) == len(two) > 0
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _kill_rank_when(trace: Path, run_dir: Path, rank: int, killed: list):
    """SIGKILL worker ``rank`` (a real process death) once it is training past epoch 0 and Ray
    Train has registered a checkpoint (Ray Train collects a report at its next worker poll,
    every 2 s: a worker that dies sooner takes its last report with it)."""
    deadline = time.time() + 300
    target = trace / f"rank-{rank}.jsonl"
    while time.time() < deadline and not killed:
        if target.exists() and (run_dir / "checkpoint_manager_snapshot.json").exists():
            for line in target.read_text().splitlines():
                step = json.loads(line)
                if step["epoch"] >= 1:
                    os.kill(step["pid"], signal.SIGKILL)
                    killed.append(step)
                    return
        time.sleep(0.1)


def _train_with_kill(tmp_path, sample_features, *extra):
    from cough.commands.train import run

    trace, killed = tmp_path / "trace", []
    watcher = threading.Thread(target=_kill_rank_when, args=(trace, tmp_path / ".cough-train" / "model", 1, killed),
                               daemon=True)
    watcher.start()
    try:
        return run(_args(sample_features, "--out", tmp_path / "model", *TRAIN_FLAGS, "--trace-dir", trace,
                         *extra)), killed, trace
    finally:
        watcher.join(timeout=1)


def _steps(trace: Path):
    return [json.loads(x) for p in sorted(trace.glob("rank-*.jsonl")) for x in p.read_text().splitlines()]


def _check_resumed(meta, killed, trace):
    """Every epoch once in the history; the replacement workers began right after the last
    checkpoint, not at epoch 0."""
    assert [h["epoch"] for h in meta["history"]] == [0, 1, 2, 3]
    resumed = meta["training"]["resumed_from_epochs"]
    assert len(resumed) == 1 and 0 <= resumed[0] < killed[0]["epoch"]
    after = [s for s in _steps(trace) if s["pid"] != killed[0]["pid"] and s["time"] > killed[0]["time"]]
    assert after and min(s["epoch"] for s in after) == resumed[0] + 1


def test_two_workers_survive_a_killed_worker_and_write_a_model_true_to_its_metrics(tmp_path, sample_features,
                                                                                     fresh_ray):
    """On a 3-node cluster (1 CPU per node: the two workers land on two nodes), SIGKILL one
    Ray Train worker mid-training: Ray Train replaces it, training resumes from the last
    checkpoint and finishes with a MODEL."""
    from .cluster import three_nodes

    with three_nodes():  # three nodes on this machine: its folders are every node's
        summary, killed, trace = _train_with_kill(tmp_path, sample_features, "--max-failures", 2, "--shared-path",
                                                  tmp_path, "--shared-path", sample_features)
    assert killed, "the worker was never killed"
    assert len({s["node"] for s in _steps(trace) if s["time"] <= killed[0]["time"]}) == 2  # two nodes
    meta = _check_model(tmp_path / "model", sample_features, workers=2)
    _check_resumed(meta, killed, trace)
    assert summary["epochs_run"] == 4 and summary["version"] == meta["version"]


def test_interrupted_run_continues_with_resume(tmp_path, ray_local, sample_features):
    from cough.commands.train import run

    with pytest.raises(CoughError, match="--resume"):
        _train_with_kill(tmp_path, sample_features, "--max-failures", 0)
    assert not (tmp_path / "model").exists()  # nothing that looks finished
    killed = [s for s in _steps(tmp_path / "trace") if s["rank"] == 1][-1:]
    run(_args(sample_features, "--out", tmp_path / "model", *TRAIN_FLAGS, "--resume", "--trace-dir", tmp_path / "trace"))
    _, meta = load_model(str(tmp_path / "model"))
    _check_resumed(meta, killed, tmp_path / "trace")


def _h5_arrays(path) -> list:
    """``[(name, array)]`` of every dataset in an HDF5 weights file, in its order."""
    import h5py

    with h5py.File(path) as f:
        names: list[str] = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        return [(name, f[name][()]) for name in names]


@pytest.mark.slow
def test_one_seed_gives_one_model_wherever_the_out_lies(tmp_path, sample_features, s3, fresh_ray, capsys):
    """The same featurize OUT copied to another bucket gave another model with the same --seed
    (test AUC 0.92, 0.42, 0.75): the training order must follow the recordings, not the folder
    or bucket they were copied to."""
    from cough.cli import main as cli

    near = tmp_path / "a" / "features"
    shutil.copytree(sample_features, near)
    bucket = s3.bucket()
    s3.upload(sample_features, f"{bucket}/somewhere/else/features")
    moved = tmp_path / "moved" / "archive"  # the same recordings featurized from another folder
    shutil.copytree(SAMPLE, moved)
    assert cli(["featurize", str(moved / "raw"), "--labels", str(moved / "labels.csv"), "--out",
                str(tmp_path / "refeaturized"), "--num-cpus", "2", "--address", "local"]) == 0
    weights = []
    for shards, out in ((str(near), str(tmp_path / "model-a")), (f"{bucket}/somewhere/else/features",
                                                                  f"{bucket}/model-b"),
                        (str(tmp_path / "refeaturized"), str(tmp_path / "model-c"))):
        assert cli(["train", shards, "--out", out, "--epochs", "1", "--seed", "5", "--num-cpus", "2",
                    "--address", "local", "--json"]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        local = tmp_path / f"w{len(weights)}.h5"
        from cough.tables.storage import Location

        local.write_bytes(Location.of(out).join(json.loads(Location.of(out).join("model.json").read_bytes())
                                                ["weights"]).read_bytes())
        weights.append((summary["val_auc"], _h5_arrays(local)))
    (auc_a, a), *others = weights
    for auc_b, b in others:
        assert auc_a == auc_b and [n for n, _ in a] == [n for n, _ in b]
        assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))
