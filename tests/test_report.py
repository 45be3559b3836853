"""cough report: metrics from TRUE labels with participant-level CIs, the shortcut check,
subgroups, the operational (nightly) view, and degenerate inputs.

PRED tables are built here as `cough score` writes them (a Delta table of cough.tables.schema.pred_schema,
one commit per run carrying its run record), small enough to report in seconds.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from cough.evaluation import metrics as M
from cough.tables.artifacts import Metrics
from cough.cli import main
from cough.tables.pred import LOG_DIR, claim_pred
from cough.report import error_rate, write_report
from cough.tables.storage import claim

from .helpers import N_BOOT, clustered, report, scores_for, strict_json, write_pred

pytestmark = pytest.mark.whole_report  # each test renders a whole report: not in the fast tier

REQUIRED = ["n", "n_groups", "prevalence", "auc", "auc_ci", "pr_auc", "threshold", "confusion_matrix",
            "sensitivity", "sensitivity_ci", "specificity", "specificity_ci", "ppv", "ppv_ci", "npv", "npv_ci",
            "accuracy", "accuracy_ci", "brier", "by_subgroup", "shortcut_baseline", "warnings"]



# ----------------------------------------------------------------------------- headline metrics


def test_random_labels_give_an_auc_interval_covering_one_half(tmp_path):
    frame = clustered(np.random.default_rng(0), 60, 4)
    m, out = report(tmp_path, frame, by=["participant"])
    low, high = m["auc_ci"]
    assert low < 0.5 < high
    assert m["n"] == 240 and m["n_groups"] == 60
    levels = m["by_subgroup"]["participant"]["levels"]  # 60 participants: the 19 largest and the rest pooled
    assert len(levels) == 20 and levels["(other levels)"]["n_groups"] == 41
    assert any("coin toss" in w for w in m["warnings"])
    assert strict_json(out / "metrics.json")["auc_ci"] == pytest.approx([low, high])


def test_perfectly_separated_scores_give_auc_one(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], 30)
    frame = pd.DataFrame({"label": labels, "score": np.where(labels == 1, rng.uniform(0.6, 1, 60),
                                                              rng.uniform(0, 0.4, 60))})
    m, _ = report(tmp_path, frame)
    assert m["auc"] == 1.0 and m["auc_ci"] == [1.0, 1.0]
    assert m["pr_auc"] == 1.0
    assert m["confusion_matrix"] == [[30, 0], [0, 30]]
    assert m["sensitivity"] == m["specificity"] == m["accuracy"] == 1.0
    assert not any("coin toss" in w for w in m["warnings"])


def test_hand_made_confusion_matrix_and_rates(tmp_path):
    # threshold 0.5: tn = 3, fp = 1, fn = 2, tp = 4
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.7, 0.4, 0.45, 0.6, 0.8, 0.9, 0.55]
    m, out = report(tmp_path, pd.DataFrame({"label": labels, "score": scores}), threshold=0.5)
    assert m["confusion_matrix"] == [[3, 1], [2, 4]]
    assert m["sensitivity"] == pytest.approx(4 / 6)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["ppv"] == pytest.approx(4 / 5)
    assert m["npv"] == pytest.approx(3 / 5)
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["prevalence"] == pytest.approx(0.6)
    assert m["brier"] == pytest.approx(np.mean((np.array(scores) - np.array(labels)) ** 2))
    assert m["threshold"] == 0.5 and m["threshold_source"] == "--threshold"
    # the same numbers as scikit-learn's own functions
    from sklearn.metrics import accuracy_score, precision_score, recall_score, roc_auc_score

    predicted = (np.array(scores) >= 0.5).astype(int)
    assert m["sensitivity"] == pytest.approx(recall_score(labels, predicted))
    assert m["specificity"] == pytest.approx(recall_score(labels, predicted, pos_label=0))
    assert m["ppv"] == pytest.approx(precision_score(labels, predicted))
    assert m["npv"] == pytest.approx(precision_score(labels, predicted, pos_label=0))
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores))
    # a different threshold moves the confusion matrix, counts still sum to n
    m2, _ = report(tmp_path / "t", pd.DataFrame({"label": labels, "score": scores}), threshold=0.42)
    assert m2["confusion_matrix"] == [[3, 1], [1, 5]]
    assert sum(map(sum, m2["confusion_matrix"])) == 10


def test_predictions_never_stand_in_for_labels(tmp_path):
    rng = np.random.default_rng(3)
    n = 200
    truth = rng.integers(0, 2, n)
    # `predicted` agrees with the truth perfectly, the labels are random: metrics must be chance-level
    frame = pd.DataFrame({"score": rng.random(n), "predicted": truth, "label": rng.integers(0, 2, n)})
    m, _ = report(tmp_path / "a", frame)
    assert m["auc_ci"][0] < 0.5 < m["auc_ci"][1]
    assert m["accuracy_ci"][0] < 0.5 < m["accuracy_ci"][1]
    # no labels at all: a perfect `predicted` column yields no metric
    m, out = report(tmp_path / "b", frame.drop(columns="label"))
    assert m["n"] == 0 and m["auc"] is None and m["confusion_matrix"] is None and m["accuracy"] is None
    assert "no labelled recording" in m["not_computable"]["auc"]
    assert "cannot say how accurate" in (out / "report.html").read_text()



def test_participant_view_averages_recordings_and_leaves_out_mixed_labels(tmp_path):
    frame = pd.DataFrame({"participant": ["a", "a", "b", "b", "c", "c", "d", "e", "f"],
                          "label": [1, 1, 0, 0, 1, 0, 1, 0, 0],
                          "score": [0.9, 0.5, 0.2, 0.6, 0.7, 0.1, 0.8, 0.3, 0.4]})
    m, _ = report(tmp_path, frame)
    g = m["group_level"]
    assert g["n"] == 5 and g["mixed_label_groups"] == 1  # c has both labels
    assert m["n"] == 9 and m["n_groups"] == 6
    # means: a 0.7 (pos), b 0.4, d 0.8 (pos), e 0.3, f 0.4 -> at 0.5: tp 2, tn 3
    assert g["confusion_matrix"] == [[3, 0], [0, 2]]
    assert any("both labels" in w for w in m["warnings"])


# ----------------------------------------------------------------------------- labels

def test_labels_csv_wins_over_pred_and_joins_by_file_name(tmp_path):
    rng = np.random.default_rng(5)
    n = 40
    truth = np.repeat([0, 1], n // 2)
    frame = pd.DataFrame({"score": np.where(truth == 1, 0.9, 0.1) + rng.normal(0, 0.01, n),
                          "label": 1 - truth})  # PRED's labels are all wrong
    frame["path"] = [f"/archive/raw/{'sub/' if i % 2 else ''}r{i}.mp3" for i in range(n)]
    names = [f"raw/sub/r{i}.mp3" if i % 2 else f"r{i}.mp3" for i in range(n)]  # relative paths and basenames
    csv = tmp_path / "labels.csv"
    pd.DataFrame({"filename": names, "label": np.where(truth == 1, "positive", "negative"),
                  "site": np.where(np.arange(n) < 10, "x", "y")}).iloc[:-2].to_csv(csv, index=False)
    m, _ = report(tmp_path, frame, labels=str(csv), by=["site"])
    assert m["run"]["labels"].startswith(f"from {csv} (38 of 40")
    # 38 rows take the CSV's true labels; the last two (positives absent from the CSV) keep
    # PRED's wrong label 0, and their high scores make them the only errors
    assert m["n"] == 40
    assert m["confusion_matrix"] == [[20, 2], [0, 18]]
    assert set(m["by_subgroup"]["site"]["levels"]) == {"x", "y", "(missing)"}
    assert m["by_subgroup"]["site"]["levels"]["x"]["n"] == 10


def test_unknown_by_column_is_a_usage_error(tmp_path, capsys):
    pred = write_pred(tmp_path / "pred", pd.DataFrame({"score": [0.2, 0.8], "label": [0, 1]}))
    rc = main(["report", str(pred), "--out", str(tmp_path / "r"), "--by", "nope", "--n-boot", "100"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--by nope" in err and "available" in err
    assert not (tmp_path / "r").exists()
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 1


# ----------------------------------------------------------------------------- shortcuts

def confounded(rng, n_groups=80, per=2):
    """Call-centre participants (8 kHz stereo) are mostly positive, bot ones (48 kHz mono) mostly not."""
    rows = []
    for p in range(n_groups):
        centre = p % 2 == 0
        label = int(rng.random() < (0.85 if centre else 0.15))
        for _ in range(per):
            rows.append({"participant": f"p{p}", "label": label, "site": "call-centre" if centre else "bot",
                         "sample_rate": 8000 if centre else 48000, "channels": 2 if centre else 1,
                         "format": "mp3", "duration_s": float(rng.uniform(1, 6))})
    return pd.DataFrame(rows)


def test_shortcut_baseline_and_subgroup_warnings(tmp_path):
    rng = np.random.default_rng(6)
    frame = confounded(rng)
    # a "model" that only recognises the recording setup
    frame["score"] = np.clip(np.where(frame["sample_rate"] == 8000, 0.7, 0.3) + rng.normal(0, 0.05, len(frame)), 0, 1)
    m, out = report(tmp_path, frame, by=["site"], meta_columns=["site"], recording_metadata=True)
    base = m["shortcut_baseline"]
    assert base["features"] == ["sample_rate", "channels", "duration_s", "format"]
    assert base["auc"] > 0.75 and base["auc_ci"][0] > 0.5
    assert any("does not beat the metadata-only baseline" in w for w in m["warnings"])
    assert any("Recording metadata alone" in w for w in m["warnings"])
    assert any("'site' alone predicts the label" in w for w in m["warnings"])
    levels = m["by_subgroup"]["site"]["levels"]
    assert levels["call-centre"]["prevalence"] > 0.6 > 0.4 > levels["bot"]["prevalence"]
    # within a site the shortcut "model" is at chance
    assert all(v["auc_ci"] is None or v["auc_ci"][0] < 0.5 < v["auc_ci"][1] for v in levels.values())
    assert "Shortcut check" in (out / "report.html").read_text()


def test_a_model_that_hears_the_disease_beats_the_baseline(tmp_path):
    rng = np.random.default_rng(7)
    frame = confounded(rng)
    frame["score"] = scores_for(frame["label"], rng, 6.0)
    m, _ = report(tmp_path, frame, by=["site"], meta_columns=["site"], recording_metadata=True)
    base = m["shortcut_baseline"]
    assert base["model_minus_baseline_ci"][0] > 0
    assert not any("does not beat" in w for w in m["warnings"])
    assert all(v["auc"] > 0.85 for v in m["by_subgroup"]["site"]["levels"].values())


def test_stratified_auc_unmasks_a_channel_shortcut(tmp_path):
    """A "model" that only recognises the channel has a high raw AUC and a stratified AUC at
    chance; one that hears the disease keeps its AUC within each channel."""
    rng = np.random.default_rng(16)
    frame = confounded(rng)
    frame["score"] = np.clip(np.where(frame["sample_rate"] == 8000, 0.7, 0.3) + rng.normal(0, 0.05, len(frame)), 0, 1)
    m, out = report(tmp_path / "shortcut", frame, recording_metadata=True)
    strat = m["stratified_auc"]
    assert strat["by"] == "sample_rate" and {lv["level"] for lv in strat["levels"]} == {"8000", "48000"}
    assert m["auc"] > 0.75
    assert strat["auc_ci"][0] < 0.5 < strat["auc_ci"][1]
    assert sum(lv["n"] for lv in strat["levels"]) == m["n"]
    assert any("once the recording condition is matched" in w for w in m["warnings"])
    page = (out / "report.html").read_text()
    assert "Compared only with recordings made the same way (the same sample_rate)" in page

    frame["score"] = scores_for(frame["label"], rng, 6.0)
    m, _ = report(tmp_path / "hears", frame, by=["site"], meta_columns=["site"], recording_metadata=True)
    assert m["stratified_auc"]["by"] == "site"
    assert m["stratified_auc"]["auc_ci"][0] > 0.75


def test_stratified_auc_says_why_without_the_confounder(tmp_path):
    rng = np.random.default_rng(17)
    frame = clustered(rng, 40, 1, separation=2.0)
    m, _ = report(tmp_path, frame)  # PRED written without sample_rate
    assert m["stratified_auc"]["auc"] is None
    assert "no sample_rate" in m["stratified_auc"]["reason"]


def test_without_recording_metadata_the_baseline_says_why(tmp_path):
    rng = np.random.default_rng(8)
    frame = pd.DataFrame({"label": rng.integers(0, 2, 40)})
    frame["score"] = scores_for(frame["label"], rng, 3.0)
    m, out = report(tmp_path, frame)
    assert m["shortcut_baseline"]["auc"] is None
    assert "none of the recording metadata columns" in m["not_computable"]["shortcut_baseline"]
    assert "Not computable" in (out / "report.html").read_text()


# ----------------------------------------------------------------------------- degenerate input

def _one_class(rng):
    return pd.DataFrame({"label": [1] * 12, "score": rng.random(12)})


def _no_labels(rng):
    return pd.DataFrame({"score": rng.random(12)})


def _all_errors(rng):
    return pd.DataFrame({"score": [np.nan] * 4, "label": [0, 1, 0, 1], "status": "error",
                         "error": ["cannot decode: not audio"] * 3 + ["file is empty"], "recording_id": None})


def _handful(rng):
    return pd.DataFrame({"label": [0, 1, 1], "score": [0.3, 0.6, 0.2]})


@pytest.mark.parametrize("make", [_one_class, _no_labels, _all_errors, _handful])
def test_degenerate_input_gives_a_report_that_says_why(tmp_path, make):
    frame = make(np.random.default_rng(9))
    m, out = report(tmp_path, frame, by=["participant"])
    written = strict_json(out / "metrics.json")  # no NaN or Infinity anywhere
    for key in REQUIRED:
        assert key in written
    for key in ("auc", "auc_ci", *M.RATES):
        if written[key] is None:
            assert key in written["not_computable"] or written["n"] == 0 or f"{key}_ci" in written["not_computable"] \
                or key.removesuffix("_ci") in written["not_computable"]
    assert written["auc"] is None or written["auc_ci"] is None  # too little to say
    assert (out / "report.html").stat().st_size > 1000
    assert "What could not be computed" in (out / "report.html").read_text()


def test_empty_pred_is_a_report_not_a_crash(tmp_path):
    pred = str(tmp_path / "pred")
    with claim_pred(pred)[1].writing(LOG_DIR):  # a PRED whose first run has not committed yet
        m = write_report(pred, str(tmp_path / "report"), n_boot=100)
    assert m["n"] == 0 and m["operations"]["recordings"] == 0 and m["operations"]["error_rate"] is None
    strict_json(tmp_path / "report" / "metrics.json")


@pytest.mark.parametrize("given, said", [("features", "is not a PRED table (the output of `cough featurize`)"),
                                          ("empty", "is not a PRED table (no Delta log)"),
                                          ("raw", "is not a PRED table (no Delta log)"),
                                          ("typo", "does not exist"), ("raw/a.wav", "is a file")])
def test_a_folder_that_is_not_pred_is_refused_by_name(tmp_path, capsys, given, said):
    """`cough report` took any folder as PRED (an OUT of featurize, the archive, an empty
    folder) and wrote a report of nothing with exit 0, which read as a success."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.wav").write_bytes(b"RIFF")
    with claim(str(tmp_path / "features"), "featurize").writing("manifest.json"):  # a featurize run's OUT
        assert main(["report", str(tmp_path / given), "--out", str(tmp_path / "report")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"PRED {tmp_path / given} {said}: give the --out of `cough score`" in err[0], err
    assert not (tmp_path / "report").exists()


def test_a_report_without_labels_says_on_stderr_how_to_give_them(tmp_path, capsys):
    """The first hour's `cough score` without --labels, then `cough report`: exit 0, no
    evaluation, and nothing but the HTML said why or what to do."""
    pred = write_pred(tmp_path / "pred", _no_labels(np.random.default_rng(1)))
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,label\n" + "".join(f"r{i}.mp3,{'positive' if i % 2 else 'negative'}\n" for i in range(12)))
    assert main(["report", str(pred), "--out", str(tmp_path / "a"), "--n-boot", "100"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cough report: warning: no scored recording in PRED has a true label")
    assert "--labels CSV" in err[0]
    assert main(["report", str(pred), "--out", str(tmp_path / "b"), "--n-boot", "100", "--labels", str(labels)]) == 0
    assert "true label" not in capsys.readouterr().err


def test_all_errors_report_counts_and_reasons(tmp_path):
    m, _ = report(tmp_path, _all_errors(None))
    ops = m["operations"]
    assert (ops["scored"], ops["errored"], ops["error_rate"]) == (0, 4, 1.0)
    assert ops["error_reasons"] == [{"reason": "cannot decode: not audio", "count": 3},
                                    {"reason": "file is empty", "count": 1}]
    assert m["n"] == 0
    assert any("could not be scored" in w for w in m["warnings"])


# ----------------------------------------------------------------------------- operations

def two_runs(rng, shift):
    old = pd.DataFrame({"score": rng.beta(2, 5, 300), "run_id": "20260101T000000Z-aaaaaa"})
    new = pd.DataFrame({"score": np.clip(rng.beta(2, 5, 200) + shift, 0, 1), "run_id": "20260102T000000Z-bbbbbb"})
    bad = pd.DataFrame({"score": [np.nan] * 10, "status": "error", "error": "cannot decode: truncated mp3",
                        "run_id": "20260102T000000Z-bbbbbb"})
    return pd.concat([old, new, bad], ignore_index=True)


def test_unlabelled_nightly_run_reports_counts_errors_and_drift(tmp_path):
    rng = np.random.default_rng(10)
    old_error = pd.DataFrame({"score": [np.nan], "status": "error", "error": "file is empty",
                              "run_id": "20260101T000000Z-aaaaaa"})
    frame = pd.concat([two_runs(rng, 0.3), old_error], ignore_index=True)
    m, out = report(tmp_path, frame, record_extra={"skipped": 300})
    ops = m["operations"]
    assert ops["latest_run"] == "20260102T000000Z-bbbbbb"
    assert (ops["scored"], ops["errored"], ops["skipped"]) == (200, 10, 300)
    assert ops["error_rate"] == pytest.approx(10 / 210)
    assert ops["error_reasons"] == [{"reason": "cannot decode: truncated mp3", "count": 10}]
    assert ops["error_reasons_all_runs"] == [{"reason": "cannot decode: truncated mp3", "count": 10},
                                             {"reason": "file is empty", "count": 1}]
    assert ops["drift"]["psi"] > M.PSI_WARN
    assert any("drifted" in w for w in m["warnings"])
    assert m["n"] == 0 and m["auc"] is None
    assert error_rate(str(tmp_path / "pred")) == pytest.approx(10 / 210)
    assert error_rate(str(tmp_path / "pred"), run_id="20260101T000000Z-aaaaaa") == pytest.approx(1 / 301)
    assert "score_distribution.png" in strict_json(out / "metrics.json")["plots"]


def test_no_drift_warning_when_runs_look_alike(tmp_path):
    rng = np.random.default_rng(11)
    m, _ = report(tmp_path, two_runs(rng, 0.0))
    assert m["operations"]["drift"]["psi"] < 0.1
    assert not any("drifted" in w for w in m["warnings"])


def test_threshold_comes_from_the_model_the_run_recorded(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text(json.dumps({"version": "m1", "threshold": 0.3}))
    frame = pd.DataFrame({"label": [0, 0, 1, 1], "score": [0.1, 0.35, 0.4, 0.9]})
    frame["predicted"] = (frame["score"] >= 0.3).astype(int)
    m, _ = report(tmp_path, frame, record_extra={"model": str(model)})
    assert m["threshold"] == 0.3 and "model.json" in m["threshold_source"]
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]
    assert not any("disagrees" in w for w in m["warnings"])
    m, _ = report(tmp_path / "flag", frame, record_extra={"model": str(model)}, threshold=0.5)
    assert m["confusion_matrix"] == [[2, 0], [1, 1]]
    assert any("disagrees" in w for w in m["warnings"])  # PRED's own calls were made at 0.3


@pytest.mark.parametrize("threshold", [float("nan"), 5])
def test_a_model_threshold_outside_0_1_is_not_used(tmp_path, threshold, caplog):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text(json.dumps({"version": "m1", "threshold": threshold}))
    frame = pd.DataFrame({"label": [0, 0, 1, 1], "score": [0.1, 0.35, 0.4, 0.9]})
    m, _ = report(tmp_path, frame, record_extra={"model": str(model)})  # NaN used to crash it, 5 was used
    assert m["threshold"] == 0.5 and m["threshold_source"] == "default"
    assert any("decision threshold" in r.getMessage() and "between 0 and 1" in r.getMessage() for r in caplog.records)
    assert any("cannot be left out" in w for w in m["warnings"])


def test_recordings_the_model_trained_on_are_left_out(tmp_path):
    rng = np.random.default_rng(13)
    n_people = 80
    frame = clustered(rng, n_people, 2)
    seen = [f"p{i}" for i in range(50)]  # train and val participants: the model memorised them
    memorised = frame["participant"].isin(seen)
    frame.loc[memorised, "score"] = np.where(frame.loc[memorised, "label"] == 1, 0.95, 0.05)
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text(json.dumps({"version": "m1", "threshold": 0.5, "splits": {
        "train": {"groups": seen[:40]}, "val": {"groups": seen[40:]}, "test": {"groups": [f"p{i}" for i in range(50, 60)]}}}))
    m, out = report(tmp_path, frame, record_extra={"model": str(model)})
    assert m["excluded_training"] == 100 and m["n"] == 60 and m["n_labelled_scored"] == 160
    assert m["auc_ci"][0] < 0.5 < m["auc_ci"][1]  # the unseen participants' scores are noise
    assert "left out" in (out / "report.html").read_text()
    m, _ = report(tmp_path / "all", frame, record_extra={"model": str(model)}, include_training=True)
    assert m["n"] == 160 and m["auc"] > 0.8
    assert any("optimistic" in w for w in m["warnings"])


def test_copies_of_training_recordings_and_contradicting_labels_are_left_out(tmp_path):
    """The same bytes under two names: one copy in a training participant, the other under its own
    default participant (one per file), must not be evaluated; copies labelled both ways neither."""
    rng = np.random.default_rng(21)
    n = 80
    frame = pd.DataFrame({"label": rng.integers(0, 2, n), "participant": [f"g{i}" for i in range(n)],
                          "recording_id": [f"{i:032x}" for i in range(n)]})
    frame["score"] = scores_for(frame["label"], rng, 0.0)
    seen = [f"g{i}" for i in range(20)]
    copies = frame.iloc[:10].assign(participant=[f"copy{i}" for i in range(10)])  # copies of training recordings
    clash = frame.iloc[40:45].assign(participant=[f"clash{i}" for i in range(5)], label=1 - frame.label.iloc[40:45])
    frame = pd.concat([frame, copies, clash], ignore_index=True)
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text(json.dumps({"version": "m1", "threshold": 0.5,
                                                  "splits": {"train": {"groups": seen}, "val": {"groups": []}}}))
    m, _ = report(tmp_path, frame, record_extra={"model": str(model)})
    assert m["excluded_conflicting_labels"] == 5
    assert m["n"] == n - 20 - 5  # neither the training recordings nor their copies, nor the clashes
    assert any("contradicting labels" in w for w in m["warnings"])


# ----------------------------------------------------------------------------- the files

def test_report_files_are_self_contained_and_a_rerun_replaces_them(tmp_path, capsys):
    rng = np.random.default_rng(12)
    frame = confounded(rng, n_groups=40)
    frame["score"] = scores_for(frame["label"], rng, 3.0)
    pred = write_pred(tmp_path / "pred", frame, meta_columns=["site"], recording_metadata=True)
    out = tmp_path / "report"
    rc = main(["report", str(pred), "--out", str(out), "--by", "site", "--n-boot", "100", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == len(frame) and summary["report"] == str(out)
    written = strict_json(out / "metrics.json")
    assert (written["kind"], written["schema_version"]) == ("report", 1)  # the commit marker
    assert Metrics.from_dict(written).to_dict() == written  # every field typed or carried
    page = (out / "report.html").read_text()
    for name in written["plots"]:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        import base64

        assert base64.b64encode(data).decode()[:200] in page  # embedded, not linked
    assert {"roc.png", "calibration.png", "confusion_matrix.png", "score_by_class.png",
            "subgroups_site.png"} <= set(written["plots"])
    assert "src=\"http" not in page and "<script" not in page

    (out / "notes.txt").write_text("a reader's notes")  # not ours: a rerun leaves it alone
    assert main(["report", str(pred), "--out", str(out), "--n-boot", "100"]) == 0
    again = strict_json(out / "metrics.json")
    assert not (out / "subgroups_site.png").exists() and "subgroups_site.png" not in again["plots"]
    assert (out / "notes.txt").read_text() == "a reader's notes"
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]  # no temporary files left


def test_metadata_text_is_rendered_literally_in_plots_and_escaped_in_html(tmp_path):
    rng = np.random.default_rng(17)
    frame = clustered(rng, 40, 2)
    odd = ["$5-$10$", "<script>alert(1)</script>", r"$\frac{1}{0}$", "plain"]
    frame["$income$"] = [odd[i % len(odd)] for i in range(len(frame))]
    m, out = report(tmp_path, frame, meta_columns=["$income$"], by=["$income$"])  # mathtext made it crash
    assert set(m["by_subgroup"]["$income$"]["levels"]) == set(odd)
    assert (out / "subgroups__income_.png").stat().st_size > 0
    html = (out / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_report_shows_sampled_recordings_along_time_and_lists_rejected_and_failed_files(tmp_path):
    import soundfile as sf

    from cough.synth import cough_signal

    rng = np.random.default_rng(3)
    raw = tmp_path / "raw"
    raw.mkdir()
    paths = []
    for i in range(8):  # real files: the strips show their spectrograms
        y = cough_signal(np.random.default_rng(i), positive=bool(i % 2), sample_rate=16000, duration_s=4.0)
        sf.write(raw / f"r{i}.wav", y, 16000)
        paths.append(str(raw / f"r{i}.wav"))
    frame = pd.DataFrame({"path": paths + [str(raw / "silent.wav"), str(raw / "broken.mp3")],
                          "score": list(rng.uniform(size=8)) + [np.nan, np.nan],
                          "label": [i % 2 for i in range(8)] + [0, 1],
                          "status": ["ok"] * 8 + ["rejected", "error"],
                          "error": [None] * 8 + ["no cough detected (p=0.00)", "file is empty"]})
    pred = tmp_path / "pred"
    write_pred(pred, frame)
    out = tmp_path / "report"
    write_report(str(pred), str(out), n_boot=N_BOOT)
    page = (out / "report.html").read_text()
    assert (out / "gallery.png").stat().st_size > 10_000 and "Spectrogram strips of sampled recordings" in page
    assert "A look at some recordings" in page
    assert "Rejected and failed files" in page
    assert re.search(r"silent\.wav</td><td[^>]*>no cough detected \(p=0\.00\)</td>", page)
    assert re.search(r"broken\.mp3</td><td[^>]*>file is empty</td>", page)
    assert f"deltalake.DeltaTable(&#x27;{pred}&#x27;)" in page  # the query that lists them all
    ops = json.loads((out / "metrics.json").read_text())["operations"]["problems"]
    assert (ops["n_rejected"], ops["n_errors"]) == (1, 1)
