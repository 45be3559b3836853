"""cough train --cv K: every participant scored once, out of fold; the threshold chosen on
those scores; a final model on everyone; the report evaluates all participants."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cough.cli import main as cli
from cough.train.crossval import grouped_folds
from cough.errors import CoughError
from cough.report import read_predictions, write_report
from cough.evaluation.metrics import choose_threshold
from cough.train.trainset import read_index, read_manifest, recordings


def test_folds_put_each_participant_in_one_fold_with_both_classes():
    rng = np.random.default_rng(0)
    recs = pd.DataFrame({"participant": np.repeat([f"p{i}" for i in range(16)], 3)})
    recs["label"] = recs["participant"].map({f"p{i}": int(rng.random() < 0.4) for i in range(16)})
    recs.loc[recs["participant"] == "p0", "label"], recs.loc[recs["participant"] == "p1", "label"] = 0, 1
    folds = grouped_folds(recs, k=4, seed=1)
    assert sorted(g for f in folds for g in f) == sorted(recs["participant"].unique())
    assert all(recs[recs["participant"].isin(f)]["label"].nunique() == 2 for f in folds)
    assert folds == grouped_folds(recs, k=4, seed=1)  # deterministic for a seed
    with pytest.raises(CoughError, match="use a smaller K"):
        grouped_folds(recs.assign(label=[1] * 3 + [0] * 45), k=2)


@pytest.mark.slow
def test_cv_scores_every_participant_out_of_fold_and_the_report_keeps_them_all(sample_features, tmp_path, capsys):
    model, pred = tmp_path / "model", tmp_path / "oof"
    assert cli(["train", str(sample_features), "--out", str(model), "--cv", "2", "--epochs", "1",
                "--num-cpus", "2", "--cv-pred", str(pred), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    meta = json.loads((model / "model.json").read_text())
    recs, _ = recordings(read_index(read_manifest(str(sample_features))))

    folds = [set(f["test_groups"]) for f in meta["cv"]["folds"]]
    assert len(folds) == 2 and set().union(*folds) == set(recs["participant"])
    assert sum(map(len, folds)) == recs["participant"].nunique()  # each participant in one fold

    rows = read_predictions(str(pred))
    assert len(rows) == len(recs) and rows["recording_id"].is_unique
    assert set(rows["recording_id"]) == set(recs["recording_id"])
    truth = recs.set_index("recording_id")["label"]
    assert (rows.set_index("recording_id")["label"] == truth.reindex(rows["recording_id"]).to_numpy()).all()
    # the final model's threshold is chosen on the out-of-fold scores, and it predicts with it
    assert meta["threshold"] == pytest.approx(choose_threshold(rows["label"], rows["score"]))
    assert summary["threshold"] == pytest.approx(meta["threshold"], abs=1e-4)
    assert ((rows["score"] >= meta["threshold"]).astype(int) == rows["predicted"]).all()
    # the final model trained on everyone: train + val cover every participant
    assert set(meta["splits"]["train"]["groups"]) | set(meta["splits"]["val"]["groups"]) == set(recs["participant"])

    m = write_report(str(pred), str(tmp_path / "report"), n_boot=200)
    assert m["n"] == len(recs) and m["excluded_training"] == 0  # nobody left out: all were out of fold
    assert any("out-of-fold predictions of 2-fold cross-validation" in w for w in m["warnings"])
    assert m["auc"] == pytest.approx(summary["out_of_fold_auc"])
