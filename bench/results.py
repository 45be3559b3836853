"""The science table of docs/results.md: does the model hear the cough or the channel?

For each featurizer variant (windows from the start, windows on energy events, windows on
the coughs the detector finds, a common 4 kHz band) and each architecture: featurize the shared archive, train, score the held-out
recordings, report, and collect the raw AUC, the AUC within each sample rate (stratified),
the metadata-only shortcut baseline, the baseline on the labels' own metadata columns
(``source``, ``verified``, ``asymptomatic`` on the shared archive), and how well a linear
probe on the images alone tells the recording channel (``source``). Every number comes
with its 95% CI.

    python bench/results.py --archive ../shared/data/covid19-cough --work /tmp/results \
        --arch pooled --epochs 12
    python bench/results.py --archive ../shared/data/covid19-cough-untrimmed --work /tmp/whole \
        --variants "start windows" "cough windows" "annotated span"

On an archive whose labels carry an annotated cough span (the untrimmed one), only the
"annotated span" variant is given it: the others featurize the whole recordings, as an
archive without annotations would be.

Prints one markdown table row per (variant, architecture); paste into docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {"start windows": [], "event windows": ["--windowing", "events"],
            "cough windows": ["--windowing", "coughs"], "common band 4 kHz": ["--bandwidth-hz", "4000"],
            "annotated span": []}
#: Only this variant sees the labels' annotated cough span (windows from the start, within the
#: span: the publishers' hand-cut cough); every other one featurizes whole recordings.
SPAN_VARIANT = "annotated span"
SPAN_COLUMNS = ("cough_start_s", "cough_end_s")


def cough(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cough", *args], check=True, stdout=subprocess.DEVNULL)


def probe(features: Path, column: str, n_boot: int) -> dict:
    """Linear probe on each recording's mean image profile predicting ``column``."""
    import pandas as pd
    import pyarrow.parquet as pq

    from cough.evaluation.probe import image_profile, probe_auc
    from cough.tables.schema import to_numpy

    table = pq.read_table(features / "images", columns=["path", "image", column])
    profile = pd.DataFrame(image_profile(to_numpy(table["image"])))
    profile["path"] = table["path"].to_pylist()
    profile[column] = table[column].to_pylist()
    per = profile.groupby("path").agg({**{c: "mean" for c in profile.columns[:-2]}, column: "first"})
    return probe_auc(per.drop(columns=[column]).to_numpy(), per[column].to_numpy(), per.index.to_numpy(),
                     n_boot=n_boot)


def ci(value, interval) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f} ({interval[0]:.2f}–{interval[1]:.2f})" if interval else f"{value:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archive", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--arch", nargs="+", default=["pooled"])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--n-boot", type=int, default=1000)
    args = p.parse_args()
    import pandas as pd
    raw, spans = args.archive / "raw", args.archive / "labels.csv"
    args.work.mkdir(parents=True, exist_ok=True)
    labels = args.work / "labels-without-spans.csv"
    pd.read_csv(spans).drop(columns=list(SPAN_COLUMNS), errors="ignore").to_csv(labels, index=False)
    print("| windows | arch | rejected (no cough) | n test | raw AUC | AUC within sample rate | shortcut baseline AUC | "
          "label-metadata baseline AUC | probe: images → source AUC | minutes |")
    print("| --- | --- | ---: | ---: | --- | --- | --- | --- | --- | ---: |")
    for variant in args.variants:
        slug = variant.replace(" ", "-")
        features = args.work / slug / "features"
        if not (features / "manifest.json").exists():
            cough("featurize", str(raw), "--labels", str(spans if variant == SPAN_VARIANT else labels), "--out",
                  str(features), *VARIANTS[variant])
        leak = probe(features, "source", args.n_boot)
        rejected = json.loads((features / "manifest.json").read_text()).get("rejected", 0)
        for arch in args.arch:
            start = time.time()
            run = args.work / slug / arch
            cough("train", str(features), "--out", str(run / "model"), "--arch", arch, "--epochs", str(args.epochs),
                  "--workers", "1")
            cough("score", str(features), "--model", str(run / "model"), "--out", str(run / "pred"),
                  "--no-quality-gate")
            cough("report", str(run / "pred"), "--out", str(run / "report"), "--by", "sample_rate", "source",
                  "--n-boot", str(args.n_boot))
            m = json.loads((run / "report" / "metrics.json").read_text())
            base, strat = m["shortcut_baseline"], m["stratified_auc"]
            label_base = m.get("label_metadata_baseline") or {"auc": None, "auc_ci": None}
            print(f"| {variant} | {arch} | {rejected} | {m['n']} | {ci(m['auc'], m['auc_ci'])} | "
                  f"{ci(strat['auc'], strat['auc_ci'])} | {ci(base['auc'], base['auc_ci'])} | "
                  f"{ci(label_base['auc'], label_base['auc_ci'])} | "
                  f"{ci(leak['auc'], leak['auc_ci'])} | {(time.time() - start) / 60:.1f} |", flush=True)


if __name__ == "__main__":
    main()
