"""Benchmark: featurizing the same files four ways, side by side in one run.

(a) the seed's way, one file after another: ffmpeg mp3 → wav, librosa.load at 22050 Hz,
    melspectrogram, a matplotlib figure saved as PNG (``--seed-every K``: every K-th file);
(b) ``cough featurize`` as a user runs it (a fresh ``python -m cough featurize`` with a
    private local Ray instance), on one file and on all: the **marginal** rate
    ``(N - 1) / (T_N - T_1)`` takes the one-file run's start-up out, which is reported apart;
(p) a plain ``multiprocessing.Pool(num_cpus)`` running what one Ray task runs,
    :func:`cough.shards.featurize_batch` (``cough.recording.process`` per file, then the
    batch's Parquet shards), on batches of 64 files: the same work without Ray;
(c) decoding only (libsndfile, one process): ``num_cpus`` times its rate is the floor of
    any featurizer on this machine.

Ways (b), (p), (c) run ``--repeat`` times, interleaved, so that a change in the machine's
load hits them alike; the ratios use the medians. The load average is printed with each.

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
import time
from pathlib import Path

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
    from cough.audio import decode
    from cough.errors import RecordingError

    done = 0
    for f in files:
        try:
            decode(Path(f).read_bytes())
            done += 1
        except RecordingError:
            pass
    return done


def run_cli(job: str, source: Path, out: Path, *args: str, num_cpus: int, root: Path = ROOT) -> tuple[float, dict]:
    """Seconds of a fresh ``python -m cough JOB SOURCE --out OUT ARGS`` of the checkout at
    ``root`` with a private local Ray instance, and its summary."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    shutil.rmtree(out, ignore_errors=True)
    private = ["--address", "local"] if "LOCAL" in (root / "cough" / "runtime.py").read_text() else []
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cough", job, str(source), "--out", str(out), *args,
                           *private, "--num-cpus", str(num_cpus), "--json"],
                          capture_output=True, text=True, env=env, cwd=root)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        sys.exit(f"cough {job} failed:\n{done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def marginal(job: str, one: Path, everything: Path, n: int, out: Path, *args: str, num_cpus: int,
             root: Path = ROOT) -> tuple[float, float, float, dict]:
    """``(files/s beyond start-up, one-file seconds, all-files seconds, summary)`` of ``cough JOB``
    run fresh on one file and on all ``n``: ``(n - 1) / (T_n - T_1)``."""
    t1, _ = run_cli(job, one, out, *args, num_cpus=num_cpus, root=root)
    tn, summary = run_cli(job, everything, out, *args, num_cpus=num_cpus, root=root)
    return (n - 1) / (tn - t1), t1, tn, summary


def _pool_batch(args) -> int:
    import pyarrow as pa

    from cough.features import DEFAULT_PARAMS
    from cough.shards import featurize_batch

    paths, out = args
    batch = pa.table({"path": paths, "label": pa.nulls(len(paths), pa.int8()),
                      "group": pa.nulls(len(paths), pa.string())})
    counts = featurize_batch(batch, out=out, params=DEFAULT_PARAMS, metadata_columns=[])
    return int(counts["images"][0].as_py())


def pool_featurize(files: list[str], out: Path, num_cpus: int, batch: int = 64) -> int:
    import multiprocessing

    shutil.rmtree(out, ignore_errors=True)
    batches = [(files[i:i + batch], str(out)) for i in range(0, len(files), batch)]
    with multiprocessing.get_context("forkserver").Pool(num_cpus) as pool:
        return sum(pool.imap_unordered(_pool_batch, batches))


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
    ap.add_argument("--baseline", type=Path, help="another checkout of cough (e.g. `git archive` of an older "
                                                  "commit) whose `cough featurize` runs as (b0), side by side")
    args = ap.parse_args()

    from cough.listing import recording_paths

    files = recording_paths(args.source)[: args.limit]
    n = len(files)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{n} files from {args.source}; {args.num_cpus} CPUs; load average (1/5/15 min) {_load()}", flush=True)
    rates: dict[str, list[float]] = {"b0": [], "b": [], "p": [], "c": []}
    startups = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        everything = link_copies(files, tmp / "all", 1)
        one = link_copies(files[:1], tmp / "one", 1)

        seed_files = files[:: args.seed_every]
        t = time.perf_counter()
        ok_a = seed_way(seed_files, str(tmp))
        a = time.perf_counter() - t
        rate_a = len(seed_files) / a
        print(f"(a) seed way, one process:       {rate_a:8.1f} files/s  ({a:.1f} s for {len(seed_files)} files, "
              f"{ok_a} ok; load {_load()})", flush=True)

        for _ in range(args.repeat):
            if args.baseline:
                rate, t1, tn, summary = marginal("featurize", one, everything, n, tmp / "out", num_cpus=args.num_cpus,
                                                 root=args.baseline)
                rates["b0"].append(rate)
                print(f"(b0) baseline featurize, marginal: {rate:6.1f} files/s  (all {tn:.1f} s, one file "
                      f"{t1:.1f} s; {summary['ok']} ok, {summary['images']} images; load {_load()})", flush=True)
            rate, t1, tn, summary = marginal("featurize", one, everything, n, tmp / "out", num_cpus=args.num_cpus)
            rates["b"].append(rate)
            startups.append(t1)
            print(f"(b) cough featurize, marginal:   {rate:8.1f} files/s  (all {tn:.1f} s, one file "
                  f"{t1:.1f} s; {summary['ok']} ok, {summary['images']} images; load {_load()})", flush=True)

            t = time.perf_counter()
            images = pool_featurize(files, tmp / "pool", args.num_cpus)
            p = time.perf_counter() - t
            rates["p"].append(n / p)
            print(f"(p) Pool({args.num_cpus}) of featurize_batch:   {rates['p'][-1]:8.1f} files/s  ({p:.1f} s, "
                  f"{images} images; load {_load()})", flush=True)

            t = time.perf_counter()
            ok_c = decode_only(files)
            c = time.perf_counter() - t
            rates["c"].append(n / c)
            print(f"(c) decode only, one process:    {rates['c'][-1]:8.1f} files/s  ({c:.1f} s, {ok_c} ok; "
                  f"load {_load()})", flush=True)

    b, p, c = (statistics.median(rates[k]) for k in "bpc")
    floor = args.num_cpus * c
    print(f"\nmedians of {args.repeat}: (b) {b:.1f}, (p) {p:.1f}, (c) {c:.1f} files/s "
          f"(floor on {args.num_cpus} CPUs: {floor:.0f}); one-file run {statistics.median(startups):.1f} s")
    print(f"(b)/(a) = {b / rate_a:.1f}x   (target >= 20x)")
    print(f"(b)/floor = {b / floor:.2f}   (target >= 0.30)")
    print(f"(b)/(p) = {b / p:.2f}x   (target >= 1.0x)")
    if args.baseline:
        b0 = statistics.median(rates["b0"])
        print(f"(b)/(b0) = {b / b0:.2f}x   (b0: {args.baseline}, median {b0:.1f} files/s)")
    print(f"load average at the end: {_load()}")


if __name__ == "__main__":
    main()
