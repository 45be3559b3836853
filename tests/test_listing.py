"""What SOURCE holds (cough.tables.listing) and its rows listed in this process
(cough.tables.archive's listing_table, the dry runs' path): entries, problems, safe reads,
labels attached, prefixes and since. Real folders in tmp_path; no Ray."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pyarrow as pa
import pytest

from cough.errors import CoughError, RecordingError, UsageError
from cough.tables.archive import check_since, dated_on_or_after, listing_schema, listing_table
from cough.tables.labels import load_labels
from cough.tables.listing import UNKNOWN, Entry, list_folder, list_recordings, recording_paths

from .helpers import HOSTILE_PROBLEMS, cough_wav, hostile_entries

MiB = 2**20


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _by_name(entries) -> dict[str, Entry]:
    return {e.path.rsplit("/", 1)[1]: e for e in entries}


# ------------------------------------------------------------------ list_recordings


def test_list_recordings_walks_subfolders_sorted_and_skips_sidecars_and_hidden_names(tmp_path):
    src = _tree(tmp_path / "src", {
        "b.wav": b"1", "a.mp3": b"2", "sub/deeper/c.ogg": b"3", "odd.bin": b"4",
        "labels.csv": b"", "NOTES.TXT": b"", "meta.json": b"", "x.parquet": b"", "r.yml": b"", "readme.md": b"",
        ".hidden.wav": b"", "_tmp.wav": b"", ".git/obj.wav": b"", "_partial/d.wav": b"", "sub/.DS_Store": b""})
    entries = list_recordings(str(src))
    assert [e.path for e in entries] == [f"{src}/{n}" for n in ("a.mp3", "b.wav", "odd.bin", "sub/deeper/c.ogg")]
    assert all(e.problem is None and e.open_as is None for e in entries)  # any other extension is a recording
    assert recording_paths(str(src)) == [e.path for e in entries]


def test_entries_record_the_file_size_and_modification_time(tmp_path):
    src = _tree(tmp_path / "src", {"a.wav": b"x" * 1234})
    os.utime(src / "a.wav", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    (entry,) = list_recordings(str(src))
    assert (entry.file_size, entry.file_mtime_ns) == (1234, 1_700_000_000_123_456_789)


def test_a_missing_source_is_a_cough_error(tmp_path):
    with pytest.raises(CoughError, match=f"SOURCE {tmp_path / 'nope'} does not exist") as err:
        list_recordings(str(tmp_path / "nope"))
    assert err.value.exit_code == 1


def test_a_source_that_is_one_file_is_one_entry(tmp_path):
    path = cough_wav(tmp_path / "one.wav")
    (entry,) = list_recordings(str(path))
    assert entry.path == str(path) and entry.problem is None and entry.file_size == path.stat().st_size


def test_a_file_uri_source_gives_file_uris_that_read(tmp_path):
    src = _tree(tmp_path / "src", {"sub/a.wav": b"abc"})
    (entry,) = list_recordings(f"file://{src}")
    assert entry.path == f"file://{src}/sub/a.wav"
    assert entry.read(max_bytes=MiB) == b"abc"


def test_hostile_entries_become_entries_with_a_problem_and_the_listing_ends(tmp_path):
    src, outside = tmp_path / "src", tmp_path / "outside"
    src.mkdir()
    outside.mkdir()
    hostile_entries(src, outside)
    entries = _by_name(list_recordings(str(src)))
    for name, problem in HOSTILE_PROBLEMS.items():
        assert problem in (entries[name].problem or ""), name
        with pytest.raises(RecordingError, match="^" + re.escape(entries[name].problem)):
            entries[name].read(max_bytes=MiB)
    # nothing outside SOURCE is read through the links, and no file is listed twice through a loop
    assert not any(e.problem is None and e.open_as and b"outside" in e.open_as for e in entries.values())
    assert len(list_recordings(str(src))) == len(HOSTILE_PROBLEMS) + 1  # + the latin-1 name


def test_a_non_utf8_name_is_shown_escaped_and_still_read_by_its_bytes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    raw = os.fsencode(src) + b"/caf\xe9.wav"
    with open(raw, "wb") as f:
        f.write(b"latin-1 bytes")
    (entry,) = list_recordings(str(src))
    assert entry.path == f"{src}/caf\\xe9.wav"
    entry.path.encode("utf-8")  # valid UTF-8: rows can hold it
    assert entry.open_as == raw and entry.problem is None
    assert entry.read(max_bytes=MiB) == b"latin-1 bytes"
    assert entry.file_size == len(b"latin-1 bytes")


def test_a_symlink_to_a_file_inside_source_is_read_through_its_target(tmp_path):
    src = _tree(tmp_path / "src", {"real/a.wav": b"target bytes"})
    os.symlink("real/a.wav", src / "link.wav")
    entries = _by_name(list_recordings(str(src)))
    link = entries["link.wav"]
    assert link.problem is None and link.path == f"{src}/link.wav"
    assert link.open_as == os.fsencode(src / "real" / "a.wav")
    assert link.file_size == len(b"target bytes")
    assert link.read(max_bytes=MiB) == b"target bytes"


def test_a_symlink_to_a_folder_is_an_entry_with_a_problem_not_followed(tmp_path):
    src = _tree(tmp_path / "src", {"real/a.wav": b"1"})
    os.symlink("real", src / "alias")
    entries = list_recordings(str(src))
    assert [e.path for e in entries] == [f"{src}/alias", f"{src}/real/a.wav"]  # a.wav once, by its own path
    assert "symlink to a folder" in entries[0].problem
    assert (entries[0].file_size, entries[0].file_mtime_ns) == (UNKNOWN, UNKNOWN)


def test_a_symlink_out_of_source_is_refused_even_into_a_sibling_with_a_shared_prefix(tmp_path):
    src = _tree(tmp_path / "src", {"a.wav": b"1"})
    _tree(tmp_path / "src-private", {"secret.wav": b"secret"})
    os.symlink(tmp_path / "src-private" / "secret.wav", src / "b.wav")
    entry = _by_name(list_recordings(str(src)))["b.wav"]
    assert entry.problem == "symlink to a location outside SOURCE (not followed)"
    with pytest.raises(RecordingError, match="outside SOURCE"):
        entry.read(max_bytes=MiB)


def test_a_fifo_is_an_entry_with_a_problem_and_reading_it_never_blocks(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe.wav")
    (entry,) = list_recordings(str(src))
    assert entry.problem == "not a regular file (a FIFO)"
    # even an Entry that does not know (a FIFO swapped in after listing) refuses it without blocking
    with pytest.raises(RecordingError, match=r"not a regular file \(a FIFO\)"):
        Entry(entry.path).read(max_bytes=MiB)


# ------------------------------------------------------------------ Entry.read


def test_read_refuses_a_file_over_max_bytes(tmp_path):
    src = _tree(tmp_path / "src", {"big.wav": b"x" * (3 * MiB)})
    (entry,) = list_recordings(str(src))
    assert len(entry.read(max_bytes=3 * MiB)) == 3 * MiB  # exactly the budget is allowed
    with pytest.raises(RecordingError, match=r"file is 3 MiB, over the 2 MiB one recording may use"):
        entry.read(max_bytes=2 * MiB)


def test_read_refuses_a_symlink_swapped_in_after_listing(tmp_path):
    src = _tree(tmp_path / "src", {"a.wav": b"1"})
    _tree(tmp_path / "elsewhere", {"secret": b"secret"})
    (entry,) = list_recordings(str(src))
    (src / "a.wav").unlink()
    os.symlink(tmp_path / "elsewhere" / "secret", src / "a.wav")
    with pytest.raises(RecordingError, match="cannot read file: it is a symlink"):
        entry.read(max_bytes=MiB)


def test_read_of_a_vanished_file_is_a_recording_error(tmp_path):
    src = _tree(tmp_path / "src", {"a.wav": b"1"})
    (entry,) = list_recordings(str(src))
    (src / "a.wav").unlink()
    with pytest.raises(RecordingError, match="^cannot read file: No such file"):
        entry.read(max_bytes=MiB)


def test_entry_round_trips_through_a_row_and_missing_numbers_are_unknown():
    entry = Entry("/a/b.wav", None, b"/a/b\xe9.wav", 10, 20)
    assert Entry.from_dict(entry.to_dict()) == entry
    row = {"path": "/x.wav", "problem": float("nan"), "open_as": float("nan"), "file_size": float("nan"),
           "file_mtime_ns": None}
    assert Entry.from_dict(row) == Entry("/x.wav", None, None, UNKNOWN, UNKNOWN)


# ------------------------------------------------------------------ list_folder


def test_list_folder_without_recursion_returns_the_subfolders_to_list_on_their_own(tmp_path):
    src = _tree(tmp_path / "src", {"top.wav": b"1", "2026-01-01/a.wav": b"2", "2026-01-02/b/c.wav": b"3",
                                   "_skip/d.wav": b"4"})
    entries, folders = list_folder(str(src), recursive=False)
    assert [e.path for e in entries] == [f"{src}/top.wav"]
    assert sorted(folders) == [f"{src}/2026-01-01", f"{src}/2026-01-02"]
    below = sorted(e.path for folder in folders for e in list_folder(str(src), folder)[0])
    assert below == [f"{src}/2026-01-01/a.wav", f"{src}/2026-01-02/b/c.wav"]
    with pytest.raises(CoughError, match="under SOURCE .* does not exist"):
        list_folder(str(src), f"{src}/2026-12-31")


# ------------------------------------------------------------------ archive: listing_table


def _archive(tmp_path: Path) -> tuple[Path, Path]:
    src = _tree(tmp_path / "raw", {
        "z-top.wav": b"1", "a-top.wav": b"2",
        "2026-11-23/p1-0.wav": b"3", "2026-11-24/p2-0.wav": b"4", "2026-11-24/late/p3-0.wav": b"5",
        "20261201/p1-1.wav": b"6", "misc/p4-0.wav": b"7", "misc/readme.txt": b""})
    csv = tmp_path / "labels.csv"
    csv.write_text("filename,label,participant,site\n"
                   "a-top.wav,positive,p0,clinic\n"
                   "2026-11-24/p2-0.wav,negative,p2,home\n"
                   "2026-11-24/late/p3-0.wav,1,p3,home\n")
    return src, csv


def test_listing_table_holds_the_listing_with_labels_sorted_within_each_block(tmp_path):
    src, csv = _archive(tmp_path)
    index = load_labels(str(csv), str(src))
    listing = listing_table(str(src), index)
    assert listing.excluded == 0
    table = listing.rows
    assert table.schema == listing_schema(["site"])
    rows = table.to_pylist()
    paths = [r["path"] for r in rows]
    assert sorted(paths) == [e.path for e in list_recordings(str(src))]
    # the top level's files first, then the folders' entries: each block sorted by path
    assert paths[:2] == [f"{src}/a-top.wav", f"{src}/z-top.wav"]
    assert paths[2:] == sorted(paths[2:])
    by_path = {r["path"]: r for r in rows}
    assert {k: by_path[f"{src}/a-top.wav"][k] for k in ("label", "participant", "site")} == \
        {"label": 1, "participant": "p0", "site": "clinic"}
    assert {k: by_path[f"{src}/2026-11-24/p2-0.wav"][k] for k in ("label", "participant", "site")} == \
        {"label": 0, "participant": "p2", "site": "home"}
    assert by_path[f"{src}/2026-11-24/late/p3-0.wav"]["label"] == 1
    assert listing.counts.to_dict() == {"labelled": 3, "labelled_by_path": 3, "labelled_by_name": 0,
                                        "labelled_by_folder": 0, "unlabelled": 4, "participants": 3}
    unlabelled = by_path[f"{src}/misc/p4-0.wav"]
    assert (unlabelled["label"], unlabelled["site"]) == (None, None)
    assert unlabelled["participant"] == "misc/p4-0.wav"  # one participant per file by default
    entry = list_recordings(str(src))[0]
    assert {k: by_path[entry.path][k] for k in ("problem", "open_as", "file_size", "file_mtime_ns")} == \
        {k: v for k, v in entry.to_dict().items() if k != "path"}


def test_listing_table_with_prefixes_lists_only_those_folders(tmp_path):
    src, csv = _archive(tmp_path)
    table = listing_table(str(src), load_labels(str(csv), str(src)), prefixes=("/2026-11-24/", "misc")).rows
    assert table.column("path").to_pylist() == [f"{src}/2026-11-24/late/p3-0.wav", f"{src}/2026-11-24/p2-0.wav",
                                                f"{src}/misc/p4-0.wav"]
    table = listing_table(str(src), load_labels(None, str(src)), prefixes=("2026-11-24/late",)).rows
    assert table.column("path").to_pylist() == [f"{src}/2026-11-24/late/p3-0.wav"]
    with pytest.raises(CoughError, match="does not exist"):
        listing_table(str(src), load_labels(None, str(src)), prefixes=("2027-01-01",))


def test_listing_table_since_lists_only_folders_dated_on_or_after_it(tmp_path):
    src, csv = _archive(tmp_path)
    table = listing_table(str(src), load_labels(str(csv), str(src)), since="2026-11-24").rows
    # files directly in SOURCE and undated folders are left out
    assert table.column("path").to_pylist() == [f"{src}/2026-11-24/late/p3-0.wav", f"{src}/2026-11-24/p2-0.wav",
                                                f"{src}/20261201/p1-1.wav"]
    empty = listing_table(str(src), load_labels(None, str(src)), since="2030-01-01").rows
    assert empty.num_rows == 0 and empty.schema == listing_schema([])


def test_listing_table_of_an_empty_source_has_no_rows(tmp_path):
    (tmp_path / "raw").mkdir()
    table = listing_table(str(tmp_path / "raw"), load_labels(None, str(tmp_path / "raw"))).rows
    assert table.num_rows == 0


def test_listing_schema_holds_an_entry_then_its_labels_then_metadata_as_text():
    schema = listing_schema(["site", "age"])
    assert [(f.name, f.type) for f in schema][:7] == [
        ("path", pa.string()), ("problem", pa.string()), ("open_as", pa.binary()), ("file_size", pa.int64()),
        ("file_mtime_ns", pa.int64()), ("label", pa.int8()), ("participant", pa.string())]
    assert schema.names[:5] == list(Entry("x").to_dict())  # an Entry's fields, as Entry.from_dict reads them
    assert [(f.name, f.type) for f in schema][-2:] == [("site", pa.string()), ("age", pa.string())]
    assert listing_schema([]).names == schema.names[:-2]


@pytest.mark.parametrize("name, since, expected", [
    ("2026-11-24", "2026-11-24", True), ("2026-11-25", "2026-11-24", True), ("2026-11-23", "2026-11-24", False),
    ("20261124", "2026-11-24", True), ("20261123", "2026-11-24", False), ("2026-11-24T02", "2026-11-24", True),
    ("date=2026-12-01", "2026-11-24", True), ("dt=2026-01-01", "2026-11-24", False), ("2027-01-01", "2026-12-31", True),
    ("misc", "2026-11-24", False), ("backup-2026-12-01", "2026-11-24", False),
])
def test_dated_on_or_after(name, since, expected):
    assert dated_on_or_after(name, since) is expected


def test_check_since_normalises_a_date_and_refuses_anything_else():
    assert check_since(None) is None
    assert check_since("2026-11-24") == "2026-11-24"
    assert check_since("20261124") == "2026-11-24"
    for bad in ("yesterday", "2026-11", "24/11/2026", "2026-11-24 extra"):
        with pytest.raises(UsageError, match="--since .* is not a date: give YYYY-MM-DD") as err:
            check_since(bad)
        assert err.value.exit_code == 2
