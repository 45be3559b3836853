"""Labels, participants and metadata (cough.tables.labels): the labels CSV as users write it,
the label spellings, and how a recording's path finds its row. Real CSVs in tmp_path.

Matching by basename and --group-pattern are about to become stricter (a basename matches only
when it is unique in SOURCE; the pattern applies to the path relative to SOURCE with one capture
group): only the cases that stay true under both rules are pinned here."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cough.errors import CoughError, UsageError
from cough.tables.labels import (FOLDER_LABELS, INPUT_COLUMNS, LabelIndex, compile_group_pattern, load_labels,
                                 parse_label, reserved_columns)


def _csv(tmp_path: Path, text: str, name: str = "labels.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _pick(found: dict, keys: list[str]) -> dict:
    """The ``keys`` of a lookup (each must be there): a lookup may hold more columns."""
    return {k: found[k] for k in keys}


def _src(tmp_path: Path, *files: str) -> str:
    """SOURCE, holding ``files`` (paths relative to it) as real files."""
    src = tmp_path / "raw"
    src.mkdir(exist_ok=True)
    for rel in files:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(b"RIFF")
    return str(src)


# ------------------------------------------------------------------ parse_label


@pytest.mark.parametrize("value", ["positive", "Positive", " POSITIVE ", "pos", "1", 1, 1.0, "1.0", "true", "True",
                                   True, "yes", "covid", "COVID-19"])
def test_positive_spellings(value):
    assert parse_label(value) == 1


@pytest.mark.parametrize("value", ["negative", "Negative", "neg", "0", 0, 0.0, "0.0", "false", False, "no",
                                   "healthy", " Healthy\t"])
def test_negative_spellings(value):
    assert parse_label(value) == 0


@pytest.mark.parametrize("value", [None, float("nan"), "", "   "])
def test_a_missing_label_is_none(value):
    assert parse_label(value) is None


@pytest.mark.parametrize("value", ["maybe", "2", 2, "-1", "positive?", "1.5", "n/a"])
def test_any_other_label_is_an_error_that_shows_it_and_the_accepted_spellings(value):
    with pytest.raises(ValueError) as err:
        parse_label(value)
    assert repr(value) in str(err.value)
    assert "positive/negative" in str(err.value) and "1/0" in str(err.value)


# ------------------------------------------------------------------ load_labels


def test_no_csv_gives_an_empty_index(tmp_path):
    index = load_labels(None, _src(tmp_path))
    assert (index.by_relpath, index.metadata_columns, index.paths_only) == ({}, [], False)
    assert _pick(index.lookup(f"{tmp_path}/raw/a.wav"), ["label", "participant"]) == \
        {"label": None, "participant": "a.wav"}


def test_filenames_as_paths_relative_to_source_match_by_path_only(tmp_path):
    src = _src(tmp_path, "top.wav", "2026/11/deep.wav", "2026/11/other.wav", "sub/only-here.wav")
    csv = _csv(tmp_path, "filename,label\n"
                         "top.wav,positive\n"
                         "2026/11/deep.wav,negative\n"
                         "only-here.wav,1\n")
    index = load_labels(csv, src)
    assert index.paths_only  # one path in the CSV: every row is a path
    assert index.resolve(f"{src}/top.wav").label_from == "path" and index.lookup(f"{src}/top.wav")["label"] == 1
    assert index.lookup(f"{src}/2026/11/deep.wav")["label"] == 0
    assert index.lookup(f"{src}/2026/11/other.wav")["label"] is None  # not in the CSV
    # a bare name in a CSV of paths is the path of a file at SOURCE's top level, nothing else
    assert index.resolve(f"{src}/sub/only-here.wav").label_from is None


def test_filenames_as_bare_names_match_each_file_by_its_name(tmp_path):
    src = _src(tmp_path, "top.wav", "2026/11/deep.wav", "sub/only-here.wav")
    csv = _csv(tmp_path, "filename,label\ntop.wav,positive\ndeep.wav,negative\nonly-here.wav,1\n")
    index = load_labels(csv, src)
    assert not index.paths_only
    assert [index.resolve(f"{src}/{p}").label_from for p in ("top.wav", "2026/11/deep.wav", "sub/only-here.wav")] == \
        ["name", "name", "name"]
    assert index.lookup(f"{src}/2026/11/deep.wav")["label"] == 0


def test_a_path_match_wins_when_two_folders_hold_the_same_name(tmp_path):
    src = _src(tmp_path, "site-a/cough.wav", "site-b/cough.wav")
    csv = _csv(tmp_path, "filename,label,participant\n"
                         "site-a/cough.wav,positive,pa\n"
                         "site-b/cough.wav,negative,pb\n")
    index = load_labels(csv, src)
    assert _pick(index.lookup(f"{src}/site-a/cough.wav"), ["label", "participant"]) == {"label": 1, "participant": "pa"}
    assert _pick(index.lookup(f"{src}/site-b/cough.wav"), ["label", "participant"]) == {"label": 0, "participant": "pb"}


def test_an_absolute_filename_inside_source_is_accepted(tmp_path):
    src = _src(tmp_path)
    index = load_labels(_csv(tmp_path, f"filename,label\n{src}/sub/a.wav,pos\n"), src)
    assert index.lookup(f"{src}/sub/a.wav")["label"] == 1


@pytest.mark.parametrize("name", ["../elsewhere.wav", "sub/../../x.wav", "/etc/passwd"])
def test_a_filename_outside_source_is_refused_with_its_line(tmp_path, name):
    src = _src(tmp_path)
    csv = _csv(tmp_path, f"filename,label\nok.wav,1\n{name},0\n")
    with pytest.raises(CoughError, match=f"line 3: filename '{name}' points outside SOURCE") as err:
        load_labels(csv, src)
    assert err.value.exit_code == 1


def test_participant_column_and_metadata_columns(tmp_path):
    src = _src(tmp_path)
    csv = _csv(tmp_path, " filename , label , participant , site , age\n"  # names are trimmed
                         "a.wav,positive,p1,clinic,40\n"
                         "b.wav,negative,,NA,\n")
    index = load_labels(csv, src)
    assert index.metadata_columns == ["site", "age"]
    assert _pick(index.lookup(f"{src}/a.wav"), ["label", "participant", "site", "age"]) == \
        {"label": 1, "participant": "p1", "site": "clinic", "age": "40"}
    # an empty cell is None (a participant of its own: the file); "NA" is text, kept as written
    assert _pick(index.lookup(f"{src}/b.wav"), ["label", "participant", "site", "age"]) == \
        {"label": 0, "participant": "b.wav", "site": "NA", "age": None}
    # a file the CSV does not name still has every metadata column, empty
    assert _pick(index.lookup(f"{src}/c.wav"), ["label", "participant", "site", "age"]) == \
        {"label": None, "participant": "c.wav", "site": None, "age": None}


def test_group_is_read_as_participant(tmp_path):
    src = _src(tmp_path)
    index = load_labels(_csv(tmp_path, "filename,label,group\na.wav,1,g7\n"), src)
    assert index.metadata_columns == []
    assert _pick(index.lookup(f"{src}/a.wav"), ["label", "participant"]) == {"label": 1, "participant": "g7"}


def test_group_and_participant_together_are_refused(tmp_path):
    csv = _csv(tmp_path, "filename,label,group,participant\na.wav,1,g,p\n")
    with pytest.raises(UsageError, match="both 'participant' and 'group'") as err:
        load_labels(csv, _src(tmp_path))
    assert err.value.exit_code == 2


@pytest.mark.parametrize("column", ["score", "run_id", "path", "recording_id", "status", "window_index",
                                    "sample_rate", "threshold", "file_size"])
def test_a_reserved_column_is_refused_with_exit_2_naming_it(tmp_path, column):
    csv = _csv(tmp_path, f"filename,label,site,{column}\na.wav,1,x,y\n")
    with pytest.raises(UsageError) as err:
        load_labels(csv, _src(tmp_path))
    assert err.value.exit_code == 2
    assert f"column(s) {column!r} would clash" in str(err.value)
    assert "'site'" not in str(err.value)


def test_a_repeated_column_is_refused(tmp_path):
    csv = _csv(tmp_path, "filename,label,site,site \na.wav,1,x,y\n")
    with pytest.raises(UsageError, match=r"column\(s\) 'site' appear more than once") as err:
        load_labels(csv, _src(tmp_path))
    assert err.value.exit_code == 2


def test_a_csv_without_filename_or_label_is_refused(tmp_path):
    with pytest.raises(CoughError, match=r"lacks column\(s\) \['label'\]") as err:
        load_labels(_csv(tmp_path, "filename,diagnosis\na.wav,1\n"), _src(tmp_path))
    assert err.value.exit_code == 1


def test_a_missing_csv_does_not_exist(tmp_path):
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(CoughError, match=f"labels CSV {missing} does not exist") as err:
        load_labels(missing, _src(tmp_path))
    assert err.value.exit_code == 1


def test_a_bad_label_names_its_line(tmp_path):
    csv = _csv(tmp_path, "filename,label\na.wav,positive\nb.wav,maybe\n")
    with pytest.raises(CoughError, match=r"line 3: label 'maybe' is not one of") as err:
        load_labels(csv, _src(tmp_path))
    assert err.value.exit_code == 1


def test_a_missing_label_is_kept_as_none(tmp_path):
    src = _src(tmp_path)
    index = load_labels(_csv(tmp_path, "filename,label,participant\na.wav,,p1\n"), src)
    assert _pick(index.lookup(f"{src}/a.wav"), ["label", "participant"]) == {"label": None, "participant": "p1"}


def test_identical_repeated_rows_are_used_once_with_one_warning(tmp_path, caplog):
    src = _src(tmp_path)
    csv = _csv(tmp_path, "filename,label,participant\na.wav,1,p1\nb.wav,0,p2\na.wav,1,p1\n./a.wav,pos,p1\n")
    with caplog.at_level(logging.WARNING, logger="cough.labels"):
        index = load_labels(csv, src)
    assert sorted(index.by_relpath) == ["a.wav", "b.wav"]
    assert _pick(index.lookup(f"{src}/a.wav"), ["label", "participant"]) == {"label": 1, "participant": "p1"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 row(s) repeat" in warnings[0] and "lines 2 and 4" in warnings[0]


def test_repeated_rows_that_disagree_are_refused_naming_both_lines(tmp_path):
    csv = _csv(tmp_path, "filename,label,participant\na.wav,positive,p1\nb.wav,0,p2\na.wav,negative,p1\n")
    with pytest.raises(UsageError) as err:
        load_labels(csv, _src(tmp_path))
    assert err.value.exit_code == 2
    assert "'a.wav' has label positive on line 2 and negative on line 4" in str(err.value)
    csv = _csv(tmp_path, "filename,label,participant\na.wav,1,p1\na.wav,1,p9\n", name="other.csv")
    with pytest.raises(UsageError, match="'a.wav' has participant 'p1' on line 2 and 'p9' on line 3"):
        load_labels(csv, _src(tmp_path))


# ------------------------------------------------------------------ LabelIndex.lookup


@pytest.mark.parametrize("folder, label", [("pos", 1), ("positive", 1), ("neg", 0), ("negative", 0),
                                           ("Positive", 1), ("NEG", 0), ("neg/pos", 1), ("pos/neg", 0),
                                           ("pos/2026-11-24", 1), ("unlabelled", None)])
def test_folder_names_give_the_label_when_there_is_no_csv(tmp_path, folder, label):
    src = _src(tmp_path)
    assert load_labels(None, src).lookup(f"{src}/{folder}/x.wav")["label"] == label


def test_a_file_named_like_a_label_folder_gets_no_label_from_its_own_name(tmp_path):
    src = _src(tmp_path)
    assert load_labels(None, src).lookup(f"{src}/pos")["label"] is None
    assert set(FOLDER_LABELS) == {"pos", "positive", "neg", "negative"}


def test_the_csv_label_wins_over_the_folder_name(tmp_path):
    src = _src(tmp_path, "pos/x.wav")
    index = load_labels(_csv(tmp_path, "filename,label\npos/x.wav,negative\n"), src)
    assert index.lookup(f"{src}/pos/x.wav")["label"] == 0


def test_by_default_every_file_is_its_own_participant(tmp_path):
    src = _src(tmp_path)
    index = load_labels(None, src)
    a, b = index.lookup(f"{src}/p01/a.wav"), index.lookup(f"{src}/p01/b.wav")
    assert (a["participant"], b["participant"]) == ("p01/a.wav", "p01/b.wav")


def test_a_group_pattern_with_one_capture_group_names_the_participant(tmp_path):
    src = _src(tmp_path)
    index = load_labels(None, src, group_pattern=r"(s7p\d+)-.*")
    assert index.lookup(f"{src}/s7p00001-0.mp3")["participant"] == "s7p00001"
    assert index.lookup(f"{src}/s7p00001-2.flac")["participant"] == "s7p00001"
    assert index.lookup(f"{src}/s7p00002-0.ogg")["participant"] == "s7p00002"


def test_an_invalid_group_pattern_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError) as err:
        load_labels(None, _src(tmp_path), group_pattern="(unclosed")
    assert err.value.exit_code == 2 and "'(unclosed'" in str(err.value)
    assert compile_group_pattern(None) is None and compile_group_pattern("") is None


def test_lookup_accepts_uris_of_the_source_scheme():
    index = LabelIndex(source="s3://bucket/raw", by_relpath={"a/x.wav": {"label": 1, "participant": "p"}})
    assert _pick(index.lookup("s3://bucket/raw/a/x.wav"), ["label", "participant"]) == {"label": 1, "participant": "p"}
    assert _pick(index.lookup("s3://bucket/raw/neg/y.wav"), ["label", "participant"]) == \
        {"label": 0, "participant": "neg/y.wav"}


# ------------------------------------------------------------------ reserved_columns


def test_reserved_columns_are_our_tables_columns_but_not_the_csvs_own():
    reserved = reserved_columns()
    assert {"score", "predicted", "threshold", "run_id", "scored_at", "window_scores", "n_windows", "recording_id",
            "path", "status", "error", "duration_s", "sample_rate", "channels", "format", "snr_db", "image",
            "log_mel", "window_index", "images", "file_size", "file_mtime_ns", "problem", "open_as",
            "model_version", "featurizer_version"} <= reserved
    assert reserved.isdisjoint(INPUT_COLUMNS)
    assert reserved.isdisjoint({"site", "age", "sex", "device", "group"})
