"""Benchmark: a night costs what arrived (issue 11), three measurements.

``scale``: an archive of N distinct short WAVs (default 100,000, in 100 dated folders) scored
    once by `python -m jobs.nightly` exactly as the README's cron line runs it (score, then
    the night's report; here on a private local Ray instance), then 1% new files in a new
    folder and scored again: files opened (the run's ``bytes_read`` against the new files'
    bytes) and wall time of the second run over the first (target <= 10%).
``rss``: the driver's peak RSS (its own VmHWM) while listing and planning, for 100,000 and
    1,000,000 empty placeholder files (target: within 1.5x): score's (the real
    `cough.score.night.list_night`: listing in Ray tasks, the anti-join against a ledger that
    holds 99% of the files), score's first night (an empty PRED: every file cut into batches)
    and featurize's (the real `cough.featurize.job.list_work`: the same listing, cut into
    batches).
``dedupe``: the peak RSS of any Ray worker while the content-dedupe set of 100,000 and of
    1,000,000 scored recordings is built from PRED and looked up by 64 featurizing-size
    batches of 32 files (the real `cough.tables.scored.scored_buckets`; target: within 1.5x),
    beside the set built whole by one task (cough before issue 26) for comparison.
``kill``: a 20,000-file run with ``--commit-every 1000``, killed with SIGKILL (driver and
    its local Ray) once half the files are in the ledger, then rerun: the rerun's wall
    time over the mean of an uninterrupted run before and one after (target <= 60%).
``s3``: ``scale`` on moto's S3 server (its own process; every request it logs is counted),
    smaller (default 2,000 files): GET requests for recordings in the second run.

    .venv/bin/python bench/nightly.py scale --work /tmp/nightly [--files 100000]
    .venv/bin/python bench/nightly.py rss --work /tmp/nightly
    .venv/bin/python bench/nightly.py kill --work /tmp/nightly [--files 20000]
    .venv/bin/python bench/nightly.py dedupe --work /tmp/nightly
    .venv/bin/python bench/nightly.py s3 --work /tmp/nightly [--files 2000]

Every figure is printed with the machine's load average; paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RATE = 8000


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def write_wavs(folder: Path, n: int, seed: int) -> int:
    """``n`` distinct 0.5 s recordings (a noise burst on a quiet floor) in ``folder``; returns bytes."""
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    total = 0
    for i in range(n):
        x = rng.normal(0, 0.003, RATE // 2)
        start = rng.integers(0, RATE // 4)
        x[start:start + RATE // 8] += rng.normal(0, 0.3, RATE // 8) * np.hanning(RATE // 8)
        path = folder / f"rec-{seed}-{i:06d}.wav"
        sf.write(path, x.astype(np.float32), RATE, subtype="PCM_16")
        total += path.stat().st_size
    return total


def archive(root: Path, n: int, folders: int = 100) -> Path:
    """N files in ``folders`` dated folders (2026-01-01, ...), made once and reused."""
    import datetime as dt

    done = root / ".complete"
    if done.exists() and int(done.read_text()) == n:
        return root
    day = dt.date(2026, 1, 1)
    per = -(-n // folders)
    for k in range(folders):
        write_wavs(root / str(day + dt.timedelta(days=k)), min(per, n - k * per), seed=k)
    done.write_text(str(n))
    return root


def nightly(source: str, model: str, pred: str, *extra: str) -> list[str]:
    """The README's nightly cron command (on this machine, a private local Ray instance)."""
    return [sys.executable, "-m", "jobs.nightly", source, "--model", model, "--pred", pred, "--json",
            "--address", "local", *extra]


def session_cpu(sid: int, seen: dict[int, float]) -> list[int]:
    """Record in ``seen`` the CPU seconds (user + system) of each live process of session
    ``sid`` (a night started with ``start_new_session``: its driver, and the local Ray it
    started, workers included, keep that session); returns their pids."""
    from featurize import process_stats

    live = {pid: stat for pid, stat in process_stats().items() if stat.session == sid and stat.state != "Z"}
    seen.update((pid, stat.cpu_s) for pid, stat in live.items())
    return list(live)


def start(cmd: list[str], output=subprocess.PIPE) -> subprocess.Popen:
    """``cmd`` in a session of its own (what :func:`session_cpu` counts)."""
    return subprocess.Popen(cmd, cwd=ROOT, stdout=output, stderr=output, text=True, start_new_session=True)


