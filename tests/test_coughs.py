"""Coughs, not files: the detector inside the one featurizing path (cough.audio.recording),
the rule that rejects a recording without a cough, window times, windows on coughs, and an
annotated cough span. Real audio written to files and decoded; no Ray."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from cough.audio.decode import decode
from cough.audio.features import DEFAULT_PARAMS, FeaturizerParams, featurize
from cough.audio.recording import no_cough, process
from cough.errors import CoughError
from cough.audio.detector import shipped
from cough.synth import cough_bursts, cough_signal, speech_like_signal
from cough.tables.labels import load_labels
from cough.tables.listing import Entry

SR = 16000


def _wav(path, y, sr=SR):
    sf.write(path, np.asarray(y, np.float32), sr)
    return Entry(str(path))


def _noise(seconds: float, *, level: float = 0.01, seed: int = 0) -> np.ndarray:
    return level * np.random.default_rng(seed).standard_normal(int(seconds * SR))


def _with_cough(seconds: float, at_s: float, *, seed: int = 1) -> np.ndarray:
    y = _noise(seconds, level=0.003)
    burst = cough_signal(np.random.default_rng(seed), positive=True, sample_rate=SR, duration_s=0.6)[:, 0]
    start = int(at_s * SR)
    y[start:start + len(burst)] += burst
    return y


def test_digital_silence_is_rejected_with_the_reason_and_never_featurized(tmp_path):
    done = process(_wav(tmp_path / "silence.wav", np.zeros(3 * SR)))
    assert (done.row["status"], done.row["error"]) == ("rejected", "no cough detected (p=0.00)")
    assert done.windows is None and done.row["n_windows"] == 0
    assert done.row["cough_probability"] == 0.0 and done.row["n_coughs"] == 0 and len(done.events) == 0
    assert done.row["duration_s"] == pytest.approx(3.0)  # decoded and measured, only not kept
    kept = process(_wav(tmp_path / "silence.wav", np.zeros(3 * SR)), min_cough_probability=0.0)
    assert kept.row["status"] == "ok" and kept.windows is not None  # 0 keeps every decodable recording


def test_a_cough_is_kept_with_its_events_and_where_each_window_lies(tmp_path):
    done = process(_wav(tmp_path / "cough.wav", _with_cough(5.0, at_s=2.0)))
    assert done.row["status"] == "ok", done.row["error"]
    assert done.row["cough_probability"] >= 0.5 and done.row["n_coughs"] == len(done.events) >= 1
    assert ((done.events[:, 0] >= 0) & (done.events[:, 1] <= 5.0) & (done.events[:, 0] < done.events[:, 1])).all()
    assert any(start <= 2.3 and end >= 2.0 for start, end, _ in done.events)  # the cough is among them
    w = done.windows
    assert len(w) == done.row["n_windows"] == 3 and done.row["dropped_windows"] == 0
    assert w.start_s.tolist() == pytest.approx([0.0, 1.997, 3.994], abs=0.01)
    assert w.end_s[-1] == pytest.approx(5.0)  # the padded last window ends with the recording


def test_the_rule_is_one_threshold_on_the_detectors_probability():
    assert no_cough(0.49, min_probability=0.5) == "no cough detected (p=0.49)"
    assert no_cough(0.5, min_probability=0.5) is None and no_cough(0.0, min_probability=0.0) is None


def _placed_cough(seed: int, sr: int, *, speech: bool) -> tuple[np.ndarray, float]:
    """10 s of noise at -50..-35 dBFS (with speech-like sound at -12..-3 dB when ``speech``) and
    one synthetic cough clip, 0.4-1 s, placed at 1-8.5 s: the samples and the first burst's onset."""
    rng = np.random.default_rng(1000 + seed)
    n = 10 * sr
    y = rng.normal(0, 10 ** (rng.uniform(-50, -35) / 20), n)
    if speech:
        y += speech_like_signal(rng, sample_rate=sr, duration_s=10.0) * 10 ** (rng.uniform(-12, -3) / 20)
    clip, bursts = cough_bursts(rng, positive=bool(seed % 2), sample_rate=sr, duration_s=float(rng.uniform(0.4, 1.0)))
    at = float(rng.uniform(1.0, 8.5))
    start = int(at * sr)
    y[start:start + len(clip)] += clip[:, 0] * 10 ** (rng.uniform(-6, 0) / 20)
    return np.clip(y / max(1.0, np.abs(y).max() / 0.95), -1, 1).astype(np.float32), at + min(b.onset_s for b in bursts)


