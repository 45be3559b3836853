"""Load test: `cough score` over a large archive (≥100k files) with peak memory.

    .venv/bin/python bench/score_load.py ARCHIVE --model MODEL [--num-cpus 2]

Prints throughput and the peak RSS of the driver and the Ray workers, sampled every
0.2 s (the same sampler as bench/score.py --memory).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from score import PeakRSS, run_score  # noqa: E402  (bench/score.py)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source")
    ap.add_argument("--model", required=True)
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    args = ap.parse_args()

    import ray

    from cough.runtime import init_ray

    with tempfile.TemporaryDirectory() as tmp:
        init_ray(num_cpus=args.num_cpus)
        sampler = PeakRSS()
        sampler.start()
        summary, seconds = run_score(args.source, Path(args.model), Path(tmp) / "pred")
        sampler.stop.set()
        sampler.join()
        ray.shutdown()
    mb = 1 << 20
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{summary['inputs']} files, {summary['ok']} ok, {summary['errors']} errors in {seconds:.0f} s "
          f"({summary['inputs'] / seconds:.1f} files/s); peak RSS driver {sampler.driver / mb:.0f} MB, "
          f"largest worker {sampler.worker / mb:.0f} MB, all workers {sampler.workers_total / mb:.0f} MB")


if __name__ == "__main__":
    main()
