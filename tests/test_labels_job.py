"""cough labels: a labels CSV from an archive's sidecar files (cough.sidecars), and the
matching rule that keeps a labels CSV from labelling the wrong file. No Ray."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from cough.cli import main
from cough.errors import UsageError
from cough.sidecars import LabelsSettings, labels_csv
from cough.tables.archive import Selection, listing_table
from cough.tables.labels import load_labels

from .helpers import cough_wav, participant_tree

STUDY = dict(sidecar="metadata.json", label_field="covid_status",
             positive=("positive_mild", "positive_moderate", "positive_asymp"), negative=("healthy",))


def _rows(path) -> list[dict]:
    return list(csv.DictReader(open(path)))


def test_a_participant_folder_tree_gives_every_file_its_folders_label_and_participant(tmp_path):
    src = participant_tree(tmp_path / "study", [1, 0, 1, 0])
    summary = labels_csv(str(src), str(tmp_path / "labels.csv"), LabelsSettings(**STUDY))
    assert (summary.files, summary.positive, summary.negative, summary.participants) == (16, 8, 8, 4)
    rows = {r["filename"]: r for r in _rows(tmp_path / "labels.csv")}
    assert rows["p 00/cough-1.wav"]["label"] == "positive" and rows["p 01/counting.wav"]["label"] == "negative"
    assert rows["p 02/breathing.wav"]["participant"] == "p 02"
    assert rows["p 00/cough-1.wav"]["age"] == "20" and "covid_status" not in rows["p 00/cough-1.wav"]
    # a field named like a column cough writes is kept under another name, and said
    assert rows["p 00/cough-1.wav"]["sidecar_score"] == "3" and summary.renamed_columns == {"score": "sidecar_score"}
    # the CSV is --labels for the other jobs: paths, matched by path, the same labels back
    index = load_labels(str(tmp_path / "labels.csv"), str(src))
    assert index.paths_only and index.lookup(f"{src}/p 03/cough-2.wav")["label"] == 0


def test_a_coughvid_like_tree_reads_one_sidecar_per_recording_and_counts_what_it_left_unlabelled(tmp_path):
    src = tmp_path / "coughvid"
    src.mkdir()
    statuses = ["COVID-19", "healthy", "symptomatic", "healthy", "", None]
    for i, status in enumerate(statuses):
        cough_wav(src / f"id{i}.wav", seed=i)
        meta = {"uuid": f"id{i}", "age": str(30 + i), "subject": f"s{i // 2}"}
        if status is not None:
            meta["status"] = status
        (src / f"id{i}.json").write_text(json.dumps(meta))
    cough_wav(src / "orphan.wav")  # no sidecar
    (src / "broken.wav").write_bytes(b"x")
    (src / "broken.json").write_text("{not json")
    settings = LabelsSettings(sidecar="{stem}.json", label_field="status", positive=("COVID-19", "symptomatic"),
                              negative=("healthy",), participant_field="subject")
    summary = labels_csv(str(src), str(tmp_path / "labels.csv"), settings).to_dict()
    assert {k: summary[k] for k in ("files", "positive", "negative", "unlabelled", "no_sidecar",
                                    "unreadable_sidecar", "no_label_field", "unmapped")} == \
        {"files": 8, "positive": 2, "negative": 2, "unlabelled": 4, "no_sidecar": 1, "unreadable_sidecar": 1,
         "no_label_field": 1, "unmapped": 1}
    assert summary["unmapped_values"] == {"": 1}
    rows = {r["filename"]: r for r in _rows(tmp_path / "labels.csv")}
    assert rows["id2.wav"]["participant"] == "s1" and rows["orphan.wav"]["participant"] == "orphan.wav"
    assert rows["id0.wav"]["uuid"] == "id0" and rows["id4.wav"]["label"] == ""


def test_the_labels_job_refuses_an_existing_out_and_bad_mappings_before_reading(tmp_path, capsys):
    src = participant_tree(tmp_path / "study", [1, 0])
    (tmp_path / "labels.csv").write_text("mine")
    args = ["labels", str(src), "--sidecar", "metadata.json", "--label-field", "covid_status", "--out"]
    assert main([*args, str(tmp_path / "labels.csv")]) == 2
    assert "exists" in capsys.readouterr().err and (tmp_path / "labels.csv").read_text() == "mine"
    assert main([*args, str(tmp_path / "new.csv"), "--positive", "x", "--negative", "x"]) == 2
    assert "--positive and --negative share the value(s) 'x'" in capsys.readouterr().err
    assert main([*args, str(tmp_path / "new.csv"), "--positive", "x"]) == 2
    assert "give both --positive and --negative" in capsys.readouterr().err


def test_a_csv_of_paths_for_some_files_never_labels_the_others_by_their_name(tmp_path):
    """The defect: a CSV of the 130 negative rows labelled the 18 positive files negative
    through another folder's row of the same name."""
    src = participant_tree(tmp_path / "study", [0, 0, 1], sidecar=False)
    csv_path = tmp_path / "negatives.csv"
    csv_path.write_text("filename,label\n" + "".join(f"p {i:02d}/{n},negative\n" for i in (0, 1)
                                                      for n in ("cough-1.wav", "cough-2.wav", "counting.wav",
                                                                "breathing.wav")))
    listing = listing_table(str(src), load_labels(str(csv_path), str(src)))
    labels = dict(zip(listing.rows.column("path").to_pylist(), listing.rows.column("label").to_pylist()))
    assert [labels[f"{src}/p 02/{n}"] for n in ("cough-1.wav", "counting.wav")] == [None, None]
    assert listing.counts.to_dict()["labelled_by_path"] == 8 and listing.counts.unlabelled == 4


