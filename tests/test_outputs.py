"""Outputs own their folders: every job writes only into a location that is absent, empty or
its own earlier output; anything else is refused with exit 2 before any work (before Ray
starts), naming what is there, and the user's files stay byte for byte."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from cough.cli import main as cli

from .conftest import SAMPLE
from .helpers import write_model


def snapshot(root: Path) -> dict:
    if root.is_file():
        return {"": hashlib.sha1(root.read_bytes()).hexdigest()}
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_model(tmp_path_factory.mktemp("outputs") / "model")


@pytest.fixture
def users_folder(tmp_path) -> Path:
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.txt").write_text("three years of work")
    (folder / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return folder


def _refused(args: list[str], capsys, *needles: str) -> str:
    import ray

    assert cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and all(n in err[-1] for n in needles), err
    assert not ray.is_initialized()  # refused before any work
    return err[-1]


def _jobs(source: Path, model: Path, out: Path) -> dict:
    return {
        "featurize": ["featurize", str(source), "--out", str(out)],
        "score": ["score", str(source), "--model", str(model), "--out", str(out)],
    }


@pytest.mark.parametrize("job", ["featurize", "score"])
def test_a_folder_of_someone_elses_files_is_refused_and_left_byte_for_byte(job, model, users_folder, capsys,
                                                                           fresh_ray):
    before = snapshot(users_folder)
    message = _refused(_jobs(SAMPLE / "raw", model, users_folder)[job], capsys, str(users_folder), "thesis.txt")
    assert "did not write" in message and snapshot(users_folder) == before


@pytest.mark.parametrize("job", ["featurize", "score"])
def test_an_out_that_is_a_file_is_refused_and_the_file_untouched(job, model, tmp_path, capsys, fresh_ray):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    _refused(_jobs(SAMPLE / "raw", model, target)[job], capsys, "is a file")
    assert target.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]


@pytest.mark.parametrize("job", ["featurize", "score"])
@pytest.mark.parametrize("where", ["equal", "inside", "containing"])
def test_an_out_that_is_inside_or_contains_source_is_refused(job, where, model, sample_archive, capsys, fresh_ray):
    raw = sample_archive / "raw"
    before = snapshot(sample_archive)
    out = {"equal": raw, "inside": raw / "features", "containing": sample_archive}[where]
    _refused(_jobs(raw, model, out)[job], capsys, "SOURCE")
    assert snapshot(sample_archive) == before


def test_score_into_its_model_is_refused(model, tmp_path, capsys, fresh_ray):
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    before = snapshot(copy)
    _refused(["score", str(SAMPLE / "raw"), "--model", str(copy), "--out", str(copy)], capsys, "MODEL")
    _refused(["score", str(SAMPLE / "raw"), "--model", str(copy), "--out", str(copy / "pred")], capsys, "MODEL")
    assert snapshot(copy) == before


def _a_pred(tmp_path: Path) -> Path:
    """A small PRED as `cough score` leaves it: its owner marker and a Delta table."""
    import pandas as pd

    from cough.tables.storage import OWNER_FILE, owner_record

    from .helpers import write_pred

    pred = write_pred(tmp_path / "pred", pd.DataFrame({"score": [0.2, 0.8, 0.4, 0.9], "label": [0, 1, 0, 1]}))
    (pred / OWNER_FILE).write_text(json.dumps(owner_record("score")))
    return pred


def test_report_into_its_pred_or_someone_elses_folder_is_refused(tmp_path, users_folder, capsys):
    pred = _a_pred(tmp_path)
    before = snapshot(pred)
    _refused(["report", str(pred), "--out", str(pred), "--n-boot", "100"], capsys, "PRED")
    _refused(["report", str(pred), "--out", str(pred / "report"), "--n-boot", "100"], capsys, "inside PRED")
    _refused(["report", str(pred), "--out", str(tmp_path), "--n-boot", "100"], capsys, "contains PRED")
    assert snapshot(pred) == before
    mine = snapshot(users_folder)
    _refused(["report", str(pred), "--out", str(users_folder), "--n-boot", "100"], capsys, "thesis.txt")
    assert snapshot(users_folder) == mine


def test_report_into_another_jobs_output_names_the_job(tmp_path, capsys):
    pred = _a_pred(tmp_path)
    out = _featurize_like(tmp_path)
    before = snapshot(out)
    _refused(["report", str(pred), "--out", str(out), "--n-boot", "100"], capsys, "output of `cough featurize`")
    assert snapshot(out) == before


def _featurize_like(tmp_path: Path) -> Path:
    from cough.tables.storage import OWNER_FILE, owner_record

    out = tmp_path / "features"
    out.mkdir()
    (out / OWNER_FILE).write_text(json.dumps(owner_record("featurize")))
    (out / "manifest.json").write_text("{}")
    return out


def test_a_report_inside_a_hidden_folder_of_pred_is_allowed(tmp_path):
    """What `cough nightly` does: PRED/_reports/<run_id>, which Delta readers skip."""
    from cough.report import write_report

    pred = _a_pred(tmp_path)
    m = write_report(str(pred), str(pred / "_reports" / "r1"), n_boot=100)
    assert m["n"] == 4 and (pred / "_reports" / "r1" / "metrics.json").is_file()


def test_replacing_an_earlier_output_is_said_in_the_help_and_the_log(tmp_path, caplog):
    from cough.cli import build_parser
    from cough.report import write_report

    jobs = build_parser()._subparsers._group_actions[0].choices
    for job in ("featurize", "train", "score", "report"):
        text = " ".join(jobs[job].format_help().split())
        assert "refused" in text and ("replaces" in text or "extended" in text), job
    pred = _a_pred(tmp_path)
    write_report(str(pred), str(tmp_path / "r"), n_boot=100)
    with caplog.at_level("INFO", logger="cough"):
        write_report(str(pred), str(tmp_path / "r"), n_boot=100)
    assert any("replaces it" in r.getMessage() for r in caplog.records)
