"""Archives as they arrive, end to end: a tree of participant folders (the same file names in
every folder, folder names with spaces, recordings that are not coughs, labels in sidecar
files) goes labels -> featurize -> train --cv -> score -> report, on the uneven shape of a
small clinical set, and every count agrees with the others and with PRED's rows."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from deltalake import DeltaTable

from cough.cli import main as cli

from .helpers import participant_tree

pytestmark = pytest.mark.slow

#: 16 participants, 7 positive and 9 negative, with 2 to 9 coughs each (the uneven shape of a
#: clinical set, smaller: a test trains five models).
COUGHS = {1: [4, 5, 3, 5, 2, 4, 2], 0: [9, 2, 4, 3, 4, 4, 8, 2, 2]}


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_a_participant_folder_tree_goes_through_every_job_with_consistent_counts(tmp_path, capsys, ray_local):
    labels = [1] * 7 + [0] * 9
    src = participant_tree(tmp_path / "study", labels, coughs=COUGHS[1] + COUGHS[0], seed=4)
    n_coughs, n_files = sum(COUGHS[1] + COUGHS[0]), sum(COUGHS[1] + COUGHS[0]) + 2 * 16

    assert cli(["labels", str(src), "--sidecar", "metadata.json", "--label-field", "covid_status", "--positive",
                "positive_mild,positive_asymp", "--negative", "healthy", "--out", str(tmp_path / "labels.csv"),
                "--json"]) == 0
    made = _json(capsys)
    assert (made["files"], made["labelled"], made["participants"]) == (n_files, n_files, 16)

    features = tmp_path / "features"
    assert cli(["featurize", str(src), "--labels", str(tmp_path / "labels.csv"), "--include", "*/cough-*.wav",
                "--out", str(features), "--json"]) == 0
    f = _json(capsys)
    assert (f["inputs"], f["excluded"], f["ok"] + f["errors"] + f["rejected"]) == (n_files, 32, n_coughs)
    assert f["labelled"] == f["labelled_by_path"] == n_coughs and f["participants"] == 16 and f["warnings"] == []
    manifest = json.loads((features / "manifest.json").read_text())
    assert {k: manifest[k] for k in ("inputs", "ok", "errors", "rejected", "excluded")} == \
        {k: f[k] for k in ("inputs", "ok", "errors", "rejected", "excluded")}

    model, oof = tmp_path / "model", tmp_path / "oof"
    assert cli(["train", str(features), "--out", str(model), "--cv", "4", "--epochs", "1", "--num-cpus", "2",
                "--cv-pred", str(oof), "--json"]) == 0  # the defaults otherwise: this shape failed before
    t = _json(capsys)
    assert t["participants"] == 16 and t["recordings"] == f["ok"] and len(t["fold_aucs"]) == 4

    pred = tmp_path / "pred"
    assert cli(["score", str(src), "--model", str(model), "--out", str(pred), "--labels", str(tmp_path / "labels.csv"),
                "--include", "*/cough-*.wav", "--json"]) == 0
    s = _json(capsys)
    assert s["inputs"] == s["ok"] + s["errors"] + s["rejected"] + s["skipped"] + s["excluded"] == n_files
    assert s["excluded"] == 32 and s["recordings"] <= s["ok"] + s["errors"] + s["rejected"]
    rows = DeltaTable(str(pred)).to_pandas()
    assert len(rows) == s["ok"] + s["errors"] + s["rejected"] and rows["path"].is_unique
    assert (rows["status"] == "ok").sum() == s["ok"] and (rows["status"] == "rejected").sum() == s["rejected"]

    report = tmp_path / "report"
    assert cli(["report", str(pred), "--out", str(report), "--n-boot", "100", "--json"]) == 0
    _json(capsys)
    ops = json.loads((report / "metrics.json").read_text())["operations"]
    by_status = rows["status"].value_counts()
    assert (ops["files"], ops["ok"], ops["errors"], ops["rejected"]) == \
        (len(rows), by_status.get("ok", 0), by_status.get("error", 0), by_status.get("rejected", 0))
    assert ops["recordings"] == rows["recording_id"].nunique() + rows["recording_id"].isna().sum()

    # the out-of-fold report shows each fold beside the pooled AUC, over the participants it scored
    assert cli(["report", str(oof), "--out", str(tmp_path / "oof-report"), "--n-boot", "100", "--json"]) == 0
    _json(capsys)
    cv = json.loads((tmp_path / "oof-report" / "metrics.json").read_text())["cross_validation"]
    assert len(cv["folds"]) == 4 and sum(fold["participants"] for fold in cv["folds"]) == 16
    assert pd.Series([fold["recordings"] for fold in cv["folds"]]).sum() == t["recordings"]
