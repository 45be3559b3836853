"""Benchmark: the seed's per-file scoring versus `cough score`, side by side, same files and model.

(a) the seed's way, one file after another: ffmpeg mp3 → wav, librosa.load at 22050 Hz,
    melspectrogram, a matplotlib PNG (bench/featurize.py's `seed_way`), load the image back
    at 150×150, `model.predict` on that one image (seed network only; ``--seed-every K``);
(b) `cough score` as a user runs it (a fresh ``python -m cough score`` with a private local
    Ray instance) on one file and on all: the marginal rate ``(N - 1) / (T_N - T_1)``
    takes start-up out (Ray, the actors' TensorFlow import and model loading);
(c) the model alone on in-memory uint8 tensors, as many windows as (b) scored, in batches
    of 64 with ``--num-cpus`` threads: the bound for any scorer of these windows;
(f) with ``--arch pooled``: `cough featurize`, marginal, on the same files (score featurizes
    the same way and then predicts, so (b)/(f) is what prediction costs on top).

The networks have untrained weights: the timing does not depend on what they learnt.
``--repeat`` interleaves (b), (c), (f); the ratios use the medians. As in
bench/featurize.py, every way is measured in wall time and in CPU seconds of all its
processes (rates "by CPU": clips per CPU second times the CPUs the way may use; one for (a)).

``--memory`` instead runs (b) on the files and on 10 copies of them (10×, hard links under
other names, so every copy is decoded) and reports the peak RSS of the driver and of the
Ray worker processes, sampled every 0.2 s.

``--s3`` instead runs (b) on local paths and on s3:// (SOURCE, MODEL and PRED in a bucket of
moto's S3 server, its own process on a loopback port; needs the test dependencies), in turns,
twice each, with the pooled architecture (whose cheap inference leaves storage a larger share);
target: s3:// at least 0.8x the local throughput.

    .venv/bin/python bench/score.py ../shared/data/covid19-cough/raw [--limit N] [--num-cpus 2]
    .venv/bin/python bench/score.py ../shared/data/covid19-cough/raw --arch pooled [--copies 4]
    .venv/bin/python bench/score.py ../shared/data/covid19-cough/raw --memory [--limit N]
    .venv/bin/python bench/score.py ../shared/data/covid19-cough/raw --s3 [--limit N]
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
    from cough.audio.features import DEFAULT_PARAMS
    from cough.model.networks import CLASS_NAMES, build_model

    model_dir.mkdir(parents=True)
    build_model(arch).save_weights(model_dir / "weights.h5")
    (model_dir / "model.json").write_text(json.dumps({
        "arch": arch, "featurizer": DEFAULT_PARAMS.to_dict(), "featurizer_version": DEFAULT_PARAMS.version,
        "class_names": CLASS_NAMES, "threshold": 0.5, "version": f"bench-{arch}"}))
    return model_dir


def seed_scoring(files: list[str], model, workdir: str) -> int:
    """The seed's way, per file; returns how many files got a prediction."""
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


def model_alone(model, n_windows: int, batch_size: int = 64) -> tuple[float, float]:
    """``(seconds, CPU seconds)`` to predict ``n_windows`` in-memory uint8 windows in batches
    (the faster of two runs)."""
    import numpy as np

    from cough.model.inference import predict_windows

    images = np.random.default_rng(0).integers(0, 256, (min(n_windows, 512), 150, 150, 3), dtype=np.uint8)
    predict_windows(model, images[:batch_size], batch_size=batch_size)  # warm-up (graph building)
    best = (float("inf"), float("inf"))
    for _ in range(2):  # the best of two: a bound, on a machine that may be shared
        t, c = time.perf_counter(), time.process_time()
        left = n_windows
        while left > 0:
            predict_windows(model, images[:left], batch_size=batch_size)
            left -= len(images)
        best = min(best, (time.perf_counter() - t, time.process_time() - c))
    return best


