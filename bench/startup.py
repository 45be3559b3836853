"""Where a one-file `cough featurize` run's seconds go: interpreter, imports, Ray, the job.

Each line is measured in a fresh interpreter (``python -c``), one after the other, so that
nothing is cached in the process; the disk cache is warm for all of them alike. The last
line is the whole `cough featurize` command on one file, as a user runs it.

    .venv/bin/python bench/startup.py ../shared/data/covid19-cough/raw [--num-cpus 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: (what, python code printing the seconds of the part it measures)
PROBES = [
    ("python itself", "import time; t = time.perf_counter(); print(time.perf_counter() - t)"),
    ("import cough.cli and build the parser (every job's flags)",
     "import time; t = time.perf_counter(); import cough.cli as c; c.build_parser(); print(time.perf_counter() - t)"),
    ("import the featurize driver's modules (ray, ray.data, pandas, pyarrow)",
     "import time; t = time.perf_counter(); import cough.commands.featurize, cough.runtime, cough.tables.labels, cough.tables.listing, "
     "cough.tables.storage, cough.tables.shards, ray, ray.data; print(time.perf_counter() - t)"),
    ("import what a featurizing worker runs (cough.tables.shards) and featurize one file",
     "import time, sys; t = time.perf_counter(); from cough.audio.recording import process; "
     "from cough.tables.listing import Entry; process(Entry(sys.argv[1])); print(time.perf_counter() - t)"),
    ("import ray in a fresh process (every Ray worker does)",
     "import time; t = time.perf_counter(); import ray; print(time.perf_counter() - t)"),
    ("import tensorflow (score's actors and train's workers; featurize never does)",
     "import os, time; os.environ['TF_USE_LEGACY_KERAS'] = '1'; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'; "
     "t = time.perf_counter(); import tensorflow; print(time.perf_counter() - t)"),
    ("ray.init (a private local instance) and ray.shutdown",
     "import time, sys; import ray; t = time.perf_counter(); "
     "ray.init(address='local', num_cpus=int(sys.argv[2]), include_dashboard=False); a = time.perf_counter() - t; "
     "t = time.perf_counter(); ray.shutdown(); print(a + time.perf_counter() - t)"),
]


def probe(code: str, *args: str) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(done.stderr[-2000:])
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "bench"))
    from featurize import _load, link_copies, run_cli

    from cough.tables.listing import recording_paths

    first = recording_paths(args.source)[0]
    print(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}; medians of {args.repeat}; "
          f"load average {_load()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        one = link_copies([first], Path(tmp) / "one", 1)
        rows = []
        for what, code in PROBES:
            runs = [probe(code, first, str(args.num_cpus)) for _ in range(args.repeat)]
            rows.append((what, statistics.median(runs)))
            print(f"{statistics.median(runs):6.2f} s  {what}", flush=True)
        runs = [run_cli("featurize", one, Path(tmp) / "out", num_cpus=args.num_cpus)[0] for _ in range(args.repeat)]
        print(f"{statistics.median(runs):6.2f} s  the whole `cough featurize` on one file "
              f"(runs: {', '.join(f'{r:.1f}' for r in runs)})")
    print(f"load average at the end: {_load()}")
    print(json.dumps({"parts": dict(rows), "one_file_run": statistics.median(runs)}))


if __name__ == "__main__":
    main()
