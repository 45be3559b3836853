"""Recording quality and cough events, measured on the decoded audio at its own rate.

Crowdsourced archives mix channels (8 kHz call centres, 48 kHz messaging apps), quiet
rooms and noisy streets, clipped phone microphones and empty uploads. These numbers say
what a recording is before a model hears it, so that a scoring run can refuse what it
cannot judge (the quality gate) and a report can check whether the model learned the
channel instead of the cough.

Events are found by energy, as :func:`librosa.effects.split` finds them (the same frames
and edges, computed with numpy so that featurizing workers need not import librosa; see
:mod:`cough.audio.melspec`): stretches whose frame power lies within ``event_top_db`` of the
recording's loudest frame, joined across gaps shorter than ``min_gap_s`` and kept when
at least ``min_event_s`` long.

>>> sr = 16000
>>> t = np.arange(2 * sr) / sr
>>> y = 0.001 * np.random.default_rng(0).standard_normal(2 * sr)   # a quiet room
>>> y[sr // 2: sr // 2 + 4000] += 0.5 * np.sin(2 * np.pi * 600 * t[:4000])   # one cough-long burst
>>> q = measure(y.astype(np.float32), sr)
>>> q.n_events, round(q.snr_db) > 30, q.bandwidth_hz < 2000
(1, True, True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .melspec import FRAMES_PER_CHUNK, hann

#: |sample| at or above this share of full scale counts as clipped.
CLIP_LEVEL = 0.999
#: Share of a recording's frames, the quietest, taken as its background noise.
NOISE_QUANTILE = 0.1
#: Power floor (about -120 dBFS) so that digital silence gives finite decibels.
POWER_FLOOR = 1e-12


@dataclass(frozen=True)
class QualityParams:
    """How events are found and how quality is measured (recorded with the featurizer)."""

    event_top_db: float = 30.0
    min_event_s: float = 0.05
    min_gap_s: float = 0.2
    frame_s: float = 0.025
    hop_s: float = 0.010
    rolloff: float = 0.99

    def __post_init__(self):
        if not 0 < self.event_top_db <= 120:
            raise UsageError("event_top_db must lie in (0, 120] dB")
        if self.min_event_s < 0 or self.min_gap_s < 0:
            raise UsageError("min_event_s and min_gap_s must be >= 0 seconds")
        if not 0 < self.hop_s <= self.frame_s:
            raise UsageError("hop_s must be positive and at most frame_s")
        if not 0.5 <= self.rolloff < 1:
            raise UsageError("rolloff must lie in [0.5, 1)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "QualityParams":
        return cls(**d)


DEFAULT_QUALITY = QualityParams()


@dataclass(frozen=True)
class Quality:
    """One recording's quality, the columns ``recordings`` and PRED carry.

    ``snr_db``: mean power of the events over that of the quietest tenth of the frames, in
    dB (None without events). ``bandwidth_hz``: the
    frequency below which ``rolloff`` of the events' energy lies (None without events).
    ``clipped_fraction``, ``silence_fraction``: shares of samples, in [0, 1].
    ``events``: ``(n_events, 2)`` start and end in seconds.
    """

    snr_db: float | None
    bandwidth_hz: float | None
    clipped_fraction: float
    silence_fraction: float
    events: np.ndarray

    @property
    def n_events(self) -> int:
        return int(len(self.events))

    def to_row(self) -> dict:
        """The row values (events become their count)."""
        return {"snr_db": self.snr_db, "bandwidth_hz": self.bandwidth_hz,
                "clipped_fraction": self.clipped_fraction, "silence_fraction": self.silence_fraction,
                "n_events": self.n_events}


#: Columns :meth:`Quality.to_row` fills, in table order.
QUALITY_COLUMNS = ("snr_db", "bandwidth_hz", "clipped_fraction", "silence_fraction", "n_events")


def frame_power(y: np.ndarray, *, frame_length: int, hop_length: int) -> np.ndarray:
    """Mean power of frames centred every ``hop_length`` samples, zero-padded at the ends:
    ``librosa.feature.rms(y=y, frame_length=, hop_length=)[0] ** 2``. ``(n_frames,)`` float64.

    >>> frame_power(np.ones(1000, np.float32), frame_length=100, hop_length=50)[[0, 10]]
    array([0.5, 1. ])
    """
    # Running sums of squares: 8 bytes per sample, where the frames themselves would take
    # frame_length / hop_length times as many (the featurizer's memory budget counts bytes).
    # Squared and summed in place in one array, zeros around it as the padding.
    pad = frame_length // 2
    energy = np.zeros(len(y) + 2 * pad + 1)
    np.square(y, out=energy[1 + pad:1 + pad + len(y)], dtype=np.float64)
    np.cumsum(energy, out=energy)
    starts = np.arange(0, len(energy) - frame_length, hop_length)
    return (energy[starts + frame_length] - energy[starts]) / frame_length


def split(y: np.ndarray, *, top_db: float, frame_length: int, hop_length: int,
          power: np.ndarray | None = None) -> np.ndarray:
    """Non-silent intervals ``(n, 2)`` in samples: ``librosa.effects.split`` (frames within
    ``top_db`` of the loudest frame). ``power``: :func:`frame_power` of ``y`` with these
    frames, when the caller has it already."""
    if power is None:
        power = frame_power(y, frame_length=frame_length, hop_length=hop_length)
    db = 10 * np.log10(np.maximum(power, 1e-10)) - 10 * np.log10(max(power.max(), 1e-10))
    loud = (db > -top_db).astype(np.int8)
    edges = np.flatnonzero(np.diff(loud)) + 1
    edges = np.concatenate([[0] if loud[0] else [], edges, [len(loud)] if loud[-1] else []])
    return np.minimum(edges.astype(np.int64) * hop_length, len(y)).reshape(-1, 2)


def find_events(y: np.ndarray, sample_rate: int, *, params: QualityParams = DEFAULT_QUALITY,
                power: np.ndarray | None = None) -> np.ndarray:
    """Cough events of a mono signal: ``(n, 2)`` sample indices ``[start, end)``. ``power``:
    :func:`frame_power` of ``y`` at ``params``' frames, when the caller has it already.

    >>> y = np.zeros(16000, np.float32); y[4000:6000] = 0.5; y[9000:9500] = 0.5
    >>> find_events(y, 16000).tolist()   # two bursts 0.19 s apart are one event
    [[3840, 9760]]
    """
    frame, hop = _frame(params.frame_s, sample_rate), _frame(params.hop_s, sample_rate)
    if len(y) == 0 or np.max(np.abs(y)) == 0:
        return np.zeros((0, 2), np.int64)
    spans = split(y, top_db=params.event_top_db, frame_length=frame, hop_length=hop, power=power)
    merged: list[list[int]] = []
    gap = params.min_gap_s * sample_rate
    for start, end in spans:
        if merged and start - merged[-1][1] < gap:
            merged[-1][1] = int(end)
        else:
            merged.append([int(start), int(end)])
    keep = [s for s in merged if s[1] - s[0] >= params.min_event_s * sample_rate]
    return np.asarray(keep, np.int64).reshape(-1, 2)


def measure(y: np.ndarray, sample_rate: int, *, samples: np.ndarray | None = None,
            params: QualityParams = DEFAULT_QUALITY) -> Quality:
    """Quality of one recording.

    ``y``: mono float32 at the recording's own ``sample_rate`` (before any resampling, so
    that a narrow channel shows its real bandwidth). ``samples``: the decoded channels
    ``(channels, n)`` for the clipping count (default ``y``), since averaging channels
    hides clipping in one of them.

    The background is the quietest ``NOISE_QUANTILE`` of the frames, wherever they lie:
    crowdsourced coughs are often cut so tight that no frame lies outside an event, and a
    recording of pure noise must still come out as noise (a few dB), not as "no background".
    """
    raw = y if samples is None else samples
    clipped = float(np.count_nonzero((raw >= CLIP_LEVEL) | (raw <= -CLIP_LEVEL)) / raw.size) if raw.size else 0.0
    frame, hop = _frame(params.frame_s, sample_rate), _frame(params.hop_s, sample_rate)
    power = frame_power(y, frame_length=frame, hop_length=hop)  # once, for the events and the SNR
    spans = find_events(y, sample_rate, params=params, power=power)
    in_event = np.zeros(len(y), bool)
    for start, end in spans:
        in_event[start:end] = True
    silence = float(1.0 - in_event.mean()) if len(y) else 1.0
    if len(spans) == 0:
        return Quality(None, None, clipped, silence, np.zeros((0, 2)))
    centres = np.minimum(np.arange(len(power)) * hop, len(y) - 1)
    event_power = power[in_event[centres]] if in_event[centres].any() else power
    quiet = max(1, int(NOISE_QUANTILE * len(power)))
    quietest = np.partition(power, quiet - 1)[:quiet]
    snr = 10 * np.log10(max(float(event_power.mean()), POWER_FLOOR) / max(float(quietest.mean()), POWER_FLOOR))
    return Quality(
        snr_db=round(float(snr), 2),
        bandwidth_hz=_bandwidth(y[in_event], sample_rate, params.rolloff),
        clipped_fraction=clipped, silence_fraction=silence,
        events=spans / float(sample_rate))


def _bandwidth(y: np.ndarray, sample_rate: int, rolloff: float) -> float:
    """Frequency below which ``rolloff`` of the signal's energy lies (Hann-windowed frames,
    power spectra averaged). The FFT runs in float32 as in :mod:`cough.audio.melspec` (half the CPU
    of float64); the spectra are summed in float64."""
    import scipy.fft

    n_fft = min(2048, 1 << int(np.log2(max(len(y), 2))))
    frames = np.lib.stride_tricks.sliding_window_view(np.asarray(y, np.float32), n_fft)[::n_fft // 4]
    window, total = hann(n_fft).astype(np.float32), np.zeros(n_fft // 2 + 1)
    for start in range(0, len(frames), FRAMES_PER_CHUNK):  # bounded temporaries, as in cough.audio.melspec
        spectrum = scipy.fft.rfft(frames[start:start + FRAMES_PER_CHUNK] * window, axis=1, overwrite_x=True)
        total += (np.square(spectrum.real) + np.square(spectrum.imag)).sum(axis=0, dtype=np.float64)
    energy = np.cumsum(total)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    return float(freqs[int(np.searchsorted(energy, rolloff * energy[-1]))])


def _frame(seconds: float, sample_rate: int) -> int:
    return max(1, int(round(seconds * sample_rate)))


@dataclass(frozen=True)
class QualityGate:
    """Thresholds under which ``cough score`` does not score a recording but keeps it as a
    ``rejected`` row with the reason. Defaults come from the shared archive (docs/quality.md):
    they reject what no model should be asked to judge, not what is merely unusual. On that
    archive 3 dB rejects 12 of 1322 recordings (pure noise measures 0-2 dB; 6 dB would
    reject 3%, nearly all positive call-centre recordings, and so bias what is scored);
    no recording there has no event or more than 1% of its samples clipped.

    >>> QualityGate().reason({"n_events": 1, "snr_db": 2.1, "clipped_fraction": 0.0})
    'too noisy: snr 2.10 dB < 3 dB'
    >>> QualityGate().reason({"n_events": 2, "snr_db": 25.0, "clipped_fraction": 0.0}) is None
    True
    """

    min_snr_db: float = 3.0
    min_events: int = 1
    max_clipped_fraction: float = 0.05

    def __post_init__(self):
        if not np.isfinite(self.min_snr_db) or self.min_events < 0 or not 0 <= self.max_clipped_fraction <= 1:
            raise UsageError("quality gate: min_snr_db must be finite, min_events >= 0, "
                             "max_clipped_fraction in [0, 1]")

    def reason(self, row: dict) -> str | None:
        """Why the recording of ``row`` (quality columns) is rejected, or None. A row without
        quality values (features made before they existed) is not judged."""
        events, snr, clipped = row.get("n_events"), row.get("snr_db"), row.get("clipped_fraction")
        if events is not None and events < self.min_events:
            return "no cough event found" if events == 0 else \
                f"too few cough events: {events} < {self.min_events}"
        if clipped is not None and clipped > self.max_clipped_fraction:
            return f"clipped: {clipped:.0%} of samples at full scale > {self.max_clipped_fraction:.0%}"
        if snr is not None and snr < self.min_snr_db:
            return f"too noisy: snr {snr:.2f} dB < {self.min_snr_db:g} dB"
        return None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: No recording is rejected.
NO_GATE = QualityGate(min_snr_db=-1e9, min_events=0, max_clipped_fraction=1.0)