class PeakRSS(threading.Thread):
    """Peak resident memory of this process (the driver) and of the Ray processes it started,
    read from /proc (psutil is not always installed)."""

    def __init__(self, every_s: float = 0.2):
        super().__init__(daemon=True)
        self.every_s, self.stop = every_s, threading.Event()
        self.driver = self.worker = self.workers_total = 0

    @staticmethod
    def _rss(pid: int) -> int:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def run(self):
        me = os.getpid()
        while not self.stop.is_set():
            parents, cmds = {}, {}
            for name in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{name}/stat") as f:
                        parents[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
                    with open(f"/proc/{name}/cmdline", "rb") as f:
                        cmds[int(name)] = f.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    pass
            tree, grew = {me}, True
            while grew:
                more = {p for p, parent in parents.items() if parent in tree} - tree
                tree, grew = tree | more, bool(more)
            total = 0
            try:
                self.driver = max(self.driver, self._rss(me))
            except OSError:
                pass
            for pid in tree - {me}:
                if "ray::" in cmds.get(pid, "") or "default_worker" in cmds.get(pid, ""):
                    try:
                        rss = self._rss(pid)
                    except OSError:
                        continue
                    self.worker, total = max(self.worker, rss), total + rss
            self.workers_total = max(self.workers_total, total)
            self.stop.wait(self.every_s)


def run_score(source: str, model: Path, pred: Path) -> tuple[dict, float]:
    from cough.score import score

    t = time.perf_counter()
    summary = score(source, str(model), str(pred)).to_dict()
    return summary, time.perf_counter() - t


def compare(files: list[str], tmp: Path, args) -> None:
    import statistics

    import pyarrow.parquet as pq
    from featurize import Marginal, _load, _own_cpu, link_copies

    from cough.model.networks import tensorflow
    from cough.model.store import load_model

    n = len(files) * args.copies
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{n} files ({args.copies}x {len(files)}) from {Path(files[0]).parent}; {args.arch} architecture, untrained weights; "
          f"{args.num_cpus} CPUs; load average (1/5/15 min) {_load()}", flush=True)
    model_dir = make_model(tmp / "model", args.arch)
    everything = link_copies(files, tmp / "all", args.copies)
    one = link_copies(files[:1], tmp / "one", 1)
    tensorflow(args.num_cpus)
    model, _ = load_model(str(model_dir))

    rate_a = cpu_rate_a = None
    if args.arch == "seed":
        seed_files = files[:: args.seed_every]
        t, c0 = time.perf_counter(), _own_cpu()
        ok_a = seed_scoring(seed_files, model, str(tmp))
        a, a_cpu = time.perf_counter() - t, _own_cpu() - c0
        rate_a, cpu_rate_a = len(seed_files) / a, len(seed_files) / a_cpu
        print(f"(a) seed way, per file:          {rate_a:8.1f} clips/s, by CPU {cpu_rate_a:6.1f}  ({a:.1f} s / "
              f"{a_cpu:.1f} CPU s for {len(seed_files)} files, {ok_a} predicted, one image each; load {_load()})",
              flush=True)

    wall: dict[str, list[float]] = {"b0": [], "b": [], "c": [], "f": []}
    cpu: dict[str, list[float]] = {"b0": [], "b": [], "c": [], "f": []}
    model_args = ("--model", str(model_dir))
    for _ in range(args.repeat):
        if args.baseline:
            run = Marginal("score", one, everything, n, tmp / "pred", *model_args, num_cpus=args.num_cpus,
                           root=args.baseline)
            wall["b0"].append(run.rate)
            cpu["b0"].append(run.cpu_rate)
            print(f"(b0) baseline score, marginal:   {run}", flush=True)
        run = Marginal("score", one, everything, n, tmp / "pred", *model_args, num_cpus=args.num_cpus)
        wall["b"].append(run.rate)
        cpu["b"].append(run.cpu_rate)
        n_windows = int(pq.read_table(tmp / "pred", columns=["n_windows"])["n_windows"].to_numpy().sum())
        print(f"(b) cough score, marginal:       {run}; {run.summary['ok']} ok, {run.summary['errors']} errors, "
              f"{n_windows} windows", flush=True)
        c, c_cpu = model_alone(model, n_windows)
        wall["c"].append(n / c)
        cpu["c"].append(args.num_cpus * n / c_cpu)
        print(f"(c) model alone, {args.num_cpus} threads:      {wall['c'][-1]:8.1f} clips/s, by CPU {cpu['c'][-1]:6.1f}  "
              f"({c:.1f} s / {c_cpu:.1f} CPU s for the same {n_windows} windows; load {_load()})", flush=True)
        if args.arch != "seed":
            run = Marginal("featurize", one, everything, n, tmp / "features", num_cpus=args.num_cpus)
            wall["f"].append(run.rate)
            cpu["f"].append(run.cpu_rate)
            print(f"(f) cough featurize, marginal:   {run}", flush=True)

    print(f"\nmedians of {args.repeat}")
    for name, rates in (("wall time", wall), ("CPU time", cpu)):
        med = {k: statistics.median(v) for k, v in rates.items() if v}
        line = f"by {name}: " + ", ".join(f"({k}) {v:.1f}" for k, v in med.items())
        if rate_a:
            a = rate_a if name == "wall time" else cpu_rate_a
            line += f" | (b)/(a) = {med['b'] / a:.1f}x (target for the seed network >= 12x)"
        line += f" | (b)/(c) = {med['b'] / med['c']:.2f} (target for the seed network >= 0.70)"
        if "f" in med:
            line += f" | (b)/(f) = {med['b'] / med['f']:.2f} (target for pooled >= 0.80)"
        if "b0" in med:
            line += f" | (b)/(b0) = {med['b'] / med['b0']:.2f}x"
        print(line)
    print(f"load average at the end: {_load()}")


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
        init_ray("local", num_cpus=num_cpus)
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


