"""Benchmark: the seed's per-file featurizing versus `cough featurize`, side by side.

(a) the seed's way, one file after another: ffmpeg mp3 → wav, librosa.load at 22050 Hz,
    melspectrogram, a matplotlib figure saved as PNG;
(b) `cough featurize` (Ray Data on a local instance already started; startup reported apart);
(c) decode only (libsndfile, sequential): the floor of any featurizer.

    .venv/bin/python bench/featurize.py ../shared/data/covid19-cough/raw [--limit N] [--num-cpus 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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


def link_copies(files: list[str], dst: Path, copies: int) -> Path:
    """``copies`` of ``files`` under ``dst`` with new names: hard links, or copies across
    filesystems (not symlinks: the listing does not follow links out of SOURCE)."""
    import shutil

    dst.mkdir()
    for k in range(copies):
        for f in files:
            name = dst / (f"{k}-{Path(f).name}" if copies > 1 else Path(f).name)
            try:
                os.link(f, name)
            except OSError:
                shutil.copyfile(f, name)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source")
    ap.add_argument("--limit", type=int, help="use only the first N files (all three ways get the same ones)")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    args = ap.parse_args()

    from cough.listing import recording_paths

    files = recording_paths(args.source)[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        subset = link_copies(files, Path(tmp) / "subset", 1)
        t = time.perf_counter()
        ok_a = seed_way(files, tmp)
        a = time.perf_counter() - t

        import ray

        from cough.runtime import init_ray
        from jobs.featurize import featurize

        t = time.perf_counter()
        init_ray(num_cpus=args.num_cpus)
        startup = time.perf_counter() - t
        t = time.perf_counter()
        summary = featurize(str(subset), str(Path(tmp) / "out"))
        b = time.perf_counter() - t
        ray.shutdown()

        t = time.perf_counter()
        ok_c = decode_only(files)
        c = time.perf_counter() - t

    n = len(files)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{n} files from {args.source}")
    print(f"(a) seed way, sequential:  {n / a:8.1f} files/s  ({a:.1f} s, {ok_a} ok)")
    print(f"(b) cough featurize:       {n / b:8.1f} files/s  ({b:.1f} s, {summary['ok']} ok, "
          f"{summary['images']} images; Ray startup {startup:.1f} s not included)")
    print(f"(c) decode only, floor:    {n / c:8.1f} files/s  ({c:.1f} s, {ok_c} ok)")
    print(f"(b)/(a) = {a / b:.1f}x   (b)/(c) = {c / b:.2f}x")


if __name__ == "__main__":
    main()
