"""cough synth: the archives tests, demos and load tests are made of."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import soundfile as sf

from cough.synth import synth_archive


def _digest(folder):
    """Decoded audio per file (Ogg streams carry a random serial number, so not raw bytes)."""
    return {p.name: hashlib.sha1(sf.read(p, dtype="int16")[0].tobytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_archive_is_mixed_labelled_and_reproducible(tmp_path):
    summary = synth_archive(tmp_path / "a", n=24, seed=3, max_duration_s=3)
    labels = pd.read_csv(tmp_path / "a" / "labels.csv")
    files = sorted((tmp_path / "a" / "raw").iterdir())
    assert summary["recordings"] == len(files) == len(labels) == 24
    assert set(labels.filename) == {f.name for f in files}
    assert set(labels.label) == {"positive", "negative"}
    assert labels.groupby("participant").label.nunique().max() == 1  # one label per participant
    infos = [sf.info(f) for f in files]
    assert len({i.samplerate for i in infos}) > 1 and {i.channels for i in infos} == {1, 2}
    assert len({f.suffix for f in files}) > 2
    assert all(0.25 <= i.duration <= 3.1 for i in infos)
    marker = json.loads((tmp_path / "a" / "synth.json").read_text())  # how a report knows it is synthetic
    assert marker["synthetic"] is True and (marker["seed"], marker["n"]) == (3, 24)
    synth_archive(tmp_path / "b", n=24, seed=3, max_duration_s=3)
    assert _digest(tmp_path / "a" / "raw") == _digest(tmp_path / "b" / "raw")  # same seed, same audio


def test_different_seeds_never_share_a_participant(tmp_path):
    synth_archive(tmp_path / "a", n=10, seed=1)
    synth_archive(tmp_path / "b", n=10, seed=2)
    a, b = (set(pd.read_csv(tmp_path / x / "labels.csv").participant) for x in "ab")
    assert a and b and not a & b
