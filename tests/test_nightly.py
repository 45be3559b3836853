"""The nightly wrapper: incremental score, the night's report next to PRED, error-rate alarm."""

from __future__ import annotations

import json
import shutil

import pytest

from cough.nightly import NightSettings
from cough.errors import CoughError
from cough.nightly import REPORTS_DIR, nightly
from cough.tables.maintain import MaintainSettings

from .conftest import SAMPLE
from .helpers import write_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("nightly-model") / "model")


def test_a_night_scores_reports_and_raises_the_alarm_on_errors(tmp_path, ray_local, model):
    archive, pred = tmp_path / "incoming", tmp_path / "pred"
    archive.mkdir()
    for f in sorted((SAMPLE / "raw").iterdir())[:6]:
        shutil.copy(f, archive)

    first = nightly(str(archive), str(model), str(pred), NightSettings(max_error_rate=0.05)).to_dict()
    assert (first["scored"], first["errors"], first["error_rate"]) == (6, 0, 0.0)
    report = pred / REPORTS_DIR / first["run_id"]
    assert (report / "report.html").is_file()
    assert json.loads((report / "metrics.json").read_text())["operations"]["scored"] == 6

    quiet = nightly(str(archive), str(model), str(pred)).to_dict()
    assert quiet["scored"] == 0 and quiet["report"] is None  # nothing new: nothing to report

    shutil.copy(sorted((SAMPLE / "raw").iterdir())[7], archive)  # tomorrow: one more, and maintenance
    kept = nightly(str(archive), str(model), str(pred), NightSettings(maintain=MaintainSettings())).to_dict()
    assert kept["maintained"]["table"]["after"]["files"] == 1 and kept["maintained"]["ledger"]["checkpoint"]
    tables = json.loads((pred / REPORTS_DIR / kept["run_id"] / "metrics.json").read_text())["operations"]["tables"]
    assert tables["table"] == kept["maintained"]["table"]["after"]  # the night's report shows the health after it

    for i in range(2):
        (archive / f"broken-{i}.mp3").write_bytes(b"ID3" + bytes(200 + i))
    shutil.copy(sorted((SAMPLE / "raw").iterdir())[10], archive)
    with pytest.raises(CoughError, match=r"66\.7% of tonight's 3 recordings failed"):
        nightly(str(archive), str(model), str(pred), NightSettings(max_error_rate=0.5))
    reports = sorted((pred / REPORTS_DIR).iterdir())
    assert len(reports) == 3 and (reports[-1] / "report.html").is_file()  # the reason is there to read
