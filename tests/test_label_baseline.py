"""cough report: the label-metadata baseline, a model on the labels CSV's own extra columns
(symptoms, site, ...) reported beside the audio model and the shortcut baseline, with the
rule that leaves out identifiers and restatements of the label (cough.evaluation.baselines)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from .conftest import SHARED
from .helpers import N_BOOT, report, scores_for, strict_json, write_pred

pytestmark = pytest.mark.whole_report


def questionnaire(rng, n=120):
    """Participants (one recording each) with a label and the columns a labels CSV might carry."""
    label = rng.integers(0, 2, n)
    agrees = rng.random(n) < 0.97
    return pd.DataFrame({
        "label": label,
        "participant": [f"p{i}" for i in range(n)],
        "cough": np.where(agrees == (label == 1), "yes", "no"),           # a symptom that predicts the label
        "diagnosis": np.where(label == 1, "covid", "healthy"),            # the label restated
        "upload": [f"uploads/{i:04d}.webm" for i in range(n)],           # one value per row
        "country": "uk",                                                  # one value only
    })


def test_a_predictive_label_column_gives_a_baseline_near_1_and_leaks_are_left_out(tmp_path):
    rng = np.random.default_rng(41)
    frame = questionnaire(rng)
    frame["score"] = rng.random(len(frame))  # a model that hears nothing
    m, out = report(tmp_path, frame, meta_columns=["cough", "diagnosis", "upload", "country"])
    lb = m["label_metadata_baseline"]
    assert lb["features"] == ["cough"]
    assert set(lb["candidates"]) == {"cough", "diagnosis", "upload", "country"}
    assert "restatement of the label" in lb["left_out"]["diagnosis"]
    assert "identifier" in lb["left_out"]["upload"]
    assert "one value only" in lb["left_out"]["country"]
    assert lb["auc"] > 0.9 and lb["auc_ci"][0] > 0.8
    assert lb["model_minus_baseline"] < 0 and lb["model_minus_baseline_ci"][1] < 0
    assert any(w.startswith("The labels' own metadata alone (cough) predicts the label") for w in m["warnings"])
    assert any("does not beat the label-metadata baseline" in w for w in m["warnings"])
    saved = strict_json(out / "metrics.json")["label_metadata_baseline"]
    assert saved["auc"] == pytest.approx(lb["auc"]) and saved["features"] == ["cough"]
    page = (out / "report.html").read_text()
    assert "The labels' own metadata: does the sound add anything?" in page
    assert "a restatement of the label" in page and "label-metadata baseline" in page


def test_a_model_that_hears_the_disease_beats_a_weak_questionnaire(tmp_path):
    rng = np.random.default_rng(42)
    frame = questionnaire(rng)
    frame["cough"] = np.where(rng.random(len(frame)) < 0.5, "yes", "no")  # unrelated to the label
    frame["score"] = scores_for(frame["label"], rng, 6.0)
    m, _ = report(tmp_path, frame, meta_columns=["cough"])
    lb = m["label_metadata_baseline"]
    assert lb["auc_ci"][0] < 0.5 < lb["auc_ci"][1]
    assert lb["model_minus_baseline_ci"][0] > 0
    assert not any("label-metadata baseline" in w or "labels' own metadata" in w for w in m["warnings"])


def test_without_label_columns_there_is_no_label_metadata_baseline(tmp_path):
    rng = np.random.default_rng(43)
    frame = pd.DataFrame({"label": rng.integers(0, 2, 40)})
    frame["score"] = scores_for(frame["label"], rng, 3.0)
    m, out = report(tmp_path, frame)
    assert m["label_metadata_baseline"] is None
    assert "label_metadata_baseline" not in m["not_computable"]
    assert "labels' own metadata" not in (out / "report.html").read_text()


def test_columns_of_a_labels_csv_given_to_the_report_are_used_and_missing_values_count(tmp_path):
    """Columns arrive through --labels too; a column filled in for (nearly) positives only
    predicts the label by being empty, and the report says so; ages are numbers, not ids."""
    rng = np.random.default_rng(44)
    n = 80
    label = rng.integers(0, 2, n)
    frame = pd.DataFrame({"score": rng.random(n), "label": label})
    csv = tmp_path / "labels.csv"
    pd.DataFrame({"filename": [f"r{i}.mp3" for i in range(n)], "label": label,
                  "fever": np.where(label == 1, rng.choice(["yes", "no", None], n, p=[0.45, 0.45, 0.1]), None),
                  "age": rng.integers(18, 90, n).astype(str)}).to_csv(csv, index=False)
    m, _ = report(tmp_path, frame, labels=str(csv))
    lb = m["label_metadata_baseline"]
    assert set(lb["features"]) == {"fever", "age"}  # age: 72 distinct ages in 80 rows would be an id as text; not as numbers
    assert lb["missing"]["fever"]["negative"] == 1.0 and 0 < lb["missing"]["fever"]["positive"] < 0.3
    assert lb["auc"] > 0.85
    assert any(w.startswith("'fever' is empty for 100.0% of the negative and") for w in m["warnings"])


def test_a_column_filled_in_for_positives_only_is_a_restatement_of_the_label(tmp_path):
    rng = np.random.default_rng(47)
    frame = questionnaire(rng, 60)
    frame["fever"] = np.where(frame["label"] == 1, rng.choice(["yes", "no"], len(frame)), None)
    frame["score"] = rng.random(len(frame))
    m, _ = report(tmp_path, frame, meta_columns=["fever", "cough"])
    lb = m["label_metadata_baseline"]
    assert lb["features"] == ["cough"]
    assert "restatement of the label" in lb["left_out"]["fever"]


def test_when_the_rule_leaves_out_every_column_the_report_says_why(tmp_path):
    rng = np.random.default_rng(45)
    frame = questionnaire(rng, 40)
    frame["score"] = rng.random(len(frame))
    m, out = report(tmp_path, frame, meta_columns=["diagnosis", "upload"])
    lb = m["label_metadata_baseline"]
    assert lb["auc"] is None and lb["features"] == []
    assert "every label-metadata column is left out" in m["not_computable"]["label_metadata_baseline"]
    assert "Not computable: every label-metadata column is left out" in (out / "report.html").read_text()


@pytest.mark.shared
def test_on_the_shared_archive_asymptomatic_is_used(tmp_path):
    """The shared archive's labels carry source, verified and asymptomatic; the baseline sees
    them all (asymptomatic is empty for every negative: the report says so)."""
    if not (SHARED / "labels.csv").is_file():
        pytest.skip(f"shared archive not found at {SHARED}")
    labels = pd.read_csv(SHARED / "labels.csv", dtype=str)
    frame = pd.DataFrame({"path": [f"/data/raw/{f}" for f in labels["filename"]],
                          "participant": list(labels["filename"]),
                          "label": (labels["label"] == "positive").astype(int)})
    frame["score"] = np.random.default_rng(46).random(len(frame))
    pred = write_pred(tmp_path / "pred", frame)
    from cough.report import write_report

    m = write_report(str(pred), str(tmp_path / "report"), labels=str(SHARED / "labels.csv"), n_boot=N_BOOT)
    lb = m["label_metadata_baseline"]
    assert set(lb["candidates"]) == {"source", "verified", "asymptomatic"}
    assert "asymptomatic" in lb["features"] and lb["left_out"] == {}
    assert lb["missing"]["asymptomatic"]["negative"] == 1.0
    assert lb["auc"] > 0.9
