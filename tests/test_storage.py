"""cough.tables.storage on its own: locations (local paths, file:// and s3:// URIs), reading and
writing whole objects, and how a job claims its output folder and commits into it. No network:
s3:// locations are only constructed, never read."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import types
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from cough import __version__
from cough.errors import CoughError, UsageError
from cough.tables import storage
from cough.tables.schema import JSON_SCHEMA_VERSION
from cough.tables.storage import OWNER_FILE, Location, StoreHandler, claim, new_version, read_owner, remove_stale


def _owner(folder: Path, kind: str, **extra) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / OWNER_FILE).write_text(json.dumps({"kind": kind, "schema_version": JSON_SCHEMA_VERSION, **extra}))


# ------------------------------------------------------------------ Location.of


def test_a_relative_local_path_resolves_to_an_absolute_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loc = Location.of("out/features")
    assert loc.uri == loc.path == str(tmp_path / "out" / "features")
    assert loc.local and loc.scheme == "" and loc.name == "features"
    assert isinstance(loc.fs, pafs.LocalFileSystem)
    assert str(loc) == loc.uri


def test_a_location_passed_again_is_returned_as_is(tmp_path):
    loc = Location.of(str(tmp_path))
    assert Location.of(loc) is loc


def test_a_file_uri_keeps_its_scheme_and_drops_a_trailing_slash(tmp_path):
    loc = Location.of(f"file://{tmp_path}/out/")
    assert loc.local and loc.scheme == "file"
    assert loc.path == f"{tmp_path}/out"
    assert loc.uri == f"file://{tmp_path}/out"
    assert loc.join("manifest.json").uri == f"file://{tmp_path}/out/manifest.json"


def test_an_s3_uri_is_resolved_without_reading_the_store():
    loc = Location.of("s3://bucket/archive/raw/")
    assert (loc.uri, loc.path, loc.scheme, loc.name) == ("s3://bucket/archive/raw", "bucket/archive/raw", "s3", "raw")
    assert not loc.local
    assert isinstance(loc.fs, pafs.PyFileSystem) and isinstance(loc.fs.handler, StoreHandler)  # cough's retries
    assert isinstance(loc.fs.handler.inner, pafs.S3FileSystem)
    assert loc.join("2026", "/11/").uri == "s3://bucket/archive/raw/2026/11"
    assert loc.join("2026", "/11/").path == "bucket/archive/raw/2026/11"
    other = loc.like("bucket/elsewhere/x.mp3")
    assert (other.uri, other.path, other.fs) == ("s3://bucket/elsewhere/x.mp3", "bucket/elsewhere/x.mp3", loc.fs)


def test_an_unknown_scheme_is_a_usage_error_that_names_it():
    with pytest.raises(UsageError) as err:
        Location.of("ftp2://host/x")
    assert err.value.exit_code == 2
    assert "ftp2://host/x" in str(err.value) and "ftp2://" in str(err.value)
    assert "s3://" in str(err.value)  # says what it can use


def test_join_and_like_on_a_local_folder(tmp_path):
    loc = Location.of(str(tmp_path))
    joined = loc.join("/a/", "b.json")
    assert joined.uri == joined.path == f"{tmp_path}/a/b.json"
    assert joined.fs is loc.fs
    like = loc.like(f"{tmp_path}/other")
    assert like.uri == like.path == f"{tmp_path}/other" and like.fs is loc.fs
    assert storage.join("s3://b/x/", "y", "z.json") == "s3://b/x/y/z.json"


def test_contains_is_true_for_itself_and_what_lies_under_it_only(tmp_path):
    out = Location.of(str(tmp_path / "out"))
    assert out.contains(out)
    assert out.contains(Location.of(str(tmp_path / "out" / "a" / "b")))
    assert not out.contains(Location.of(str(tmp_path / "outside")))  # a shared name prefix is not containment
    assert not out.contains(Location.of(str(tmp_path)))
    assert Location.of("s3://bucket/out").contains(Location.of("s3://bucket/out/2026/x.mp3"))
    assert not Location.of("s3://bucket/out").contains(Location.of("s3://bucket/output"))
    assert not Location.of("s3://bucket/out").contains(Location.of("gs://bucket/out/x"))  # another store


def test_resolve_and_open_input_read_one_uri(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    fs, path = storage.resolve(f"file://{tmp_path}/a.bin")
    assert isinstance(fs, pafs.LocalFileSystem) and path == f"{tmp_path}/a.bin"
    with storage.open_input(str(tmp_path / "a.bin")) as f:
        assert f.read() == b"abc"


# ------------------------------------------------------------------ reading and writing


def test_write_and_read_bytes_and_json_round_trip(tmp_path):
    loc = Location.of(str(tmp_path / "deep" / "er" / "x.json"))
    loc.write_json({"b": 1, "a": [1, 2], "when": dt.date(2026, 1, 2)})  # folders created; dates as text
    assert loc.read_json() == {"a": [1, 2], "b": 1, "when": "2026-01-02"}
    text = loc.read_bytes().decode()
    assert text.index('"a"') < text.index('"b"')  # sorted keys: the same object gives the same bytes
    loc.write_bytes(b"\x00\x01")
    assert loc.read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path / "deep" / "er")) == ["x.json"]  # no temporary file left beside it


def test_reading_a_missing_file_is_a_cough_error_naming_it(tmp_path):
    loc = Location.of(str(tmp_path / "missing.json"))
    with pytest.raises(CoughError) as err:
        loc.read_bytes()
    assert err.value.exit_code == 1
    assert str(err.value).startswith(f"cannot read {loc.uri}: ")
    assert "\n" not in str(err.value)


def test_exists_is_file_is_dir_on_local_entries(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    f, d, none = (Location.of(str(tmp_path / n)) for n in ("f", "d", "none"))
    assert (f.exists(), f.is_file(), f.is_dir()) == (True, True, False)
    assert (d.exists(), d.is_file(), d.is_dir()) == (True, False, True)
    assert (none.exists(), none.is_file(), none.is_dir()) == (False, False, False)


def test_listdir_lists_a_folder_and_nothing_for_a_missing_one(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("1")
    (tmp_path / "y").write_text("2")
    loc = Location.of(str(tmp_path))
    assert sorted(Path(e.path).name for e in loc.listdir()) == ["a", "y"]
    assert sorted(Path(e.path).relative_to(tmp_path).as_posix() for e in loc.listdir(recursive=True)) == \
        ["a", "a/x", "y"]
    assert Location.of(str(tmp_path / "missing")).listdir() == []


def test_delete_removes_a_file_or_a_folder_and_ignores_what_is_absent(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "f").write_text("x")
    (tmp_path / "g").write_text("x")
    Location.of(str(tmp_path / "d")).delete()
    Location.of(str(tmp_path / "g")).delete()
    Location.of(str(tmp_path / "absent")).delete()
    assert list(tmp_path.iterdir()) == []


def test_an_s3_error_names_missing_credentials_only_when_there_are_none(monkeypatch, tmp_path):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
              "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    s3 = Location.of("s3://bucket/x")
    message = str(s3.error("read", OSError("Access Denied\nmore detail")))
    assert message.startswith("cannot read s3://bucket/x: Access Denied")
    assert "no AWS credentials found" in message and "more detail" not in message
    assert "AWS credentials" not in str(Location.of(str(tmp_path)).error("read", OSError("x")))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone")
    assert "AWS credentials" not in str(s3.error("read", OSError("Access Denied")))


# ------------------------------------------------------------------ claim


def test_claim_an_absent_folder_creates_nothing(tmp_path):
    out = claim(str(tmp_path / "out"), "featurize")
    assert (out.state, out.kind, out.loc.uri) == ("absent", "featurize", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_claim_an_empty_folder(tmp_path):
    (tmp_path / "out").mkdir()
    assert claim(str(tmp_path / "out"), "featurize").state == "empty"


def test_claim_its_own_earlier_output(tmp_path):
    _owner(tmp_path / "out", "featurize")
    (tmp_path / "out" / "manifest.json").write_text("{}")
    assert claim(str(tmp_path / "out"), "featurize").state == "ours"
    assert claim(str(tmp_path / "out"), "featurize", extends=True).state == "ours"
    # an owner marker from before schema_version existed (read as version 1) is ours too
    (tmp_path / "out" / OWNER_FILE).write_text(json.dumps({"kind": "featurize"}))
    assert claim(str(tmp_path / "out"), "featurize").state == "ours"


def test_claim_refuses_files_it_did_not_write_and_leaves_them(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    (out / "notes").mkdir()
    with pytest.raises(UsageError) as err:
        claim(str(out), "featurize")
    message = str(err.value)
    assert err.value.exit_code == 2
    assert f"--out {out} holds files that `cough featurize` did not write (notes, thesis.tex)" in message
    assert (out / "thesis.tex").read_text() == "years of work" and (out / "notes").is_dir()


def test_claim_names_the_first_five_entries_and_how_many_there_are(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for i in range(7):
        (out / f"f{i}").write_text("")
    with pytest.raises(UsageError, match=r"\(f0, f1, f2, f3, f4, \.\.\. \(7 entries\)\)"):
        claim(str(out), "score", flag="--pred")


def test_claim_refuses_another_jobs_output_and_names_that_job(tmp_path):
    _owner(tmp_path / "out", "train")
    with pytest.raises(UsageError) as err:
        claim(str(tmp_path / "out"), "featurize")
    assert "holds the output of `cough train`" in str(err.value)
    assert err.value.exit_code == 2
    assert (tmp_path / "out" / OWNER_FILE).exists()


def test_claim_refuses_a_newer_coughs_output_of_the_same_job(tmp_path):
    _owner(tmp_path / "out", "featurize", schema_version=JSON_SCHEMA_VERSION + 1)
    with pytest.raises(UsageError) as err:
        claim(str(tmp_path / "out"), "featurize")
    assert err.value.exit_code == 2
    assert "upgrade cough" in str(err.value) and "choose another --out" in str(err.value)


def test_claim_treats_an_unreadable_owner_marker_as_foreign_files(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / OWNER_FILE).write_text("{not json")
    with pytest.raises(UsageError, match=re.escape(f"did not write ({OWNER_FILE})")):
        claim(str(tmp_path / "out"), "featurize")


def test_claim_refuses_a_file(tmp_path):
    (tmp_path / "out").write_text("keep me")
    with pytest.raises(UsageError) as err:
        claim(str(tmp_path / "out"), "report", flag="--report")
    assert f"--report {tmp_path / 'out'} is a file, not a folder" in str(err.value)
    assert err.value.exit_code == 2
    assert (tmp_path / "out").read_text() == "keep me"


def test_claim_refuses_an_output_that_is_contains_or_lies_inside_an_input(tmp_path):
    src = tmp_path / "archive" / "raw"
    src.mkdir(parents=True)
    (src / "a.wav").write_bytes(b"RIFF")
    with pytest.raises(UsageError, match=r"is SOURCE .*would destroy the input"):
        claim(str(src), "featurize", inputs={"SOURCE": str(src)})
    with pytest.raises(UsageError, match=r"contains SOURCE"):
        claim(str(tmp_path / "archive"), "featurize", inputs={"SOURCE": str(src)})
    with pytest.raises(UsageError, match=r"lies inside SOURCE"):
        claim(str(src / "out"), "featurize", inputs={"SOURCE": str(src)})
    assert (src / "a.wav").read_bytes() == b"RIFF"


def test_claim_allows_an_output_in_a_folder_that_readers_of_the_input_skip(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    assert claim(str(src / "_reports" / "night1"), "report", inputs={"PRED": str(src)}).state == "absent"
    assert claim(str(src / ".cache"), "report", inputs={"PRED": str(src)}).state == "absent"
    # an input given as None (no labels CSV) is no constraint
    assert claim(str(tmp_path / "out"), "featurize", inputs={"SOURCE": str(src), "labels": None}).state == "absent"


# ------------------------------------------------------------------ Output.writing


def test_writing_puts_the_owner_marker_first(tmp_path):
    out = claim(str(tmp_path / "out"), "featurize")
    with out.writing("manifest.json") as loc:
        assert [p.name for p in (tmp_path / "out").iterdir()] == [OWNER_FILE]
        owner = read_owner(loc)
        assert owner["kind"] == "featurize" and owner["schema_version"] == JSON_SCHEMA_VERSION
        assert owner["cough_version"] == __version__
        assert dt.datetime.fromisoformat(owner["created_at"]).tzinfo is not None
        loc.join("manifest.json").write_json({"v": 1})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [OWNER_FILE, "manifest.json"]
    # the next run claims it as its own
    assert claim(str(tmp_path / "out"), "featurize").state == "ours"


def test_a_run_that_fails_before_its_commit_removes_the_folder_it_created(tmp_path):
    out = claim(str(tmp_path / "out"), "featurize")
    with pytest.raises(RuntimeError, match="worker died"):
        with out.writing("manifest.json") as loc:
            loc.join("images", "part-0.parquet").write_bytes(b"half")
            raise RuntimeError("worker died")
    assert not (tmp_path / "out").exists()


def test_a_run_that_fails_in_an_empty_folder_empties_it_and_keeps_the_folder(tmp_path):
    (tmp_path / "out").mkdir()
    out = claim(str(tmp_path / "out"), "featurize")
    with pytest.raises(KeyboardInterrupt):
        with out.writing("manifest.json") as loc:
            loc.join("part").write_bytes(b"x")
            raise KeyboardInterrupt
    assert (tmp_path / "out").is_dir() and list((tmp_path / "out").iterdir()) == []


def test_a_run_that_fails_after_its_commit_keeps_its_output(tmp_path):
    out = claim(str(tmp_path / "out"), "featurize")
    with pytest.raises(RuntimeError):
        with out.writing("manifest.json") as loc:
            loc.join("manifest.json").write_json({"v": 1})
            raise RuntimeError("after the commit")
    assert (tmp_path / "out" / "manifest.json").exists()


def test_a_failed_rerun_never_deletes_the_earlier_output_nor_rewrites_its_marker(tmp_path):
    _owner(tmp_path / "out", "featurize", created_at="2020-01-01T00:00:00+00:00")
    (tmp_path / "out" / "images").mkdir()
    (tmp_path / "out" / "images" / "old.parquet").write_bytes(b"earlier run")
    marker = (tmp_path / "out" / OWNER_FILE).read_text()
    out = claim(str(tmp_path / "out"), "featurize")
    with pytest.raises(RuntimeError):
        with out.writing("manifest.json") as loc:
            assert (tmp_path / "out" / OWNER_FILE).read_text() == marker
            loc.join("images", "new.parquet").write_bytes(b"x")
            raise RuntimeError("failed")
    assert (tmp_path / "out" / "images" / "old.parquet").read_bytes() == b"earlier run"
    assert (tmp_path / "out" / OWNER_FILE).read_text() == marker


# ------------------------------------------------------------------ remove_stale, new_version, read_owner


def test_remove_stale_keeps_what_it_is_told_and_what_the_prefix_does_not_name(tmp_path):
    for name in ("weights-v1.h5", "weights-v2.h5", "weights-v3.h5", "model.json"):
        (tmp_path / name).write_text(name)
    (tmp_path / "weights-old").mkdir()
    (tmp_path / "weights-old" / "x").write_text("x")
    remove_stale(Location.of(str(tmp_path)), {"weights-v3.h5"}, prefix="weights-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "weights-v3.h5"]
    remove_stale(Location.of(str(tmp_path)), {"model.json"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json"]


def test_new_version_is_unique_and_sorts_by_time(monkeypatch):
    shape = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
    many = {new_version() for _ in range(500)}
    assert len(many) == 500 and all(shape.match(v) for v in many)
    stamp = dt.datetime.strptime(next(iter(many))[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    assert abs((dt.datetime.now(dt.timezone.utc) - stamp).total_seconds()) < 60  # UTC, not local time

    times = iter(dt.datetime(2026, m, d, h, tzinfo=dt.timezone.utc)
                 for m, d, h in [(1, 1, 23), (1, 2, 1), (11, 30, 0), (12, 1, 9)])

    class Clock(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return next(times)

    monkeypatch.setattr(storage, "dt", types.SimpleNamespace(datetime=Clock, timezone=dt.timezone))
    made = [new_version() for _ in range(4)]
    assert made == sorted(made)
    assert made[0].startswith("20260101T230000Z-") and made[-1].startswith("20261201T090000Z-")


def test_read_owner(tmp_path):
    loc = Location.of(str(tmp_path))
    assert read_owner(loc) is None  # none
    (tmp_path / OWNER_FILE).write_text("[1, 2]")
    assert read_owner(loc) is None  # not an object
    (tmp_path / OWNER_FILE).write_text("{broken")
    assert read_owner(loc) is None  # unreadable
    _owner(tmp_path, "score")
    assert read_owner(loc) == {"kind": "score", "schema_version": JSON_SCHEMA_VERSION}
