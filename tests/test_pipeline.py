"""The four jobs end to end, every location given as a file:// URI (what s3:// and gs://
users go through: pyarrow filesystems, no local-path shortcuts)."""

from __future__ import annotations

import json

from deltalake import DeltaTable
import pytest

from cough.cli import main

from .conftest import SAMPLE

pytestmark = pytest.mark.slow


def test_featurize_train_score_report_with_file_uris(tmp_path, ray_local, capsys):
    uri = lambda *parts: "file://" + str(tmp_path.joinpath(*parts))  # noqa: E731
    raw, labels = f"file://{SAMPLE / 'raw'}", f"file://{SAMPLE / 'labels.csv'}"

    assert main(["featurize", raw, "--labels", labels, "--out", uri("features")]) == 0
    assert main(["train", uri("features"), "--out", uri("model"), "--arch", "pooled", "--epochs", "1",
                 "--workers", "1", "--json"]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["score", raw, "--labels", labels, "--model", uri("model"), "--out", uri("pred"), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["report", uri("pred"), "--out", uri("report"), "--by", "site", "--include-training"]) == 0

    model = json.loads((tmp_path / "model" / "model.json").read_text())
    assert (tmp_path / "model" / model["weights"]).is_file() and trained
    # the AUCs come with the number of participants they rest on
    assert (trained["val_participants"], trained["test_participants"]) == tuple(
        len(model["splits"][name]["groups"]) for name in ("val", "test"))
    assert model["featurizer_version"] == json.loads((tmp_path / "features" / "manifest.json").read_text())[
        "featurizer_version"]
    assert scored["scored"] == 60 == DeltaTable(str(tmp_path / "pred")).to_pyarrow_table().num_rows
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    # the one recording the detector rejects has no score (tests/helpers.SAMPLE_REJECTED)
    assert metrics["n"] == 59 and sum(map(sum, metrics["confusion_matrix"])) == 59
    assert "site" in metrics["by_subgroup"] and (tmp_path / "report" / "report.html").is_file()