@pytest.mark.parametrize("sr", [8000, 16000, 44100, 48000])
def test_a_cough_in_noise_is_found_where_it_starts_at_every_rate(sr):
    """The detector is trained on telephone-band audio; a 48 kHz app recording must look alike to it."""
    for seed in range(10):
        y, onset = _placed_cough(seed, sr, speech=False)
        found = shipped().detect(y, sr)
        assert found.probability >= 0.5, (seed, found.probability)
        assert [round(s - onset, 2) for s, _ in found.events if abs(s - onset) <= 0.1], (seed, onset, found.events)


def test_a_cough_over_speech_is_mostly_found_where_it_starts():
    """Over speech-like sound the onset is found within 0.1 s in 80-84 % of cases at 8-48 kHz
    (bench/detector/NOTES.md; a burst on a syllable is the miss) and in 23 of these 25 at 8 kHz;
    the floors leave a margin, so only a detector that stops hearing coughs in speech fails."""
    cases = [_placed_cough(seed, 8000, speech=True) for seed in range(25)]
    found = [shipped().detect(y, 8000) for y, _ in cases]
    at_onset = np.mean([any(abs(s - onset) <= 0.1 for s, _ in f.events) for f, (_, onset) in zip(found, cases)])
    assert at_onset >= 0.7 and np.mean([f.probability >= 0.5 for f in found]) >= 0.85


def test_windows_on_coughs_are_centred_on_the_detected_coughs_and_say_what_they_drop():
    audio = decode(open_bytes(_with_cough(10.0, at_s=6.0)))
    params = FeaturizerParams(windowing="coughs")
    w = featurize(audio, params=params, coughs_s=np.array([[6.0, 6.4]]))
    assert len(w) == 1 and (w.start_s[0] + w.end_s[0]) / 2 == pytest.approx(6.2, abs=0.05)
    assert w.dropped == 4  # of the five 2 s windows from the start, only [6,8) is at least half shown
    start = featurize(audio, params=DEFAULT_PARAMS, coughs_s=np.array([[6.0, 6.4]]))
    assert len(start) == 5 and start.dropped == 0  # windowing start ignores the coughs


def test_windowing_on_coughs_enters_the_featurizer_version_with_the_detectors_weights():
    from cough.audio.detector import fingerprint

    assert FeaturizerParams(windowing="coughs").version != DEFAULT_PARAMS.version
    assert DEFAULT_PARAMS.version == "031ce4a55a4f1f26"  # unchanged: models trained before still score
    assert fingerprint().split(":")[1] and len(fingerprint().split(":")[1]) == 16


def test_an_annotated_span_restricts_the_windows_and_keeps_the_recording(tmp_path):
    entry = _wav(tmp_path / "call.wav", _noise(10.0))  # no cough the detector would find
    assert process(entry).row["status"] == "rejected"
    done = process(entry, {"cough_start_s": 4.0, "cough_end_s": 6.0})
    assert done.row["status"] == "ok"  # a person said where the cough is
    assert done.windows.start_s.tolist() == pytest.approx([4.0], abs=0.02)
    assert done.windows.end_s.tolist() == pytest.approx([6.0], abs=0.03)
    assert done.row["dropped_windows"] == 4  # the other 8 s of the call are never shown to a model


@pytest.mark.parametrize("span, said", [
    ((48.7, 51.1), "annotated cough span 48.7-51.1 s lies outside the recording (10.0 s long)"),
    ((8.0, 52.0), "annotated cough span 8-52 s ends 42.0 s after the end of the recording (10.0 s long)"),
    ((5.0, 5.0), "annotated cough span 5-5 s is empty or negative"),
    ((5.0, None), "annotated cough span has only a start (5 s): give cough_start_s and cough_end_s"),
])
def test_a_span_that_cannot_be_is_an_error_row_naming_it(tmp_path, span, said):
    done = process(_wav(tmp_path / "call.wav", _noise(10.0)), {"cough_start_s": span[0], "cough_end_s": span[1]})
    assert (done.row["status"], done.row["error"]) == ("error", said)


def test_the_labels_csv_carries_the_span_as_numbers_and_refuses_a_bad_one(tmp_path):
    (tmp_path / "a.wav").touch()
    csv = tmp_path / "labels.csv"
    csv.write_text("filename,label,cough_start_s,cough_end_s\na.wav,positive,1.5,3\n")
    row = load_labels(str(csv), str(tmp_path)).lookup(str(tmp_path / "a.wav"))
    assert (row["cough_start_s"], row["cough_end_s"]) == (1.5, 3.0)
    csv.write_text("filename,label,cough_start_s,cough_end_s\na.wav,positive,soon,3\n")
    with pytest.raises(CoughError, match="line 2: cough_start_s 'soon' is not a number of seconds"):
        load_labels(str(csv), str(tmp_path))


def open_bytes(y: np.ndarray, sr: int = SR) -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, np.asarray(y, np.float32), sr, format="WAV")
    return buf.getvalue()