def score(source: str, model: str, pred: str, *extra: str) -> tuple[dict, float, float]:
    """One night as cron runs it (:func:`nightly`): ``(summary, wall seconds, CPU seconds of
    the driver and its Ray, sampled twice a second)``."""
    t = time.perf_counter()
    proc, cpu, outputs = start(nightly(source, model, pred, *extra)), {}, []
    reader = threading.Thread(target=lambda: outputs.extend(proc.communicate()), daemon=True)
    reader.start()
    while reader.is_alive():
        session_cpu(proc.pid, cpu)
        reader.join(0.5)
    wall = time.perf_counter() - t
    out, err = outputs
    if proc.returncode != 0:
        raise SystemExit(f"score failed ({proc.returncode}): {err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), wall, sum(cpu.values())


def model(work: Path) -> Path:
    from score import make_model

    path = work / "model"
    if not (path / "model.json").exists():
        make_model(path, arch="pooled")
    return path


def fresh(path: Path) -> Path:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    return path


def scale(args) -> None:
    work = Path(args.work)
    src = archive(work / f"archive-{args.files}", args.files)
    pred = fresh(work / f"pred-scale-{args.files}")
    first, t1, _ = score(str(src), str(model(work)), str(pred))
    print(f"first run: {first['listed']} listed, {first['scored']} scored, {first['bytes_read'] / 1e6:.0f} MB read, "
          f"{t1:.0f} s ({load()})", flush=True)
    new = args.files // 100
    tonight = src / "2026-12-31"
    fresh(tonight)
    new_bytes = write_wavs(tonight, new, seed=999)
    try:
        second, t2, _ = score(str(src), str(model(work)), str(pred))
    finally:
        fresh(tonight)
    print(f"second run (1% new): {second['listed']} listed, {second['new']} new, {second['seen_before']} seen before, "
          f"{second['scored']} scored, {second['bytes_read']} bytes read of {new_bytes} new bytes, {t2:.1f} s "
          f"= {t2 / t1:.1%} of the first (target <= 10%) ({load()})", flush=True)


def scored_pred(path: Path, n: int) -> Path:
    """A PRED of ``n`` scored rows of model version "bench" (random content hashes), once."""
    import numpy as np
    import pyarrow as pa
    from deltalake import write_deltalake

    if (path / "_delta_log").exists():
        return path
    rng = np.random.default_rng(n)
    for start in range(0, n, 500_000):
        k = min(500_000, n - start)
        raw = rng.bytes(16 * k)
        ids = [raw[i * 16:(i + 1) * 16].hex() for i in range(k)]
        write_deltalake(str(path), pa.table({"recording_id": ids, "path": [f"/archive/r{start + i}.wav" for i in range(k)],
                                             "model_version": ["bench"] * k}), mode="append")
    return path


def dedupe_run(args) -> None:
    """In its own process: build the scored set of ``--files`` recordings and look it up as
    featurizing tasks do; print the peak RSS of any Ray worker and of the driver."""
    import numpy as np
    import ray
    from score import PeakRSS

    from cough.runtime import cpus, init_ray
    from cough.tables.pred import Pred
    from cough.tables.scored import scored_buckets, scored_keys
    from cough.tables.storage import Location

    pred = Pred(Location.of(str(scored_pred(Path(args.work) / f"pred-scored-{args.files}", args.files))))
    known = pred.table().to_pyarrow_table(columns=["recording_id"]).column("recording_id").to_pylist()[:2048]
    init_ray("local", num_cpus=args.num_cpus)
    sampler = PeakRSS()
    sampler.start()
    t = time.perf_counter()
    if args.whole:  # cough before issue 26: one task builds the whole set, every task maps it
        scored = ray.remote(lambda p: scored_keys(p.table(), "bench")).remote(pred)
    else:
        scored = scored_buckets(pred, "bench", groups=cpus())

    @ray.remote(num_cpus=1)
    def lookup(scored, ids):
        scored = ray.get(scored) if isinstance(scored, ray.ObjectRef) else scored
        return int(scored.has(ids, [f"/new/{i}" for i in ids]).sum())

    rng = np.random.default_rng(0)
    batches = [[known[int(k)] for k in rng.integers(0, len(known), 16)] + [rng.bytes(16).hex() for _ in range(16)]
               for _ in range(64)]
    found = sum(ray.get([lookup.remote(scored, ids) for ids in batches]))
    seconds = time.perf_counter() - t
    sampler.stop.set()
    sampler.join()
    print(json.dumps({"files": args.files, "whole": args.whole, "found": found, "seconds": round(seconds, 1),
                      "peak_worker_rss_mb": round(sampler.worker / 2**20), "peak_driver_rss_mb": round(sampler.driver / 2**20)}))


def dedupe(args) -> None:
    figures: dict = {}
    for whole in (False, True):
        for n in (100_000, 1_000_000):
            out = subprocess.run([sys.executable, __file__, "dedupe-run", "--work", args.work, "--files", str(n),
                                  "--num-cpus", str(args.num_cpus), *(["--whole"] if whole else [])],
                                 cwd=ROOT, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(out.stderr[-3000:])
            figures[whole, n] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{'whole set' if whole else 'by bucket'} {n:>9} scored: {figures[whole, n]} ({load()})", flush=True)
    for whole in (False, True):
        ratio = figures[whole, 1_000_000]["peak_worker_rss_mb"] / figures[whole, 100_000]["peak_worker_rss_mb"]
        print(f"{'whole set' if whole else 'by bucket'}: peak worker RSS 1M / 100k = {ratio:.2f}x (target <= 1.5x)")


def plan_featurize(args) -> None:
    """In its own process: list and batch SOURCE as featurize does; print counts and this driver's peak RSS."""
    from cough.featurize.job import list_work
    from cough.runtime import init_ray
    from cough.tables.archive import EVERY_FILE
    from cough.tables.labels import load_labels

    init_ray("local", num_cpus=args.num_cpus)
    t = time.perf_counter()
    _, listing, batch = list_work(args.source, load_labels(None, args.source), EVERY_FILE, 64)
    print(json.dumps({"listed": listing.rows.count(), "batch_size": batch, "seconds": time.perf_counter() - t,
                      "peak_rss_mb": peak_rss_mb()}))


def plan(args) -> None:
    """In its own process: list and plan as a run does; print counts and this driver's peak RSS."""
    from cough.audio.features import DEFAULT_PARAMS
    from cough.model.store import ModelInfo
    from cough.tables.pred import Pred
    from cough.runtime import init_ray
    from cough.tables.labels import load_labels
    from cough.score.night import list_night
    from cough.tables.storage import Location

    init_ray("local", num_cpus=args.num_cpus)
    info = ModelInfo(model_dir="-", version="bench", params=DEFAULT_PARAMS, threshold=0.5)
    t = time.perf_counter()
    night = list_night(Location.of(args.source), info, Pred(Location.of(args.pred)), index=load_labels(None, args.source),
                       rescore=False, prefixes=(), since=None, batch_size=32)
    print(json.dumps({**night.counts.to_dict(), "seconds": time.perf_counter() - t, "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak RSS since it started its program (VmHWM). Not ``ru_maxrss``: Linux
    keeps that across exec, so a child of a large parent reports the parent's size."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def placeholders(root: Path, n: int, folders: int = 1000) -> Path:
    done = root / ".complete"
    if done.exists() and int(done.read_text()) == n:
        return root
    per = -(-n // folders)
    for k in range(folders):
        d = root / f"2026-{k:04d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(min(per, n - k * per)):
            (d / f"p{i:05d}.wav").touch()
    done.write_text(str(n))
    return root


def ledger_of(src: Path, pred: Path, share: float) -> None:
    """A ledger (as runs write it) that holds ``share`` of ``src``'s files, for model version "bench"."""
    import pyarrow as pa

    from cough.tables.ledger import Ledger
    from cough.tables.listing import list_recordings
    from cough.tables.pred import Pred
    from cough.tables.storage import Location

    fresh(pred)
    entries = list_recordings(str(src))
    keep = entries[: int(len(entries) * share)]
    rows = pa.table({"path": [e.path for e in keep], "file_size": [e.file_size for e in keep],
                     "file_mtime_ns": [e.file_mtime_ns for e in keep], "model_version": ["bench"] * len(keep),
                     "recording_id": [None] * len(keep), "status": ["ok"] * len(keep)})
    Ledger(Pred(Location.of(str(pred)))).record(rows, run_id="bench", chunk=1)


def rss(args) -> None:
    work = Path(args.work)
    figures: dict = {"score": {}, "score first night": {}, "featurize": {}}
    for n in (100_000, 1_000_000):
        src = placeholders(work / f"placeholders-{n}", n)
        pred = work / f"pred-rss-{n}"
        ledger_of(src, pred, 0.99)
        for job, cmd in (("score", ["plan", "--pred", str(pred)]),
                         ("score first night", ["plan", "--pred", str(fresh(work / f"pred-empty-{n}"))]),
                         ("featurize", ["plan-featurize"])):
            out = subprocess.run([sys.executable, __file__, *cmd, "--source", str(src), "--num-cpus",
                                  str(args.num_cpus)], cwd=ROOT, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(out.stderr[-3000:])
            figures[job][n] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{job:>17} {n:>9} files: {figures[job][n]} ({load()})", flush=True)
    for job, by_n in figures.items():
        ratio = by_n[1_000_000]["peak_rss_mb"] / by_n[100_000]["peak_rss_mb"]
        print(f"{job}: driver peak RSS 1M / 100k = {ratio:.2f}x (target <= 1.5x)")


def kill(args) -> None:
    """Uninterrupted, killed at half, rerun, uninterrupted again: the rerun against the mean of
    the two uninterrupted runs around it (the machine's load drifts). Wall and CPU seconds."""
    work = Path(args.work)
    src = archive(work / f"archive-{args.files}", args.files, folders=20)
    every = str(max(1, args.files // 20))
    fulls = []

    def uninterrupted():
        full, t_full, cpu = score(str(src), str(model(work)), str(fresh(work / "pred-full")), "--commit-every", every)
        fulls.append((t_full, cpu))
        print(f"uninterrupted: {full['scored']} scored in {t_full:.0f} s, {cpu:.0f} CPU s ({load()})", flush=True)

    uninterrupted()
    pred = fresh(work / "pred-killed")
    proc, cpu = start(nightly(str(src), str(model(work)), str(pred), "--commit-every", every), subprocess.DEVNULL), {}
    half = pred / "_ledger" / "_delta_log" / f"{args.files // int(every) // 2 - 1:020d}.json"
    t = time.perf_counter()
    while not half.exists() and proc.poll() is None:
        session_cpu(proc.pid, cpu)
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    os.killpg(proc.pid, signal.SIGKILL)  # the local Ray's head processes; its workers have groups of their own
    killed = time.perf_counter() - t
    while session_cpu(proc.pid, cpu) and time.perf_counter() - t < killed + 120:  # the workers notice and exit
        time.sleep(0.1)
    left = session_cpu(proc.pid, cpu)
    print(f"killed after {killed:.0f} s ({sum(cpu.values()):.0f} CPU s), with half the files in the ledger; "
          f"its processes all gone {time.perf_counter() - t - killed:.1f} s later"
          f"{f' but for {len(left)}' if left else ''} ({load()})", flush=True)
    rerun, t_rerun, cpu_rerun = score(str(src), str(model(work)), str(pred), "--commit-every", every)
    print(f"rerun: {rerun['seen_before']} seen before, {rerun['scored']} scored in {t_rerun:.0f} s, "
          f"{cpu_rerun:.0f} CPU s ({load()})", flush=True)
    uninterrupted()
    wall, cpu = (sum(f[i] for f in fulls) / len(fulls) for i in (0, 1))
    print(f"rerun / uninterrupted (mean of {len(fulls)}) = {t_rerun / wall:.0%} wall (target <= 60%), "
          f"{cpu_rerun / cpu:.0%} CPU")


def s3(args) -> None:
    import boto3
    import pyarrow.fs as pafs
    from score import s3_server

    work = Path(args.work)
    log = work / "moto.log"
    server, endpoint = s3_server(log=log)
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        src = archive(work / f"archive-{args.files}", args.files, folders=10)
        fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http")
        pafs.copy_files(str(src), "bench/raw", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
        pafs.copy_files(str(model(work)), "bench/model", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)
        first, t1, _ = score("s3://bench/raw", "s3://bench/model", "s3://bench/pred")
        tonight = fresh(work / "tonight")
        new_bytes = write_wavs(tonight / "2026-12-31", args.files // 100, seed=999)
        pafs.copy_files(str(tonight), "bench/raw", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
        start = log.stat().st_size
        second, t2, _ = score("s3://bench/raw", "s3://bench/model", "s3://bench/pred")
        with open(log) as f:
            f.seek(start)
            requests = f.read().splitlines()
        # werkzeug's request lines (colour codes around some): object GETs have no query string
        gets = [r for r in requests if "GET /bench/raw/" in r and "?" not in r.split("GET ", 1)[1].split(" ")[0]]
        print(f"s3 first run: {first['scored']} scored in {t1:.0f} s; second run (1% new = {args.files // 100} files,"
              f" {new_bytes} bytes): {second['scored']} scored, {second['bytes_read']} bytes read, {len(gets)} GETs of "
              f"recordings, {len(requests)} requests in all, {t2:.0f} s = {t2 / t1:.0%} of the first ({load()})")
    finally:
        server.terminate()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["scale", "rss", "kill", "s3", "plan", "plan-featurize", "dedupe", "dedupe-run"])
    ap.add_argument("--work", default="/tmp/cough-nightly")
    ap.add_argument("--files", type=int)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--source")
    ap.add_argument("--pred")
    ap.add_argument("--whole", action="store_true")
    args = ap.parse_args()
    args.files = args.files or {"scale": 100_000, "kill": 20_000, "s3": 2_000}.get(args.what, 0)
    if not args.what.startswith("plan") and not args.what.endswith("-run"):
        print(f"{platform.node()} {os.cpu_count()} CPUs, {load()}", flush=True)
    {"scale": scale, "rss": rss, "kill": kill, "s3": s3, "plan": plan, "plan-featurize": plan_featurize,
     "dedupe": dedupe, "dedupe-run": dedupe_run}[args.what](args)


if __name__ == "__main__":
    main()
