"""Benchmark: featurizing the same files four ways, side by side in one run.

(a) the seed's way, one file after another: ffmpeg mp3 → wav, librosa.load at 22050 Hz,
    melspectrogram, a matplotlib figure saved as PNG (``--seed-every K``: every K-th file);
(b) ``cough featurize`` as a user runs it (a fresh ``python -m cough featurize`` with a
    private local Ray instance), on one file and on all: the **marginal** rate
    ``(N - 1) / (T_N - T_1)`` takes the one-file run's start-up out, which is reported apart;
(p) a plain ``multiprocessing.Pool(num_cpus)`` running what one Ray task runs,
    :func:`cough.featurize.batch.featurize_batch` (``cough.audio.recording.process`` per file, then the
    batch's Parquet shards), on batches of 64 files: the same work without Ray;
(c) decoding only (libsndfile, one process): ``num_cpus`` times its rate is the floor of
    any featurizer on this machine.

Ways (b), (p), (c) run ``--repeat`` times, interleaved, so that a change in the machine's
load hits them alike; the ratios use the medians. The load average is printed with each.
Every way is also measured in CPU seconds (of all its processes: Ray's daemons and workers,
the pool's processes, ffmpeg): on a machine that other jobs share, wall time tells the
share the scheduler gave a way, CPU time the work it did; rates "by CPU" are files per CPU
second times the CPUs the way may use (one for (a) and (c)).

    .venv/bin/python bench/featurize.py ../shared/data/covid19-cough/raw [--limit N] [--num-cpus 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def seed_way(files: list[str], workdir: str) -> int:
    import imageio_ffmpeg
    import librosa
    import librosa.display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ffmpeg, done = imageio_ffmpeg.get_ffmpeg_exe(), 0
    for i, f in enumerate(files):
        wav = os.path.join(workdir, f"{i}.wav")
        if subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", f, wav]).returncode != 0:
            continue
        y, sr = librosa.load(wav, sr=22050)
        mel = librosa.feature.melspectrogram(y=y, sr=sr)
        fig, ax = plt.subplots(figsize=(1.5, 1.5), dpi=100)
        librosa.display.specshow(librosa.power_to_db(mel, ref=np.max), sr=sr, ax=ax)
        ax.axis("off")
        fig.savefig(os.path.join(workdir, f"{i}.png"))
        plt.close(fig)
        done += 1
    return done


def decode_only(files: list[str]) -> int:
    from cough.audio.decode import decode
    from cough.errors import RecordingError

    done = 0
    for f in files:
        try:
            decode(Path(f).read_bytes())
            done += 1
        except RecordingError:
            pass
    return done


class ProcessStat(NamedTuple):
    ppid: int
    session: int
    state: str
    cpu_s: float  # user + system
    started: str  # clock ticks after boot: with the pid, names a process even when pids are reused


def process_stats() -> dict[int, ProcessStat]:
    """Every live process's line of ``/proc/PID/stat``, by pid."""
    tick, stats = os.sysconf("SC_CLK_TCK"), {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the name: state ppid pgrp session ... utime(12th) stime(13th) ... starttime(20th)
        stats[int(name)] = ProcessStat(int(fields[1]), int(fields[3]), fields[0],
                                       (int(fields[11]) + int(fields[12])) / tick, fields[19])
    return stats


class TreeCPU(threading.Thread):
    """CPU seconds (user + system) used by process ``pid`` and all its descendants (Ray's
    daemons and workers included), read from /proc every 0.1 s until :meth:`done`. On a
    machine that other jobs share, wall time measures the share the scheduler gave a way;
    CPU seconds measure the work the way did."""

    def __init__(self, pid: int, *, descendants_only: bool = False):
        super().__init__(daemon=True)
        self.root, self.seen, self.stop, self.skip_root = pid, {}, threading.Event(), descendants_only
        self.start()

    def _sample(self) -> None:
        stats = process_stats()
        tree, grew = {self.root}, True
        while grew:
            more = {pid for pid, stat in stats.items() if stat.ppid in tree} - tree
            tree |= more
            grew = bool(more)
        for pid in tree & stats.keys() - ({self.root} if self.skip_root else set()):
            self.seen[(pid, stats[pid].started)] = stats[pid].cpu_s

    def run(self) -> None:
        while not self.stop.wait(0.1):
            self._sample()

    def done(self) -> float:
        self.stop.set()
        self.join()
        return sum(self.seen.values())


def run_cli(job: str, source: Path, out: Path, *args: str, num_cpus: int,
            root: Path = ROOT) -> tuple[float, float, dict]:
    """``(seconds, CPU seconds of the whole process tree, summary)`` of a fresh ``python -m
    cough JOB SOURCE --out OUT ARGS`` of the checkout at ``root`` with a private local Ray."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    shutil.rmtree(out, ignore_errors=True)
    private = ["--address", "local"] if "LOCAL" in (root / "cough" / "runtime.py").read_text() else []
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "cough", job, str(source), "--out", str(out), *args,
                             *private, "--num-cpus", str(num_cpus), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=root)
    cpu = TreeCPU(proc.pid)
    stdout, stderr = proc.communicate()
    seconds, cpu_seconds = time.perf_counter() - t, cpu.done()
    if proc.returncode != 0:
        sys.exit(f"cough {job} failed:\n{stderr[-2000:]}")
    return seconds, cpu_seconds, json.loads(stdout.strip().splitlines()[-1])


class Marginal:
    """``cough JOB`` run fresh on one file and on all ``n``; rates per file beyond the one-file
    run's start-up: by wall time ``(n - 1) / (T_n - T_1)``, and by CPU ``cpus · (n - 1) /
    (C_n - C_1)`` (the rate if every CPU did only this job's work)."""

    def __init__(self, job: str, one: Path, everything: Path, n: int, out: Path, *args: str, num_cpus: int,
                 root: Path = ROOT):
        self.t1, self.c1, _ = run_cli(job, one, out, *args, num_cpus=num_cpus, root=root)
        self.tn, self.cn, self.summary = run_cli(job, everything, out, *args, num_cpus=num_cpus, root=root)
        self.rate = (n - 1) / (self.tn - self.t1)
        self.cpu_rate = num_cpus * (n - 1) / (self.cn - self.c1)

    def __str__(self) -> str:
        return (f"{self.rate:8.1f} files/s, by CPU {self.cpu_rate:6.1f}  (all {self.tn:.1f} s / {self.cn:.1f} CPU s, "
                f"one file {self.t1:.1f} s / {self.c1:.1f} CPU s; load {_load()})")


def _pool_batch(args) -> int:
    import pyarrow as pa

    from cough.audio.detector import RECORDING_THRESHOLD
    from cough.audio.features import DEFAULT_PARAMS
    from cough.featurize.batch import featurize_batch
    from cough.tables.storage import Location

    paths, out = args
    batch = pa.table({"path": paths, "label": pa.nulls(len(paths), pa.int8()),
                      "participant": pa.nulls(len(paths), pa.string())})
    counts = featurize_batch(batch, images=Location.of(f"{out}/images"), recordings=Location.of(f"{out}/recordings"),
                             events=Location.of(f"{out}/events"), source="/",
                             params=DEFAULT_PARAMS, min_cough_probability=RECORDING_THRESHOLD, metadata_columns=[])
    return int(counts["images"][0].as_py())


def pool_featurize(files: list[str], out: Path, num_cpus: int, batch: int = 64) -> tuple[int, float]:
    """``(images, CPU seconds of the pool's processes)``."""
    import multiprocessing

    shutil.rmtree(out, ignore_errors=True)
    batches = [(files[i:i + batch], str(out)) for i in range(0, len(files), batch)]
    cpu = TreeCPU(os.getpid(), descendants_only=True)
    with multiprocessing.get_context("forkserver").Pool(num_cpus) as pool:
        images = sum(pool.imap_unordered(_pool_batch, batches))
        cpu_seconds = cpu.done()  # before the pool's processes exit
    return images, cpu_seconds


def link_copies(files: list[str], dst: Path, copies: int) -> Path:
    """``copies`` of ``files`` under ``dst`` with new names: hard links, or copies across
    filesystems (not symlinks: the listing does not follow links out of SOURCE)."""
    dst.mkdir()
    for k in range(copies):
        for f in files:
            name = dst / (f"{k}-{Path(f).name}" if copies > 1 else Path(f).name)
            try:
                os.link(f, name)
            except OSError:
                shutil.copyfile(f, name)
    return dst


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source")
    ap.add_argument("--limit", type=int, help="use only the first N files (every way gets the same ones)")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=2, help="runs of (b), (p), (c), interleaved (default 2)")
    ap.add_argument("--seed-every", type=int, default=1, help="(a) on every K-th file only (default 1: all)")
    ap.add_argument("--copies", type=int, default=1, help="(b) and (p) on K copies of the files under other "
                                                         "names (every copy decoded): more work beside the "
                                                         "start-up that the marginal rate subtracts")
    ap.add_argument("--baseline", type=Path, help="another checkout of cough (e.g. `git archive` of an older "
                                                  "commit) whose `cough featurize` runs as (b0), side by side")
    args = ap.parse_args()

    from cough.tables.listing import recording_paths

    files = recording_paths(args.source)[: args.limit]
    n = len(files)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{n} files from {args.source} ((b), (p): {args.copies}x); {args.num_cpus} CPUs; load average (1/5/15 min) {_load()}", flush=True)
    wall: dict[str, list[float]] = {"b0": [], "b": [], "p": [], "c": []}
    cpu: dict[str, list[float]] = {"b0": [], "b": [], "p": [], "c": []}
    startups = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        everything = link_copies(files, tmp / "all", args.copies)
        copies = sorted(str(f) for f in everything.iterdir())
        n_all = len(copies)
        one = link_copies(files[:1], tmp / "one", 1)

        seed_files = files[:: args.seed_every]
        t, c0 = time.perf_counter(), _own_cpu()
        ok_a = seed_way(seed_files, str(tmp))
        a, a_cpu = time.perf_counter() - t, _own_cpu() - c0
        wall["a"], cpu["a"] = [len(seed_files) / a], [len(seed_files) / a_cpu]
        print(f"(a) seed way, one process:       {wall['a'][0]:8.1f} files/s, by CPU {cpu['a'][0]:6.1f}  ({a:.1f} s / "
              f"{a_cpu:.1f} CPU s for {len(seed_files)} files, {ok_a} ok; load {_load()})", flush=True)

        for _ in range(args.repeat):
            if args.baseline:
                run = Marginal("featurize", one, everything, n_all, tmp / "out", num_cpus=args.num_cpus,
                               root=args.baseline)
                wall["b0"].append(run.rate)
                cpu["b0"].append(run.cpu_rate)
                print(f"(b0) baseline featurize, marginal: {run}", flush=True)
            run = Marginal("featurize", one, everything, n_all, tmp / "out", num_cpus=args.num_cpus)
            wall["b"].append(run.rate)
            cpu["b"].append(run.cpu_rate)
            startups.append(run.t1)
            print(f"(b) cough featurize, marginal:   {run}; {run.summary['ok']} ok, "
                  f"{run.summary['images']} images", flush=True)

            t = time.perf_counter()
            images, p_cpu = pool_featurize(copies, tmp / "pool", args.num_cpus)
            p = time.perf_counter() - t
            wall["p"].append(n_all / p)
            cpu["p"].append(args.num_cpus * n_all / p_cpu)
            print(f"(p) Pool({args.num_cpus}) of featurize_batch:   {wall['p'][-1]:8.1f} files/s, by CPU "
                  f"{cpu['p'][-1]:6.1f}  ({p:.1f} s / {p_cpu:.1f} CPU s, {images} images; load {_load()})", flush=True)

            t, c0 = time.perf_counter(), _own_cpu()
            ok_c = decode_only(files)
            c, c_cpu = time.perf_counter() - t, _own_cpu() - c0
            wall["c"].append(n / c)
            cpu["c"].append(n / c_cpu)
            print(f"(c) decode only, one process:    {wall['c'][-1]:8.1f} files/s, by CPU {cpu['c'][-1]:6.1f}  "
                  f"({c:.1f} s / {c_cpu:.1f} CPU s, {ok_c} ok; load {_load()})", flush=True)

    print(f"\nmedians of {args.repeat}; one-file run {statistics.median(startups):.1f} s")
    for name, rates in (("wall time", wall), ("CPU time", cpu)):
        b, p, c, a = (statistics.median(rates[k]) for k in "bpca")
        floor = args.num_cpus * c
        line = (f"by {name}: (b) {b:.1f}, (p) {p:.1f}, (a) {a:.1f}, decode floor on {args.num_cpus} CPUs {floor:.0f} "
                f"files/s | (b)/(a) = {b / a:.1f}x (target >= 20x), (b)/floor = {b / floor:.2f} (target >= 0.30), "
                f"(b)/(p) = {b / p:.2f}x (target >= 1.0x)")
        if rates["b0"]:
            line += f", (b)/(b0) = {b / statistics.median(rates['b0']):.2f}x"
        print(line)
    print(f"load average at the end: {_load()}")


def _own_cpu() -> float:
    """CPU seconds of this process and its finished children (the seed way's ffmpeg)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    main()
