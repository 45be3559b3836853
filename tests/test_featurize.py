"""featurize: audio → windows → images, the job's outputs, bad input, and the CLI contract."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from cough.audio.decode import decode
from cough.errors import RecordingError
from cough.audio.features import DEFAULT_PARAMS, FeaturizerParams, featurize as featurize_audio, windows
from cough.tables.labels import load_labels, parse_label
from cough.tables.schema import to_numpy
from cough.synth import cough_signal
from cough.featurize import FeaturizeSettings, featurize
from cough.featurize.batch import COUNTS

from .conftest import ROOT
from .helpers import HOSTILE_PROBLEMS, cough_wav, hostile_entries



def _ffmpeg_convert(src: Path, dst: Path, *args: str, lavfi: bool = False, loop: int = 0) -> Path:
    import imageio_ffmpeg

    inputs = [*(["-f", "lavfi"] if lavfi else []), *(["-stream_loop", str(loop)] if loop else []), "-i", str(src)]
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", *inputs, *args, str(dst)],
                   check=True)
    return dst


def _read(out: Path, table: str) -> pd.DataFrame:
    return pq.read_table(out / table).to_pandas()


# --- pure functions -------------------------------------------------------------------------

def test_every_window_covers_the_same_span_long_recordings_are_not_squashed():
    p = DEFAULT_PARAMS
    frames = lambda s: int(s * p.sample_rate / p.hop_length) + 1  # noqa: E731
    db = np.zeros((p.n_mels, frames(9.0)), np.float32)
    chunks = windows(db, params=p)
    assert len(chunks) == 5  # 0-2, 2-4, 4-6, 6-8, 8-9 (1 s tail ≥ 0.5 s is kept, padded)
    assert {c.shape for c in chunks} == {(p.n_mels, p.frames_per_window)}
    short = windows(np.zeros((p.n_mels, frames(0.3)), np.float32), params=p)
    assert len(short) == 1 and short[0].shape[1] == p.frames_per_window
    # padding is the floor of the dB range, not stretched audio
    assert np.all(short[0][:, frames(0.3) + 1:] == -p.top_db)


def test_short_tail_is_dropped_but_never_the_only_window():
    p = DEFAULT_PARAMS
    db = np.zeros((p.n_mels, int(4.2 * p.sample_rate / p.hop_length)), np.float32)
    assert len(windows(db, params=p)) == 2


def test_images_are_150x150_rgb_uint8_and_depend_on_the_sound():
    a = decode(_bytes_of(cough_signal(np.random.default_rng(1), positive=True, sample_rate=22050, duration_s=1.0)))
    b = decode(_bytes_of(cough_signal(np.random.default_rng(1), positive=False, sample_rate=22050, duration_s=1.0)))
    wa, wb = featurize_audio(a), featurize_audio(b)
    ia, la, ib = wa.images, wa.log_mel, wb.images
    assert ia.shape == (1, 150, 150, 3) and ia.dtype == np.uint8
    assert la.shape == (1, DEFAULT_PARAMS.n_mels, DEFAULT_PARAMS.frames_per_window)
    assert (wa.start_s.tolist(), wa.end_s.tolist()) == ([0.0], [1.0])  # one padded window: the whole second
    assert np.abs(ia.astype(int) - ib.astype(int)).mean() > 5


def _bytes_of(y: np.ndarray, sr: int = 22050) -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV")
    return buf.getvalue()


def test_resampling_makes_rate_irrelevant_to_the_image_shape():
    y = cough_signal(np.random.default_rng(3), positive=True, sample_rate=48000, duration_s=1.0, channels=2)
    audio48 = decode(_bytes_of(y, 48000))
    assert audio48.channels == 2 and audio48.sample_rate == 48000
    assert featurize_audio(audio48).images.shape == (1, 150, 150, 3)


def test_params_version_changes_with_any_setting():
    assert FeaturizerParams().version == DEFAULT_PARAMS.version
    assert FeaturizerParams(window_s=1.0, hop_s=1.0).version != DEFAULT_PARAMS.version
    assert FeaturizerParams.from_dict(DEFAULT_PARAMS.to_dict()) == DEFAULT_PARAMS


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (os.urandom(4096), "not a recognised audio file"),
])
def test_decode_explains_what_is_wrong(data, reason):
    with pytest.raises(RecordingError, match=reason):
        decode(data)


def _one_hz_wav(path: Path) -> Path:
    """4 KB of samples declared at 1 Hz: 4000 s of audio, ~1000 images and 1.5 GB before the fix."""
    sf.write(path, np.random.default_rng(0).uniform(-0.5, 0.5, 4000).astype(np.float32), 1, subtype="PCM_U8")
    return path


def _long_webm(path: Path, minutes: int = 60) -> Path:
    """A one-hour opus voice note in ~3.5 MB: one minute encoded, then repeated without re-encoding."""
    minute = _ffmpeg_convert(Path("sine=f=300:r=48000"), path.with_suffix(".minute.webm"), "-t", "60",
                             "-c:a", "libopus", "-b:a", "6k", lavfi=True)
    _ffmpeg_convert(minute, path, "-c", "copy", loop=minutes - 1)
    minute.unlink()
    return path


def _moov_at_end_m4a(src: Path, dst: Path) -> Path:
    """An m4a as ffmpeg (and many phones) write it: the index (moov) after the audio (mdat)."""
    _ffmpeg_convert(src, dst, "-c:a", "aac", "-f", "mp4")
    data = dst.read_bytes()
    assert data.find(b"moov") > data.find(b"mdat") > 0
    return dst


@pytest.mark.parametrize("rate", [1, 999, 800_000])
def test_decode_refuses_implausible_sample_rates(tmp_path, rate):
    path = tmp_path / "odd.wav"
    sf.write(path, np.zeros(4000, np.float32), rate, subtype="PCM_16")
    with pytest.raises(RecordingError, match=f"sample rate {rate} Hz is outside 1000-768000 Hz"):
        decode(path.read_bytes())


@pytest.mark.parametrize("rate, channels, fmt", [
    (48000, 2, "wav"), (1000, 1, "wav"), (8000, 1, "flac"), (48000, 2, "webm"), (44100, 1, "m4a")])
def test_one_recording_stays_within_its_budget_and_longer_ones_are_refused(tmp_path, rate, channels, fmt):
    """The tested bound (docs/security.md): the largest recording a budget admits is read,
    decoded, measured and featurized (cough.audio.recording.process, the one featurizing path) with
    a peak of numpy's buffers (tracemalloc) under the budget; one second more is refused."""
    import tracemalloc

    from cough.audio.decode import Budget
    from cough.audio.recording import process
    from cough.tables.listing import Entry

    budget = 96 << 20
    process(Entry(str(cough_wav(tmp_path / "warm.wav"))))  # imports and caches, not per recording

    def recording(name: str, frames: int) -> Path:
        wav = tmp_path / f"{name}.wav"
        y = np.random.default_rng(0).uniform(-0.5, 0.5, (frames, channels)).astype(np.float32)
        sf.write(wav, y, rate, subtype="PCM_16", format="FLAC" if fmt == "flac" else "WAV")
        if fmt in ("webm", "m4a"):
            wav = _ffmpeg_convert(wav, tmp_path / f"{name}.{fmt}", "-c:a", "libopus" if fmt == "webm" else "aac")
        return wav

    # the longest recording admitted (half a second less: codecs pad), the file's size counted in
    size = recording("fits", Budget(budget).max_frames(rate, channels)).stat().st_size
    fits = recording("fits", Budget(budget - size).max_frames(rate, channels) - rate // 2)
    tracemalloc.start()
    try:
        done = process(Entry(str(fits)), budget=budget, min_cough_probability=0.0)  # all the way to the images
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert done.row["status"] == "ok", done.row["error"]
    assert done.row["channels"] == channels and done.row["sample_rate"] == rate
    assert peak <= budget
    too_long = process(Entry(str(recording("long", Budget(budget).max_frames(rate, channels) + rate))), budget=budget).row
    assert too_long["status"] == "error" and re.search("longer than the .* that fit in the \\d+ MiB", too_long["error"])


def test_a_one_hour_webm_of_3_mb_is_refused_after_bounded_work(tmp_path):
    import tracemalloc

    data = _long_webm(tmp_path / "hour.webm").read_bytes()
    assert len(data) < 4 << 20
    tracemalloc.start()
    try:
        with pytest.raises(RecordingError, match="longer than the [34][0-9][0-9] s of 48000 Hz x 1 channel"):
            decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 << 20  # the whole hour decoded was 1.7 GB


def test_m4a_with_the_index_at_the_end_decodes_whole(tmp_path):
    wav = cough_wav(tmp_path / "long.wav", sr=44100, seconds=32.0)
    moov_end = _moov_at_end_m4a(wav, tmp_path / "phone.m4a")
    faststart = _ffmpeg_convert(wav, tmp_path / "faststart.m4a", "-c:a", "aac", "-movflags", "+faststart")
    audio = decode(moov_end.read_bytes())
    assert audio.duration_s == pytest.approx(32.0, abs=0.1) and audio.format == "aac"
    np.testing.assert_array_equal(audio.samples, decode(faststart.read_bytes()).samples)


def test_labels_accept_the_usual_spellings_and_reject_others():
    assert [parse_label(v) for v in ["Positive", "NEG", "1", "0", "true", "False", "pos", ""]] == \
        [1, 0, 1, 0, 1, 0, 1, None]
    with pytest.raises(ValueError, match="not one of"):
        parse_label("maybe")


def test_labels_csv_paths_must_stay_inside_source(tmp_path):
    (tmp_path / "raw").mkdir()
    bad = tmp_path / "labels.csv"
    bad.write_text("filename,label\n../../etc/passwd,positive\n")
    from cough.errors import CoughError

    with pytest.raises(CoughError, match="outside SOURCE"):
        load_labels(str(bad), str(tmp_path / "raw"))
    bad.write_text("filename,label\n/etc/passwd,positive\n")
    with pytest.raises(CoughError, match="outside SOURCE"):
        load_labels(str(bad), str(tmp_path / "raw"))



def test_listing_follows_no_link_out_of_source_and_sees_every_entry(tmp_path):
    from cough.tables.listing import list_recordings

    src, outside = tmp_path / "src", tmp_path / "outside"
    (src / "sub").mkdir(parents=True)
    outside.mkdir()
    cough_wav(src / "sub" / "real.wav")
    hostile_entries(src, outside)
    os.symlink("sub/real.wav", src / "alias.wav")  # a link to a file inside SOURCE is a recording
    os.symlink("sub", src / "sub_link")  # a folder link would list sub/ twice
    (src / "notes.txt").write_text("sidecar")
    entries = {Path(e.path).name: e for e in list_recordings(str(src))}
    problems = {name: e.problem for name, e in entries.items() if e.problem}
    assert set(problems) == {*HOSTILE_PROBLEMS, "sub_link"}
    assert all(HOSTILE_PROBLEMS[n] in problems[n] for n in HOSTILE_PROBLEMS)
    assert "folder" in problems["sub_link"]
    assert {n for n, e in entries.items() if not e.problem} == {"real.wav", "alias.wav", "caf\\xe9 latin-1.wav"}
    # every entry is shown as valid UTF-8 and names the file; the odd name is still read by its bytes
    assert entries["caf\\xe9 latin-1.wav"].path == f"{src}/caf\\xe9 latin-1.wav"
    assert entries["caf\\xe9 latin-1.wav"].read(max_bytes=1 << 20) == (outside / "secret.wav").read_bytes()
    assert entries["alias.wav"].read(max_bytes=1 << 20) == (src / "sub" / "real.wav").read_bytes()
    with pytest.raises(RecordingError, match="outside SOURCE"):
        entries["passwd.wav"].read(max_bytes=1 << 20)


def test_reading_refuses_a_fifo_swapped_in_after_listing_and_files_over_the_budget(tmp_path):
    from cough.tables.listing import Entry

    os.mkfifo(tmp_path / "pipe.wav")  # a regular file when listed, a FIFO by the time it is read
    started = time.monotonic()
    with pytest.raises(RecordingError, match="FIFO"):
        Entry(str(tmp_path / "pipe.wav")).read(max_bytes=1 << 20)
    assert time.monotonic() - started < 5  # refused, not blocked on a pipe nobody writes
    (tmp_path / "big.wav").write_bytes(b"\0" * 4096)
    with pytest.raises(RecordingError, match="over the"):
        Entry(str(tmp_path / "big.wav")).read(max_bytes=1024)
    os.symlink(tmp_path / "big.wav", tmp_path / "swapped.wav")  # a link swapped in after listing
    with pytest.raises(RecordingError, match="symlink"):
        Entry(str(tmp_path / "swapped.wav")).read(max_bytes=1 << 20)


def test_labels_csv_rows_that_disagree_about_a_file_are_refused(tmp_path, caplog):
    from cough.errors import UsageError

    csv = tmp_path / "labels.csv"
    csv.write_text("filename,label,group\na.wav,positive,p1\nb.wav,negative,p2\n./a.wav,negative,p1\n")
    with pytest.raises(UsageError, match=r"'a.wav' has label positive on line 2 and negative on line 4"):
        load_labels(str(csv), str(tmp_path))  # the last row used to win silently
    csv.write_text("filename,label,group\na.wav,positive,p1\na.wav,pos,p9\n")
    with pytest.raises(UsageError, match=r"'a.wav' has participant 'p1' on line 2 and 'p9' on line 3"):
        load_labels(str(csv), str(tmp_path))  # 'group' is cough 0.1's name of the participant column
    csv.write_text("filename,label\na.wav,positive\na.wav,pos\nb.wav,negative\nb.wav,0\n")
    index = load_labels(str(csv), str(tmp_path))
    assert index.lookup(str(tmp_path / "a.wav"))["label"] == 1 and index.lookup(str(tmp_path / "b.wav"))["label"] == 0
    warnings = [r.getMessage() for r in caplog.records if "repeat" in r.getMessage()]
    assert len(warnings) == 1 and "2 row(s)" in warnings[0]


@pytest.mark.parametrize("header", ["filename,label, filename", "filename,label,label", "filename,label,site,site "])
def test_labels_csv_with_a_repeated_column_is_refused(tmp_path, header):
    from cough.errors import UsageError

    csv = tmp_path / "labels.csv"
    csv.write_text(f"{header}\na.wav,positive,x" + ",y" * (header.count(",") - 2) + "\n")
    with pytest.raises(UsageError, match="appear more than once"):  # files were left unlabelled silently
        load_labels(str(csv), str(tmp_path))


def test_a_file_name_in_two_folders_with_different_labels_is_not_guessed_for_a_third(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("filename,label\na/x.wav,positive\nb/x.wav,negative\n")
    index = load_labels(str(csv), str(tmp_path))
    assert index.lookup(str(tmp_path / "a" / "x.wav"))["label"] == 1
    assert index.lookup(str(tmp_path / "c" / "x.wav"))["label"] is None


def test_group_pattern_and_folder_labels(tmp_path):
    index = load_labels(None, str(tmp_path), group_pattern=r"^(.+)-\d+$")
    assert index.lookup(str(tmp_path / "pos" / "X-0.mp3")) == {"label": 1, "participant": "X", "cough_start_s": None,
                                                                "cough_end_s": None}
    assert index.lookup(str(tmp_path / "neg" / "X-1.mp3"))["participant"] == "X"
    assert index.lookup(str(tmp_path / "other" / "Y.mp3"))["participant"] == "other/Y.mp3"


# --- the job --------------------------------------------------------------------------------

def test_sample_archive_is_fully_featurized(sample_features):
    manifest = json.loads((sample_features / "manifest.json").read_text())
    recordings, images = _read(sample_features, "recordings"), pq.read_table(sample_features / "images")
    labels = pd.read_csv(ROOT / "data" / "sample" / "labels.csv")
    assert manifest["inputs"] == len(labels) == len(recordings) == manifest["ok"] + manifest["errors"] + \
        manifest["rejected"]
    # cough synth's coughs are coughs to the detector, but for the shortest one: 0.33 s at 22 kHz
    # whose one burst the detector, with ~1 s of context, scores p=0.19 (a limit docs/results.md names)
    rejected = recordings[recordings.status == "rejected"]
    assert manifest["rejected"] == 1 and rejected.path.str.endswith("s7p00002-1.ogg").all()
    assert rejected.error.str.startswith("no cough detected (p=0.19").all()
    assert manifest["coughs"] >= manifest["ok"] and manifest["dropped_windows"] == 0
    assert manifest["images"] == images.num_rows == recordings["n_windows"].sum()
    assert manifest["featurizer_version"] == DEFAULT_PARAMS.version
    arr = to_numpy(images["image"])
    assert arr.shape == (images.num_rows, 150, 150, 3) and arr.dtype == np.uint8
    # labels, groups and metadata come from the CSV, joined by filename
    truth = labels.assign(name=labels.filename).set_index("name")
    got = recordings.assign(name=recordings.path.map(lambda p: Path(p).name)).set_index("name")
    assert (got.label == truth.label.eq("positive").astype(int).reindex(got.index)).all()
    assert (got.participant == truth.participant.reindex(got.index)).all()
    assert (got.site == truth.site.reindex(got.index)).all()
    # every recording id is the hash of its bytes and images point at real recordings
    assert set(images["recording_id"].to_pylist()) <= set(recordings.recording_id)


def test_bad_inputs_are_error_rows_with_reasons_and_nothing_is_lost(tmp_path, ray_local):
    src = tmp_path / "messy"
    (src / "sub dir").mkdir(parents=True)
    good = cough_wav(src / "good.wav")
    (src / "zero.wav").write_bytes(b"")
    (src / "random.mp3").write_bytes(np.random.default_rng(0).bytes(5000))
    mp3 = cough_wav(src / "real.mp3", fmt="MP3", seconds=2.0)
    (src / "truncated.mp3").write_bytes(mp3.read_bytes()[:300])
    cough_wav(src / "wav_named.mp3", fmt="WAV")  # wrong extension, fine content
    sf.write(src / "silent.flac", np.zeros(16000, np.float32), 16000)
    sf.write(src / "nan.wav", np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    sf.write(src / "one_sample.wav", np.array([0.5], np.float32), 16000)
    cough_wav(src / "hifi.wav", sr=96000, channels=2, seconds=1.0)
    shutil.copy(good, src / "sub dir" / "same bytes, other name.wav")
    cough_wav(src / "sub dir" / "tos de ñandú.ogg", fmt="OGG", subtype="VORBIS")
    _ffmpeg_convert(good, src / "voice_note.webm", "-c:a", "libopus")
    _ffmpeg_convert(good, src / "call.m4a", "-c:a", "aac")
    (src / "notes.txt").write_text("sidecar, not a recording")
    (tmp_path / "outside").mkdir()
    hostile_entries(src, tmp_path / "outside")
    _one_hz_wav(src / "one_hz.wav")
    _moov_at_end_m4a(cough_wav(tmp_path / "long.wav", sr=44100, seconds=31.0), src / "phone.m4a")
    _long_webm(src / "hour.webm")

    out = tmp_path / "out"
    # every decodable recording is kept (the detector's rule has tests of its own): this is about decoding
    summary = featurize(str(src), str(out), FeaturizeSettings(min_cough_probability=0.0)).to_dict()
    rec = _read(out, "recordings")
    rec.index = rec.path.map(lambda p: Path(p).name)
    assert summary["inputs"] == 26 == len(rec) == summary["ok"] + summary["errors"]
    ok = {"good.wav", "real.mp3", "wav_named.mp3", "hifi.wav", "same bytes, other name.wav", "tos de ñandú.ogg",
          "voice_note.webm", "call.m4a", "one_sample.wav", "caf\\xe9 latin-1.wav", "phone.m4a",
          "silent.flac"}
    assert set(rec.index[rec.status == "ok"]) == ok
    reasons = rec.error.dropna().to_dict()
    assert all(HOSTILE_PROBLEMS[name] in reasons[name] for name in HOSTILE_PROBLEMS)
    assert "sample rate 1 Hz is outside" in reasons["one_hz.wav"]
    assert re.search("longer than the [34][0-9][0-9] s of 48000 Hz", reasons["hour.webm"])
    assert rec.loc["phone.m4a", "duration_s"] == pytest.approx(31.0, abs=0.1) and rec.loc["phone.m4a", "n_windows"] == 16
    assert "empty" in reasons["zero.wav"]
    assert "not a recognised audio file" in reasons["random.mp3"]
    assert reasons["truncated.mp3"]
    assert rec.loc["silent.flac", "n_events"] == 0 and rec.loc["silent.flac", "silence_fraction"] == 1.0
    assert "NaN" in reasons["nan.wav"]
    assert rec.loc["hifi.wav", "sample_rate"] == 96000 and rec.loc["hifi.wav", "channels"] == 2
    assert rec.loc["good.wav", "recording_id"] == rec.loc["same bytes, other name.wav", "recording_id"]
    assert rec.loc["voice_note.webm", "format"] == "opus"
    assert (rec.n_windows[rec.status == "ok"] >= 1).all() and (rec.n_windows[rec.status == "error"] == 0).all()
    # every decoded recording has its quality measured, in range
    measured = rec[rec.status == "ok"]
    assert measured.n_events.notna().all() and measured.silence_fraction.between(0, 1).all()
    assert measured.clipped_fraction.between(0, 1).all()
    assert (measured.bandwidth_hz.dropna() <= measured.sample_rate.loc[measured.bandwidth_hz.dropna().index] / 2).all()


def test_a_large_archive_goes_in_few_blocks_of_several_batches_the_same_shards_every_run(tmp_path, ray_local,
                                                                                       monkeypatch):
    """Past MAX_BLOCKS batches (10⁶ files: 15,625), blocks hold several batches each, so that the
    driver keeps few blocks (its memory grew 3x from 10⁵ to 10⁶ files); every recording is still
    featurized once, in batches of --batch-size, and a rerun writes the same shards."""
    import pyarrow.dataset as pads

    from cough.featurize.job import list_work
    from cough.tables import archive
    from cough.tables.labels import load_labels

    monkeypatch.setattr(archive, "MAX_BLOCKS", 1)  # 4 blocks per CPU all the same: 8 here
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(24):
        cough_wav(raw / f"c{i:02d}.wav", seconds=1.0, seed=i)
    ds, _, batch = list_work(str(raw), load_labels(None, str(raw)), archive.EVERY_FILE, 2)
    assert (ds.num_blocks(), batch) == (6, 2)  # 12 batches of 2, two to a block

    def shards(out: Path) -> dict[str, list[str]]:
        folder = next((out / "recordings").iterdir())
        return {f.name: pads.dataset(f).to_table().column("path").to_pylist() for f in folder.iterdir()}

    runs = []
    for out in (tmp_path / "a", tmp_path / "b"):
        assert featurize(str(raw), str(out), FeaturizeSettings(batch_size=2)).inputs == 24
        runs.append(shards(out))
    first, again = runs
    assert sorted(p for paths in first.values() for p in paths) == sorted(str(f) for f in raw.iterdir())
    assert sorted(len(paths) for paths in first.values()) == [2] * 12
    assert first == again

def test_a_rerun_replaces_out_whole(tmp_path, ray_local, sample_archive):
    out = tmp_path / "out"
    featurize(str(sample_archive / "raw"), str(out))
    for f in sorted((sample_archive / "raw").iterdir())[10:]:
        f.unlink()
    summary = featurize(str(sample_archive / "raw"), str(out)).to_dict()
    assert summary["inputs"] == 10 == len(_read(out, "recordings"))
    assert [len(list((out / t).iterdir())) for t in ("images", "recordings", "events")] == [1, 1, 1]  # the old version is gone


def test_a_crash_leaves_the_previous_out_readable_and_a_rerun_recovers(tmp_path, sample_archive):
    from cough.train.trainset import read_index, read_manifest

    raw = sample_archive / "raw"
    for f in sorted(raw.iterdir())[24:]:
        f.unlink()
    out = tmp_path / "out"
    args = [sys.executable, "-m", "jobs.featurize", str(raw), "--out", str(out), "--num-cpus", "2", "--address", "local",
            "--batch-size", "1"]
    assert subprocess.run(args, cwd=ROOT, capture_output=True).returncode == 0
    manifest = (out / "manifest.json").read_bytes()
    shards = len(list(out.glob("images/*/*.parquet")))
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # killed at the rerun's first shard: 24 one-file tasks leave a window of a second or more
    # before it commits (with 12, a fast rerun committed between two looks once)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("images/*/*.parquet"))) <= shards:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list((out / "images").iterdir())) == 2, "the rerun never started writing"
    assert (out / "manifest.json").read_bytes() == manifest  # still the previous, complete OUT
    assert len(read_index(read_manifest(str(out)))) == json.loads(manifest)["images"]
    assert subprocess.run(args, cwd=ROOT, capture_output=True).returncode == 0  # recovers by itself
    assert [len(list((out / t).iterdir())) for t in ("images", "recordings")] == [1, 1]
    assert len(read_index(read_manifest(str(out)))) == json.loads((out / "manifest.json").read_text())["images"]


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "cough", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("args, code, message", [
    (["featurize", "/no/such/dir", "--out", "/tmp/x"], 1, "does not exist"),
    (["featurize", "data/sample/raw"], 2, "--out"),
    (["featurize", "data/sample/raw", "--out", "/tmp/x", "--batch-size", "0"], 2, "--batch-size"),
    (["featurize", "data/sample/raw", "--out", "/tmp/x", "--labels", "/no/labels.csv"], 1, "labels CSV"),
    (["featurize", "data/sample/raw", "--out", "/tmp/x", "--group-pattern", "(("], 2, "regular expression"),
])
def test_job_problems_exit_nonzero_with_one_line_and_no_traceback(args, code, message):
    result = _cli(*args)
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert message in lines[-1] and "Traceback" not in result.stderr


def test_cli_summary_and_json(tmp_path, sample_archive):
    for f in sorted((sample_archive / "raw").iterdir())[6:]:
        f.unlink()
    (sample_archive / "raw" / "broken.mp3").write_bytes(b"ID3" + b"\0" * 100)
    result = _cli("featurize", str(sample_archive / "raw"), "--out", str(tmp_path / "o"), "--num-cpus", "2",
                  "--address", "local", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["inputs"], summary["ok"], summary["errors"]) == (7, 6, 1)
    unwritable = tmp_path / "file"
    unwritable.write_text("x")
    result = _cli("featurize", str(sample_archive / "raw"), "--out", str(unwritable / "o"), "--num-cpus", "1",
                  "--address", "local")
    assert result.returncode in (1, 2) and "cannot" in result.stderr.strip().splitlines()[-1]
    assert unwritable.read_text() == "x"


@pytest.mark.parametrize("sample_rate,channels", [(8000, 2), (48000, 1), (16000, 1), (22050, 1)])
def test_featurizing_gives_librosas_numbers_and_images_within_rounding(sample_rate, channels):
    """cough.audio.melspec stands in for librosa (whose import costs seconds per worker): the
    resampled signal is librosa's, the dB mel matrix differs by float32 rounding (its FFT
    runs in float32), so at most 1 in 10,000 image values moves, by at most 3 of 255."""
    import librosa

    from cough.audio.features import log_mel, to_image, to_mono

    p = DEFAULT_PARAMS
    y = cough_signal(np.random.default_rng(sample_rate), positive=True, sample_rate=sample_rate,
                     duration_s=2.7, channels=channels)
    audio = decode(_bytes_of(y, sample_rate))
    ref_y = librosa.to_mono(audio.samples) if channels > 1 else audio.samples[0]
    if sample_rate != p.sample_rate:
        ref_y = librosa.resample(ref_y, orig_sr=sample_rate, target_sr=p.sample_rate)
    np.testing.assert_array_equal(to_mono(audio), ref_y)
    power = np.abs(librosa.stft(ref_y, n_fft=p.n_fft, hop_length=p.hop_length)) ** 2
    mel = librosa.filters.mel(sr=p.sample_rate, n_fft=p.n_fft, n_mels=p.n_mels) @ power
    ref_db = librosa.power_to_db(mel, ref=np.max, top_db=p.top_db)
    db = log_mel(to_mono(audio))
    np.testing.assert_allclose(db, ref_db, rtol=0, atol=1e-2)
    ours = np.stack([to_image(w) for w in windows(db)]).astype(int)
    theirs = np.stack([to_image(w) for w in windows(ref_db)]).astype(int)
    assert np.abs(ours - theirs).max() <= 3 and np.mean(ours != theirs) <= 1e-4


@pytest.mark.parametrize("kwargs", [{}, {"fmin": 50.0, "fmax": 8000.0}, {"n_mels": 64, "n_fft": 1024},
                                    {"sample_rate": 16000, "fmax": 7000.0}])
def test_mel_filter_bank_is_librosas(kwargs):
    import librosa

    from cough.audio.melspec import mel_filters

    args = {"sample_rate": 22050, "n_fft": 2048, "n_mels": 128, "fmin": 0.0, "fmax": None, **kwargs}
    ref = librosa.filters.mel(sr=args["sample_rate"], n_fft=args["n_fft"], n_mels=args["n_mels"],
                              fmin=args["fmin"], fmax=args["fmax"])
    np.testing.assert_allclose(mel_filters(**args), ref, rtol=1e-6, atol=1e-9)


def test_shipped_colormap_is_matplotlibs():
    from cough.audio.colormap import lookup_table, matplotlib_table

    np.testing.assert_array_equal(lookup_table("magma"), matplotlib_table("magma"))
    np.testing.assert_array_equal(lookup_table("viridis"), matplotlib_table("viridis"))


def test_featurizing_a_recording_imports_no_librosa_matplotlib_pandas_or_tensorflow(tmp_path):
    """Each fresh Ray worker pays for what featurizing imports (librosa + scipy.signal + numba,
    matplotlib, TensorFlow cost seconds each); a recording needs none of them."""
    wav = cough_wav(tmp_path / "a.wav", sr=48000, channels=2)
    code = ("import sys; from cough.audio.recording import process; from cough.tables.listing import Entry; "
            f"assert process(Entry({str(wav)!r})).row['status'] == 'ok'; "
            "print(sorted(m for m in ('librosa', 'matplotlib', 'pandas', 'tensorflow', 'scipy.signal', 'numba') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    assert out.stdout.strip() == "[]"


def test_log_mel_is_librosas_melspectrogram_in_db():
    import librosa

    from cough.audio.features import log_mel

    y = cough_signal(np.random.default_rng(5), positive=False, sample_rate=22050, duration_s=3.0)[:, 0]
    p = DEFAULT_PARAMS
    ref = librosa.power_to_db(librosa.feature.melspectrogram(
        y=y, sr=p.sample_rate, n_fft=p.n_fft, hop_length=p.hop_length, n_mels=p.n_mels), ref=np.max, top_db=p.top_db)
    np.testing.assert_allclose(log_mel(y), ref, atol=1e-3)


def test_labels_csv_columns_named_like_our_tables_are_refused_and_others_carried(tmp_path):
    from cough.errors import UsageError

    csv = tmp_path / "labels.csv"
    csv.write_text("filename,label,participant,site,run_id,n_windows\na.wav,positive,p1,home,r,3\n")
    with pytest.raises(UsageError, match="'run_id', 'n_windows' would clash"):
        load_labels(str(csv), str(tmp_path))
    csv.write_text("filename,label,participant,site\na.wav,positive,p1,home\n")
    assert load_labels(str(csv), str(tmp_path)).lookup(str(tmp_path / "a.wav"))["site"] == "home"
    csv.write_text("filename,label,group,site\na.wav,positive,p1,home\n")  # cough 0.1's name, still read
    assert load_labels(str(csv), str(tmp_path)).lookup(str(tmp_path / "a.wav"))["participant"] == "p1"
    csv.write_text("filename,label,group,participant\na.wav,positive,p1,p2\n")
    with pytest.raises(UsageError, match="both 'participant' and 'group'"):
        load_labels(str(csv), str(tmp_path))


def test_a_task_writes_its_windows_a_row_group_at_a_time_so_long_calls_do_not_pile_up(tmp_path, monkeypatch):
    """A batch of 64 six-minute calls held ~1 GiB of windows until its shard was written, and
    Ray warned about memory; the windows now go out every FLUSH_WINDOWS."""
    import pyarrow as pa

    from cough.featurize import batch as featurize_batch_module
    from cough.tables.storage import Location

    monkeypatch.setattr(featurize_batch_module, "FLUSH_WINDOWS", 8)
    raw = tmp_path / "raw"
    raw.mkdir()
    paths = [str(cough_wav(raw / f"call{i}.wav", seconds=12.0, seed=i)) for i in range(3)]  # 6 windows each
    rows = featurize_batch_module.featurize_batch(
        pa.table({"path": paths}), images=Location.of(str(tmp_path / "images")),
        recordings=Location.of(str(tmp_path / "recordings")), events=Location.of(str(tmp_path / "events")),
        source=str(raw), params=DEFAULT_PARAMS, min_cough_probability=0.0, metadata_columns=[])
    assert rows.to_pylist()[0]["images"] == 18
    shard = next((tmp_path / "images").iterdir())
    parquet = pq.ParquetFile(shard)
    assert parquet.metadata.num_rows == 18 and parquet.metadata.num_row_groups == 2  # 12 (two calls), then 6
    times = parquet.read(columns=["path", "window_index", "start_s", "end_s"]).to_pylist()
    assert [t["window_index"] for t in times] == list(range(6)) * 3 and times[5]["end_s"] == pytest.approx(12.0)



def test_a_batch_writes_nothing_once_its_run_has_failed_and_leaves_the_gate_when_done(tmp_path, ray_local):
    """The run's task gate (cough.runtime.TaskGate), which a failed run settles before it cleans
    up: a batch that ran is no longer counted inside once it has returned (the cleanup does not
    wait on it), and one that starts after the run failed writes no shard and counts nothing."""
    import pyarrow as pa
    import ray

    from cough.featurize.batch import featurize_batch
    from cough.runtime import TaskGate
    from cough.tables.storage import Location

    raw = tmp_path / "raw"
    raw.mkdir()
    batch = pa.table({"path": [str(cough_wav(raw / f"c{i}.wav", seconds=2.0, seed=i)) for i in range(2)]})
    task = ray.remote(featurize_batch)

    def run(out: Path, gate) -> dict:
        tables = {t: Location.of(str(out / t)) for t in ("images", "recordings", "events")}
        return ray.get(task.remote(batch, **tables, source=str(raw), params=DEFAULT_PARAMS, min_cough_probability=0.0,
                                   metadata_columns=[], gate=gate.actor)).to_pylist()[0]

    with TaskGate() as gate:
        ran = run(tmp_path / "ran", gate)
        assert ran["inputs"] == 2 and ran["images"] > 0
        assert sorted(p.name for p in (tmp_path / "ran").iterdir()) == ["events", "images", "recordings"]
        assert gate.settle(timeout=10), "a batch that returned is still counted inside the gate"
        late = run(tmp_path / "late", gate)  # the gate is closed now
    assert late == {**{k: 0 for k in COUNTS}, "failed": None}
    assert not (tmp_path / "late").exists()

def _broken(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"broken-{i}.mp3").write_bytes(b"ID3" + bytes(200 + i))
    return folder


def test_a_run_in_which_every_file_fails_exits_1_and_commits_nothing(tmp_path, ray_local, capsys):
    """Whatever the cause (here: not one file is audio; on a cluster, files its workers cannot
    open), a run that read not one file says so and fails, and an earlier OUT stays as it was.
    Before, it committed an OUT of error rows and exited 0, "status": "ok"."""
    from cough.cli import main

    raw = _broken(tmp_path / "raw", 3)
    assert main(["featurize", str(raw), "--out", str(tmp_path / "out"), "--json"]) == 1
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert (summary["status"], summary["errors"], summary["ok"]) == ("error", 3, 0)
    assert err.strip().splitlines()[-1].startswith(f"cough featurize: error: every one of the 3 files listed under "
                                                   f"SOURCE {raw} failed (e.g. {raw}/broken-0.mp3: ")
    assert "nothing was committed" in summary["error"] and not (tmp_path / "out").exists()

    good = tmp_path / "good"
    good.mkdir()
    for f in sorted((ROOT / "data" / "sample" / "raw").iterdir())[:2]:
        shutil.copy(f, good)
    assert main(["featurize", str(good), "--out", str(tmp_path / "out")]) == 0
    manifest = (tmp_path / "out" / "manifest.json").read_text()
    assert main(["featurize", str(raw), "--out", str(tmp_path / "out")]) == 1
    assert (tmp_path / "out" / "manifest.json").read_text() == manifest  # the earlier OUT, as it was
    assert "(OUT keeps its previous output)" in capsys.readouterr().err


def test_max_error_rate_fails_the_run_after_it_commits(tmp_path, ray_local, capsys):
    from cough.cli import main

    raw = _broken(tmp_path / "raw", 1)
    for f in sorted((ROOT / "data" / "sample" / "raw").iterdir())[:3]:
        shutil.copy(f, raw)
    args = ["featurize", str(raw), "--out", str(tmp_path / "out"), "--min-cough-probability", "0", "--json"]
    assert main([*args, "--max-error-rate", "0.2"]) == 1
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert (summary["status"], summary["exit_code"], summary["ok"], summary["errors"]) == ("error", 1, 3, 1)
    assert "25.0% of the 4 files read failed, over --max-error-rate 0.2 (committed all the same" in err
    assert (tmp_path / "out" / "manifest.json").is_file()  # committed all the same
    assert main([*args, "--max-error-rate", "0.25"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "ok"


def test_a_full_disk_is_named_in_one_line_and_the_run_leaves_nothing(tmp_path):
    """OUT on a disk that fills up: the error names the shard and the cause (ENOSPC: disk full),
    in one line, without -v; before, it said `RayTaskError(UserCodeException): ray::MapBatches(
    featurize_batch)() (pid=..., ip=...)` in colour codes. The disk: a 400 kB tmpfs in a mount
    namespace of its own (root only), where the job and its local Ray run."""
    from .cluster import can_unshare

    reason = can_unshare()
    if reason:
        pytest.skip(f"a small disk of its own {reason}")
    disk = tmp_path / "disk"
    disk.mkdir()
    job = [sys.executable, "-m", "cough", "featurize", str(ROOT / "data" / "sample" / "raw"), "--out",
           str(disk / "out"), "--num-cpus", "2", "--address", "local", "--json"]
    script = (f"mount -t tmpfs -o size=400k tmpfs {str(disk)!r} && {{ {' '.join(map(repr, job))}; "
              f"echo \"exit $?\" >&2; echo \"left: $(ls -A {str(disk)!r})\" >&2; }}")
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], cwd=ROOT,
                            capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = result.stderr.strip().splitlines()
    assert lines[-2:] == ["exit 1", "left:"] and len(lines) == 4, result.stderr[-3000:]  # the job's two lines
    assert lines[0].startswith("cough featurize: featurizing 60 recordings")
    error = lines[-3]
    assert error.startswith(f"cough featurize: error: cannot write {disk}/out/") and "ENOSPC: disk full" in error, error
    assert "Traceback" not in result.stderr and "\x1b[" not in result.stdout, result.stderr[-3000:]
    assert "No space left on device" in json.loads(result.stdout)["error"]
