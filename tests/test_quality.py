"""Quality columns and cough events on synthesized audio: known answers, and the hostile
recordings (silence, pure noise, clipped throughout) give honest values, never a crash."""

from __future__ import annotations

import numpy as np
import pytest

from cough.audio.quality import QualityParams, find_events, measure
from cough.synth import cough_signal

SR = 16000


def _burst(sr: int, *, at_s: float, length_s: float, freq: float = 600.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(length_s * sr)) / sr
    out = np.zeros(int(2.0 * sr), np.float32)
    start = int(at_s * sr)
    out[start:start + len(t)] = amp * np.sin(2 * np.pi * freq * t)
    return out


def test_events_are_found_where_the_bursts_are():
    y = _burst(SR, at_s=0.3, length_s=0.2) + _burst(SR, at_s=1.4, length_s=0.3)
    spans = measure(y, SR).events
    assert spans.shape == (2, 2)
    assert np.allclose(spans[:, 0], [0.3, 1.4], atol=0.03)
    assert np.allclose(spans[:, 1], [0.5, 1.7], atol=0.03)


def test_bursts_closer_than_the_gap_are_one_event_and_blips_are_dropped():
    y = _burst(SR, at_s=0.3, length_s=0.2) + _burst(SR, at_s=0.6, length_s=0.2)
    assert measure(y, SR).n_events == 1
    assert measure(y, SR, params=QualityParams(min_gap_s=0.05)).n_events == 2
    blip = _burst(SR, at_s=1.0, length_s=0.01)
    assert measure(blip, SR).n_events == 0


def test_snr_follows_the_background_level():
    rng = np.random.default_rng(0)
    cough = _burst(SR, at_s=0.5, length_s=0.3, amp=0.5)
    snrs = [measure(cough + (10 ** (-db / 20)) * rng.standard_normal(len(cough)).astype(np.float32), SR).snr_db
            for db in (40, 50, 60)]
    assert snrs[0] < snrs[1] < snrs[2]
    # burst power 0.125 (-9 dB) over noise power at -40 dB: about 31 dB
    assert snrs[0] == pytest.approx(31, abs=2)


def test_bandwidth_is_at_most_the_channel_nyquist():
    rng = np.random.default_rng(1)

    def noise_burst(sr):  # broadband: it fills whatever band the channel carries
        y = np.zeros(sr, np.float32)
        y[sr // 4: sr // 2] = rng.uniform(-0.5, 0.5, sr // 4)
        return y

    assert measure(noise_burst(8000), 8000).bandwidth_hz <= 4000
    assert measure(noise_burst(48000), 48000).bandwidth_hz > 20000


def test_pure_silence_has_no_event_and_is_all_silence():
    q = measure(np.zeros(SR, np.float32), SR)
    assert (q.n_events, q.snr_db, q.bandwidth_hz, q.clipped_fraction, q.silence_fraction) == \
        (0, None, None, 0.0, 1.0)


def test_pure_noise_is_one_long_event_with_a_low_snr():
    noise = np.random.default_rng(2).uniform(-0.3, 0.3, 2 * SR).astype(np.float32)
    q = measure(noise, SR)
    assert q.n_events == 1 and q.silence_fraction < 0.05
    assert q.snr_db < 3  # its quietest frames are as loud as the rest
    assert q.bandwidth_hz > 5000  # white noise fills the band


def test_clipping_is_counted_on_every_channel():
    y = np.clip(3 * np.sin(2 * np.pi * 200 * np.arange(SR) / SR), -1, 1).astype(np.float32)
    q = measure(y, SR)
    assert 0.5 < q.clipped_fraction <= 1.0
    # clipped in one channel of two: the mono average hides it, the channels do not
    stereo = np.stack([y, 0.5 * y])
    assert measure(stereo.mean(axis=0), SR, samples=stereo).clipped_fraction == pytest.approx(q.clipped_fraction / 2)


def test_every_value_is_in_range_for_random_recordings():
    rng = np.random.default_rng(3)
    for _ in range(20):
        sr = int(rng.choice([8000, 16000, 44100]))
        y = cough_signal(rng, positive=bool(rng.integers(2)), sample_rate=sr,
                         duration_s=float(rng.uniform(0.1, 3)))[:, 0]
        q = measure(y, sr)
        assert 0 <= q.clipped_fraction <= 1 and 0 <= q.silence_fraction <= 1
        assert q.bandwidth_hz is None or 0 <= q.bandwidth_hz <= sr / 2
        assert (q.snr_db is None) == (q.n_events == 0) and (q.snr_db is None or np.isfinite(q.snr_db))
        assert np.all(np.diff(q.events, axis=1) > 0)


def test_find_events_of_an_empty_signal():
    assert find_events(np.zeros(0, np.float32), SR).shape == (0, 2)


def test_event_windows_centre_each_cough_and_skip_the_silence():
    from cough.audio.features import DEFAULT_PARAMS as P, event_windows, log_mel, windows

    sr = P.sample_rate
    rng = np.random.default_rng(4)
    y = (1e-3 * rng.standard_normal(10 * sr)).astype(np.float32)
    for at in (2.9, 7.0):  # coughs that the 2 s grid from the start cuts in two or leaves off-centre
        y[int(at * sr):int((at + 0.25) * sr)] += 0.5 * np.sin(2 * np.pi * 500 * np.arange(int(0.25 * sr)) / sr)
    db = log_mel(y)
    spans = measure(y, sr).events
    placed = event_windows(db, spans)
    assert len(placed) == 2 and len(windows(db)) == 5
    for w in placed:  # the cough sits in the middle of its window
        loudest = int(np.argmax(w.max(axis=0)))
        assert abs(loudest - w.shape[1] / 2) < w.shape[1] / 4
    assert all(w.shape == (P.n_mels, P.frames_per_window) for w in placed)
    # no event: the ordinary windows
    assert len(event_windows(db, np.zeros((0, 2)))) == 5


def test_events_and_frame_power_are_librosas():
    import librosa

    from cough.audio.quality import frame_power, split

    rng = np.random.default_rng(9)
    for sr in (8000, 44100):
        y = cough_signal(rng, positive=True, sample_rate=sr, duration_s=2.0)[:, 0]
        frame, hop = int(0.025 * sr), int(0.010 * sr)
        assert np.allclose(frame_power(y, frame_length=frame, hop_length=hop),
                           librosa.feature.rms(y=y, frame_length=frame, hop_length=hop)[0] ** 2, rtol=1e-4, atol=1e-12)
        assert np.array_equal(split(y, top_db=30, frame_length=frame, hop_length=hop),
                              librosa.effects.split(y, top_db=30, frame_length=frame, hop_length=hop))
