"""Benchmark: the seed's per-file scoring versus `cough score`, side by side, same files and model.

(a) the seed's way, one file after another: ffmpeg mp3 → wav, librosa.load at 22050 Hz,
    melspectrogram, a matplotlib PNG (bench/featurize.py's `seed_way`), load the image back
    at 150×150, `model.predict` on that one image;
(b) `cough score` into a fresh PRED (Ray Data on a local instance already started; startup
    reported apart; the actors' model loading is included);
(c) the model alone on in-memory uint8 tensors, as many windows as (b) scored, in batches:
    the bound for any scorer of these windows on this machine.

All three use the seed architecture (75.8M parameters) with the same untrained weights:
the timing does not depend on what the weights learnt.

``--memory`` instead runs (b) on the files and on 10 copies of them (10×, hard links under
other names, so every copy is decoded) and reports the peak RSS of the driver and of the
Ray worker processes, sampled every 0.2 s.

    .venv/bin/python bench/score.py ../shared/data/covid19-cough/raw [--limit N] [--num-cpus 2]
    .venv/bin/python bench/score.py ../shared/data/covid19-cough/raw --memory [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_model(model_dir: Path, arch: str = "seed") -> Path:
    """A MODEL directory with untrained weights (what `cough train` writes, minus the training)."""
    from cough.features import DEFAULT_PARAMS
    from cough.model import CLASS_NAMES, build_model

    model_dir.mkdir(parents=True)
    build_model(arch).save_weights(model_dir / "weights.h5")
    (model_dir / "model.json").write_text(json.dumps({
        "arch": arch, "featurizer": DEFAULT_PARAMS.to_dict(), "featurizer_version": DEFAULT_PARAMS.version,
        "class_names": CLASS_NAMES, "threshold": 0.5, "version": f"bench-{arch}"}))
    return model_dir


def seed_scoring(files: list[str], model, workdir: str) -> int:
    """The seed's way, per file; returns how many files got a prediction."""
    import numpy as np
    import tensorflow as tf
    from featurize import seed_way

    done = 0
    for f in files:
        if not seed_way([f], workdir):
            continue
        image = tf.keras.utils.load_img(os.path.join(workdir, "0.png"), target_size=(150, 150))
        x = tf.keras.utils.img_to_array(image)[None] / 255.0
        model.predict(x, verbose=0)
        done += 1
    return done


def model_alone(model, n_windows: int, batch_size: int = 64) -> float:
    """Seconds to predict ``n_windows`` in-memory uint8 windows in batches (best of two)."""
    import numpy as np

    from cough.model import predict_windows

    images = np.random.default_rng(0).integers(0, 256, (min(n_windows, 512), 150, 150, 3), dtype=np.uint8)
    predict_windows(model, images[:batch_size], batch_size=batch_size)  # warm-up (graph building)
    best = float("inf")
    for _ in range(2):  # the best of two: a bound, on a machine that may be shared
        t = time.perf_counter()
        left = n_windows
        while left > 0:
            predict_windows(model, images[:left], batch_size=batch_size)
            left -= len(images)
        best = min(best, time.perf_counter() - t)
    return best


class PeakRSS(threading.Thread):
    """Peak resident memory of this process (the driver) and of the Ray processes it started."""

    def __init__(self, every_s: float = 0.2):
        super().__init__(daemon=True)
        import psutil  # Ray ships it

        self.psutil, self.every_s, self.stop = psutil, every_s, threading.Event()
        self.driver = self.worker = self.workers_total = 0

    def run(self):
        me = self.psutil.Process()
        while not self.stop.is_set():
            total = 0
            self.driver = max(self.driver, me.memory_info().rss)
            for p in me.children(recursive=True):
                try:
                    if "ray::" in " ".join(p.cmdline()) or "default_worker" in " ".join(p.cmdline()):
                        rss = p.memory_info().rss
                        self.worker, total = max(self.worker, rss), total + rss
                except self.psutil.Error:
                    pass
            self.workers_total = max(self.workers_total, total)
            self.stop.wait(self.every_s)


def run_score(source: str, model: Path, pred: Path) -> tuple[dict, float]:
    from jobs.score import score

    t = time.perf_counter()
    summary = score(source, str(model), str(pred))
    return summary, time.perf_counter() - t


def compare(files: list[str], tmp: Path, num_cpus: int) -> None:
    import pyarrow.parquet as pq
    import ray
    from featurize import link_copies

    from cough.model import load_model, tensorflow
    from cough.runtime import init_ray

    model_dir = make_model(tmp / "model")
    subset = link_copies(files, tmp / "subset", 1)
    tensorflow(num_cpus)
    model, _ = load_model(str(model_dir))

    t = time.perf_counter()
    ok_a = seed_scoring(files, model, str(tmp))
    a = time.perf_counter() - t

    t = time.perf_counter()
    init_ray(num_cpus=num_cpus)
    startup = time.perf_counter() - t
    summary, b = run_score(str(subset), model_dir, tmp / "pred")
    ray.shutdown()
    n_windows = int(pq.read_table(tmp / "pred", columns=["n_windows"])["n_windows"].to_numpy().sum())

    c = model_alone(model, n_windows)
    n = len(files)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{n} files from {Path(files[0]).parent}; seed architecture, untrained weights")
    print(f"(a) seed way, per file:    {n / a:8.1f} clips/s  ({a:.1f} s, {ok_a} predicted, one image each)")
    print(f"(b) cough score:           {n / b:8.1f} clips/s  ({b:.1f} s, {summary['ok']} ok, "
          f"{summary['errors']} errors, {n_windows} windows; Ray startup {startup:.1f} s not included)")
    print(f"(c) model alone, bound:    {n / c:8.1f} clips/s  ({c:.1f} s for the same {n_windows} windows)")
    print(f"(b)/(a) = {a / b:.1f}x   (b)/(c) = {c / b:.2f}x")


def memory(files: list[str], tmp: Path, num_cpus: int) -> None:
    import ray
    from featurize import link_copies

    from cough.runtime import init_ray

    import multiprocessing

    model_dir = tmp / "model"  # made in a child process: this driver never loads TensorFlow
    maker = multiprocessing.get_context("spawn").Process(target=make_model, args=(model_dir,))
    maker.start()
    maker.join()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"seed architecture; peak RSS sampled every 0.2 s")
    for copies in (1, 10):
        source = link_copies(files, tmp / f"x{copies}", copies)
        init_ray(num_cpus=num_cpus)
        sampler = PeakRSS()
        sampler.start()
        summary, seconds = run_score(str(source), model_dir, tmp / f"pred{copies}")
        sampler.stop.set()
        sampler.join()
        ray.shutdown()
        mb = 1 << 20
        print(f"{copies:>2}x: {summary['inputs']:6d} files in {seconds:6.1f} s; peak RSS driver "
              f"{sampler.driver / mb:6.0f} MB, largest worker {sampler.worker / mb:6.0f} MB, "
              f"all workers together {sampler.workers_total / mb:6.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source")
    ap.add_argument("--limit", type=int, help="use only the first N files (every way gets the same ones)")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--memory", action="store_true", help="peak RSS of `cough score` on 1x and 10x the files")
    args = ap.parse_args()

    from cough.listing import recording_paths

    files = recording_paths(args.source)[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        (memory if args.memory else compare)(files, Path(tmp), args.num_cpus)


if __name__ == "__main__":
    main()