def s3_server(log: Path | None = None) -> tuple:
    """(server process, endpoint): moto's S3 server on a free loopback port, the AWS_* variables
    pointing at it (set before Ray starts, so that its workers inherit them); ``log``: a file
    for the server's request log (one line per request)."""
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                      AWS_METADATA_ENDPOINT=f"http://127.0.0.1:{port}/no-metadata")
    sink = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (the server writes it while it runs)
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=sink, stderr=sink)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, endpoint
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("moto's S3 server did not start")


def storage(files: list[str], tmp: Path, num_cpus: int) -> None:
    import boto3
    import pyarrow.fs as pafs
    import ray

    from cough.runtime import init_ray
    from featurize import link_copies

    server, endpoint = s3_server()
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        subset = link_copies(files, tmp / "subset", 1)
        model_dir = make_model(tmp / "model", arch="pooled")
        s3fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http")
        for src, dst in ((subset, "bench/raw"), (model_dir, "bench/model")):
            pafs.copy_files(str(src), dst, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3fs)
        init_ray(num_cpus=num_cpus)
        where = {"local": (str(subset), str(model_dir), lambda k: str(tmp / f"pred-{k}")),
                 "s3": ("s3://bench/raw", "s3://bench/model", lambda k: f"s3://bench/pred-{k}")}
        best = {}
        for k in range(2):  # in turns: the machine's load changes under both alike
            for name, (source, model, pred) in where.items():
                summary, seconds = run_score(source, model, pred(k))
                assert summary["scored"] == len(files), summary
                best[name] = min(best.get(name, seconds), seconds)
                print(f"  run {k + 1} {name:5s}: {len(files) / seconds:6.1f} clips/s ({seconds:.1f} s)", flush=True)
        ray.shutdown()
    finally:
        server.terminate()
        server.wait()
    n = len(files)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; {n} files "
          f"from {Path(files[0]).parent}; pooled architecture, untrained weights; best of two runs each")
    print(f"local paths:  {n / best['local']:6.1f} clips/s ({best['local']:.1f} s)")
    print(f"s3:// (moto): {n / best['s3']:6.1f} clips/s ({best['s3']:.1f} s)   s3/local = {best['local'] / best['s3']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source")
    ap.add_argument("--limit", type=int, help="use only the first N files (every way gets the same ones)")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--memory", action="store_true", help="peak RSS of `cough score` on 1x and 10x the files")
    ap.add_argument("--arch", choices=["seed", "pooled"], default="seed",
                    help="network (default seed); pooled also runs `cough featurize` as (f)")
    ap.add_argument("--copies", type=int, default=1,
                    help="(b), (c), (f) on K renamed copies of the files, every copy decoded and scored "
                         "(a steadier marginal rate than at 1x, where start-up is most of a run)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of (b), (c), (f), interleaved (default 1)")
    ap.add_argument("--seed-every", type=int, default=1, help="(a) on every K-th file only (default 1: all)")
    ap.add_argument("--baseline", type=Path, help="another checkout of cough whose `cough score` runs as (b0)")
    ap.add_argument("--s3", action="store_true", help="`cough score` on local paths versus s3:// (loopback moto)")
    args = ap.parse_args()

    from cough.tables.listing import recording_paths

    files = recording_paths(args.source)[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        if args.memory:
            memory(files, Path(tmp), args.num_cpus)
        elif args.s3:
            storage(files, Path(tmp), args.num_cpus)
        else:
            compare(files, Path(tmp), args)


if __name__ == "__main__":
    main()