def test_a_file_name_that_several_folders_hold_is_refused_with_an_example(tmp_path):
    src = participant_tree(tmp_path / "study", [0, 1], sidecar=False)
    csv_path = tmp_path / "names.csv"
    csv_path.write_text("filename,label\ncough-1.wav,positive\ncounting.wav,negative\n")
    listing = listing_table(str(src), load_labels(str(csv_path), str(src)))
    with pytest.raises(UsageError, match=r"2 of those names belong to several files of SOURCE \(e.g. 'cough-1.wav', "
                                         r"2 files\): give their paths relative to SOURCE"):
        listing.check(str(csv_path), None)
    shutil.rmtree(src / "p 01")  # unique again: matched by name
    listing = listing_table(str(src), load_labels(str(csv_path), str(src)))
    assert listing.check(str(csv_path), None) == [] and listing.counts.by_name == 2


@pytest.mark.parametrize("pattern, participants, warned", [
    (r"^([^/]+)/", 6, None),                     # the folder: one participant per folder
    (r"^(cough)-\d+$", 1, "gives 1 participant(s) for 12 labelled files"),  # the stem: a kind of recording
    (r"^(nomatch)/", 12, "matched none of the 12 labelled files"),
])
def test_the_group_pattern_reads_the_path_relative_to_source_and_warns_when_it_cannot_be_right(
        tmp_path, pattern, participants, warned):
    src = participant_tree(tmp_path / "study", [0, 1, 0, 1, 0, 1], sidecar=False)
    csv_path = tmp_path / "labels.csv"
    labels_csv(str(src), str(csv_path), LabelsSettings(sidecar="none.json", label_field="x"))  # a list of the files
    rows = _rows(csv_path)
    with open(csv_path, "w", newline="") as f:  # label the coughs, by path, without participants
        f.write("filename,label\n" + "".join(f"{r['filename']},1\n" for r in rows if "cough" in r["filename"]))
    listing = listing_table(str(src), load_labels(str(csv_path), str(src), group_pattern=pattern))
    assert listing.counts.to_dict()["participants"] == participants
    warnings = listing.check(str(csv_path), pattern)
    assert (warned is None and warnings == []) or (warned and warned in warnings[0])


def test_a_group_pattern_needs_exactly_one_capture_group(tmp_path, capsys):
    src = tmp_path / "raw"
    src.mkdir()
    sf.write(src / "a.wav", np.zeros(100, np.float32), 8000)
    for pattern in (r"^[^/]+/", r"^([^/]+)/(\d+)"):
        assert main(["featurize", str(src), "--out", str(tmp_path / "out"), "--group-pattern", pattern,
                     "--dry-run"]) == 2
        assert "needs exactly one, the participant" in capsys.readouterr().err


def test_include_and_exclude_choose_the_files_a_job_reads(tmp_path):
    src = participant_tree(tmp_path / "study", [0, 1], sidecar=False)
    listing = listing_table(str(src), load_labels(None, str(src)), selection=Selection(include=("*/cough-*.wav",)))
    assert listing.rows.num_rows == 4 and listing.excluded == 4
