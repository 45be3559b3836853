"""Where a recording's milliseconds go, stage by stage, in one process (no Ray).

Runs the featurizing path of :func:`cough.audio.recording.process` split into its stages
and the shard writing of :mod:`cough.tables.shards`, timing the CPU each stage takes
(``process_time``, which other jobs on a shared machine disturb less than wall time):
read, hash, decode, quality (events, SNR, bandwidth, clipping: cough.audio.quality.measure),
mono+resample, STFT+mel+dB, windows, image, Arrow conversion, Parquet write (per batch of
``--batch-size`` recordings). Prints CPU ms per recording.
What the framework around it costs (Ray Data, object store, driver) is the difference
between this sum and bench/featurize.py's marginal figure; py-spy shows the rest.

    .venv/bin/python bench/profile_featurize.py ../shared/data/covid19-cough/raw [--limit N]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    import numpy as np
    import pyarrow as pa

    from cough.audio import features as F
    from cough.audio.decode import decode
    from cough.tables.listing import Entry, recording_paths
    from cough.errors import RecordingError
    from cough.audio.quality import measure
    from cough.audio.recording import RECORDING_BUDGET, _threadpools, recording_id
    from cough.tables.schema import image_type, log_mel_type, tensor_column
    from cough.tables.shards import write_table

    t = time.process_time()
    files = recording_paths(args.source)[: args.limit]
    listing = time.process_time() - t
    p = F.DEFAULT_PARAMS

    def read(path):
        return Entry(path).read(max_bytes=RECORDING_BUDGET)
    spent: dict[str, float] = collections.defaultdict(float)
    images_all, mels_all, n_images = [], [], 0

    def timed(stage, fn, *a, **k):
        t0 = time.process_time()
        out = fn(*a, **k)
        spent[stage] += time.process_time() - t0
        return out

    with tempfile.TemporaryDirectory() as tmp, _threadpools().limit(limits=1):
        warm = time.process_time()
        for path in files[:8]:  # first calls: lazy imports, filter banks, caches (start-up, not per file)
            try:
                F.featurize(decode(read(path)), params=p)
            except RecordingError:
                pass
        warm = time.process_time() - warm
        for i, path in enumerate(files):
            data = timed("read", read, path)
            timed("hash", recording_id, data)
            try:
                audio = timed("decode", decode, data)
                mono = timed("mono+resample", F.mono, audio)
                timed("quality", measure, mono, audio.sample_rate, samples=audio.samples)
                y = timed("mono+resample", F.to_rate, mono, audio.sample_rate, params=p)
                db = timed("stft+mel+dB", F.log_mel, y, params=p)
            except RecordingError:
                continue
            chunks = timed("windows", F.windows, db, params=p)
            images = timed("image", lambda: np.stack([F.to_image(c, params=p) for c in chunks]))  # noqa: B023 (called here)
            mels = timed("windows", lambda: np.stack(chunks).astype(np.float16))  # noqa: B023 (called here)
            images_all.append(images)
            mels_all.append(mels)
            n_images += len(images)
            if (i + 1) % args.batch_size == 0 or i + 1 == len(files):
                t0 = time.process_time()
                table = pa.table({"image": tensor_column(np.concatenate(images_all), image_type(p)),
                                  "log_mel": tensor_column(np.concatenate(mels_all), log_mel_type(p))})
                spent["arrow"] += time.process_time() - t0
                timed("parquet write", write_table, table, os.path.join(tmp, f"{i}.parquet"))
                images_all, mels_all = [], []

    n = len(files)
    total = sum(spent.values())
    print(f"{n} files, {n_images} images; listing {listing * 1e3 / n:.3f} ms/file; "
          f"first 8 files (warm-up, untimed below) {warm:.2f} s")
    for stage, s in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:15} {s * 1e3 / n:7.2f} ms/file  {100 * s / total:5.1f} %")
    print(f"  {'total':15} {total * 1e3 / n:7.2f} ms/file  = {n / total:.0f} files/s in one process")


if __name__ == "__main__":
    main()
