"""Coughs in real untrimmed calls (../shared/data/covid19-cough-untrimmed, skipped without it):
featurize finds, times and keeps the annotated cough in whole call-centre calls the detector
never saw (held out by file when it was trained: bench/detector/heldout.txt), and an annotated
span restricts the windows or, where it cannot be, makes an error row."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from cough.cli import main as cli

from .conftest import ROOT

pytestmark = [pytest.mark.shared, pytest.mark.slow]

HELDOUT = ROOT / "bench" / "detector" / "heldout.txt"


def _held_out_calls(untrimmed: Path, n: int) -> list[dict]:
    """The first ``n`` held-out call-centre calls (by name) whose annotation is usable."""
    held = {line.strip() for line in HELDOUT.read_text().splitlines() if line.strip() and not line.startswith("#")}
    rows = [r for r in csv.DictReader(open(untrimmed / "labels.csv")) if r["filename"] in held
            and r["source"] == "call-center"]
    return sorted(rows, key=lambda r: r["filename"])[:n]


def _iou_of_union(events: pd.DataFrame, start: float, end: float) -> float:
    """IoU of the annotated span with the union of the (disjoint) events that overlap it: the
    rule of docs/results.md's recall."""
    hit = events[(events["end_s"] > start) & (events["start_s"] < end)]
    inter = sum(min(e, end) - max(s, start) for s, e in zip(hit["start_s"], hit["end_s"]))
    covered = sum(e - s for s, e in zip(hit["start_s"], hit["end_s"]))
    return inter / (covered + (end - start) - inter) if len(hit) else 0.0


def test_held_out_calls_have_their_annotated_cough_found_timed_and_windowed(untrimmed_archive, tmp_path, capsys,
                                                                             ray_local):
    calls = _held_out_calls(untrimmed_archive, 12)
    raw = tmp_path / "raw"
    raw.mkdir()
    for r in calls:
        shutil.copy(untrimmed_archive / "raw" / r["filename"], raw)  # a link out of SOURCE is refused
    labels = tmp_path / "labels.csv"
    pd.DataFrame([{"filename": r["filename"], "label": r["label"]} for r in calls]).to_csv(labels, index=False)
    out = tmp_path / "features"
    assert cli(["featurize", str(raw), "--labels", str(labels), "--windowing", "coughs", "--out", str(out),
                "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["ok"] >= 11 and summary["coughs"] >= summary["ok"]
    events = pq.read_table(out / "events").to_pandas()
    images = pq.read_table(out / "images", columns=["path", "start_s", "end_s"]).to_pandas()
    found = 0
    for r in calls:
        path = str(raw / r["filename"])
        start, end = float(r["cough_start_s"]), float(r["cough_end_s"])
        found += _iou_of_union(events[events["path"] == path], start, end) >= 0.3
        windows = images[images["path"] == path]
        if len(windows):  # the windows sit on the coughs: one of them over the annotated span
            assert ((windows["end_s"] > start) & (windows["start_s"] < end)).any(), r["filename"]
    assert found >= 10  # the detector's recall on all 88 held-out calls: docs/results.md
    recordings = pq.read_table(out / "recordings").to_pandas()
    assert recordings["dropped_windows"].sum() > 3 * recordings["n_windows"].sum()  # most of a call is not cough


def test_an_annotated_span_restricts_the_windows_and_a_span_past_the_end_is_an_error_row(untrimmed_archive, tmp_path,
                                                                                          capsys, ray_local):
    rows = {r["filename"]: r for r in csv.DictReader(open(untrimmed_archive / "labels.csv"))}
    past_end = "0d3c9184-cbf1-4ca4-bd18-aafd541728d1.mp3"  # its published span ends after the file
    call = _held_out_calls(untrimmed_archive, 1)[0]
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in (past_end, call["filename"]):
        shutil.copy(untrimmed_archive / "raw" / name, raw)
    labels = tmp_path / "labels.csv"
    pd.DataFrame([{"filename": n, "label": rows[n]["label"], "cough_start_s": rows[n]["cough_start_s"],
                   "cough_end_s": rows[n]["cough_end_s"]} for n in (past_end, call["filename"])]).to_csv(labels, index=False)
    out = tmp_path / "features"
    assert cli(["featurize", str(raw), "--labels", str(labels), "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    recordings = pq.read_table(out / "recordings").to_pandas().set_index("path")
    bad = recordings.loc[str(raw / past_end)]
    assert bad["status"] == "error" and "ends" in bad["error"] and "after the end of the recording" in bad["error"]
    images = pq.read_table(out / "images", columns=["path", "start_s", "end_s"]).to_pandas()
    start, end = float(call["cough_start_s"]), float(call["cough_end_s"])
    assert len(images) >= 1 and (images["start_s"] >= start - 0.05).all() and (images["start_s"] < end).all()
