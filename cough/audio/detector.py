"""Cough detector: frame-level cough probability, cough events and a per-recording
probability, in pure numpy (plus ``soxr`` and ``scipy.fft``).

Any mono recording (float32 samples in [-1, 1] at 8-48 kHz) is resampled to the telephone
band (8 kHz) so that 8 kHz calls and 48 kHz app recordings look alike to it. The front end
(32 ms Hann frames every 16 ms, 32 mel bands 60-3800 Hz, log power) is normalised per
recording so that gain does not matter: band levels relative to the recording's loud
frames, and frame and band levels above the recording's noise floor. A small dilated
1-D conv net (about 1 s of context) gives each frame's probability; smoothing, hysteresis
thresholds, a minimum length and gap merging give the events; the recording probability is
the highest smoothed frame probability.

>>> det = load()                                                     # doctest: +SKIP
>>> d = det.detect(y, 16000)                                         # doctest: +SKIP
>>> d.events        # (n, 2) start/end seconds                       # doctest: +SKIP
>>> d.event_probabilities, d.probability                            # doctest: +SKIP

Weights, front-end parameters, thresholds and the version live in one ``.npz``
(``cough_detector.npz`` beside this file). Import cost: numpy only; ``soxr`` and
``scipy.fft`` are imported on first use.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass

import numpy as np

#: The rate everything is analysed at (telephone band).
SAMPLE_RATE = 8000
#: Default weights file.
DEFAULT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cough_detector.npz")
#: Default threshold on :attr:`Detection.probability` for "this recording holds a cough".
RECORDING_THRESHOLD = 0.5
#: soxr quality used for resampling (the training data went through the same).
RESAMPLE_QUALITY = "HQ"
#: Frames whose absolute level lies below this (dBFS, mel power) are digital silence: probability 0.
SILENCE_DB = -95.0


@dataclass(frozen=True)
class Detection:
    """What :meth:`Detector.detect` finds in one recording.

    ``events``: ``(n, 2)`` float64 start and end in seconds. ``event_probabilities``:
    ``(n,)`` the highest smoothed frame probability inside each event. ``probability``:
    the recording's probability of holding a cough (the highest smoothed frame probability,
    0.0 for an empty or silent recording).
    """

    events: np.ndarray
    event_probabilities: np.ndarray
    probability: float

    @property
    def n_events(self) -> int:
        return int(len(self.events))

    def holds_cough(self, threshold: float = RECORDING_THRESHOLD) -> bool:
        return self.probability >= threshold


def _mel_matrix(n_fft: int, sample_rate: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular mel filters (HTK mel scale), ``(n_fft // 2 + 1, n_mels)`` float32."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)

    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lower) / (centre - lower)
    down = (upper - freqs[None, :]) / (upper - centre)
    w = np.maximum(0.0, np.minimum(up, down))
    w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-9)
    return w.T.astype(np.float32)


class Detector:
    """A loaded detector (see :func:`load`). Thread-safe: holds only read-only arrays."""

    def __init__(self, params: dict):
        p = {k: params[k] for k in params}
        self.version = str(p["version"])
        self.n_fft = int(p["n_fft"])
        self.hop = int(p["hop"])
        self.n_mels = int(p["n_mels"])
        self.fmin, self.fmax = float(p["fmin"]), float(p["fmax"])
        self.floor_pct, self.peak_pct = float(p["floor_pct"]), float(p["peak_pct"])
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(self.n_fft) / self.n_fft)).astype(np.float32)
        self.mel = _mel_matrix(self.n_fft, SAMPLE_RATE, self.n_mels, self.fmin, self.fmax)
        self.dilations = [int(d) for d in p["dilations"]]
        self.layers = [(np.asarray(p[f"w{i}"], np.float32), np.asarray(p[f"b{i}"], np.float32))
                       for i in range(len(self.dilations))]
        self.residual = [bool(r) for r in p["residual"]]
        self.w_out = np.asarray(p["w_out"], np.float32)
        self.b_out = np.float32(p["b_out"])
        self.smooth = int(p["smooth"])
        self.on_threshold = float(p["on_threshold"])
        self.off_threshold = float(p["off_threshold"])
        self.min_event_s = float(p["min_event_s"])
        self.merge_gap_s = float(p["merge_gap_s"])
        self.pad = sum(self.dilations) * (self.layers[0][0].shape[0] // 2) if self.layers else 0

    # ---- front end ---------------------------------------------------------------
    @property
    def frame_s(self) -> float:
        """Seconds between frames."""
        return self.hop / SAMPLE_RATE

    def resample(self, y: np.ndarray, sample_rate: int) -> np.ndarray:
        """``(n,)`` float32 at ``sample_rate`` -> ``(m,)`` float32 at :data:`SAMPLE_RATE`.
        A ``(n, channels)`` array (as soundfile decodes) is averaged to mono first."""
        y = np.asarray(y, np.float32)
        if y.ndim == 2:
            y = y.mean(axis=1, dtype=np.float32)
        y = y.reshape(-1)
        if int(sample_rate) == SAMPLE_RATE or len(y) == 0:
            return y
        import soxr
        return soxr.resample(y, int(sample_rate), SAMPLE_RATE, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)

    def log_mel(self, y8: np.ndarray) -> np.ndarray:
        """Mel power in dB (absolute, floor -100 dB) of 8 kHz samples, ``(n_frames, n_mels)``
        float32; frame ``i`` is centred on sample ``i * hop``."""
        import scipy.fft
        half = self.n_fft // 2
        x = np.zeros(len(y8) + 2 * half, np.float32)
        x[half:half + len(y8)] = y8
        n_frames = 1 + len(y8) // self.hop
        frames = np.lib.stride_tricks.as_strided(
            x, (n_frames, self.n_fft), (x.strides[0] * self.hop, x.strides[0]), writeable=False)
        spec = scipy.fft.rfft(frames * self.window, axis=1)
        power = np.square(spec.real) + np.square(spec.imag)
        mel = power @ self.mel
        return 10.0 * np.log10(mel + 1e-10, dtype=np.float32)

    def features(self, db: np.ndarray) -> np.ndarray:
        """Per-recording normalised features from :meth:`log_mel`, ``(n_frames, 2 * n_mels + 2)``
        float32, all near 0 for the quietest frames (what the network's padding means):
        band dB above (peak - 60 dB), band dB above the band's noise floor, frame dB above the
        noise floor, frame dB above (peak - 60 dB); each / 20, clipped to [0, 3]."""
        energy = 10.0 * np.log10(np.sum(10.0 ** (db / 10.0), axis=1) + 1e-10, dtype=np.float32)
        n = len(energy)
        lo_k = min(n - 1, int(self.floor_pct / 100.0 * (n - 1)))
        hi_k = min(n - 1, int(self.peak_pct / 100.0 * (n - 1)))
        part = np.partition(energy, (lo_k, hi_k))
        floor, peak = part[lo_k], part[hi_k]
        band_floor = np.partition(db, lo_k, axis=0)[lo_k]
        out = np.empty((n, 2 * self.n_mels + 2), np.float32)
        out[:, :self.n_mels] = db - (peak - 60.0)
        out[:, self.n_mels:2 * self.n_mels] = db - band_floor
        out[:, -2] = energy - floor
        out[:, -1] = energy - (peak - 60.0)
        out *= 1.0 / 20.0
        np.clip(out, 0.0, 3.0, out=out)
        return out

    # ---- network -----------------------------------------------------------------
    def logits(self, feats: np.ndarray) -> np.ndarray:
        """Network logits ``(n_frames,)`` from :meth:`features` ``(n_frames, n_features)``.
        The input is zero-padded by the receptive field's half-width; each dilated conv is
        'valid' (the same as the training graph)."""
        x = np.zeros((len(feats) + 2 * self.pad, feats.shape[1]), np.float32)
        x[self.pad:self.pad + len(feats)] = feats
        for (w, b), d, res in zip(self.layers, self.dilations, self.residual):
            k = w.shape[0]
            t = len(x) - (k - 1) * d
            cols = np.concatenate([x[j * d:j * d + t] for j in range(k)], axis=1)
            h = cols @ w.reshape(-1, w.shape[2])
            h += b
            np.maximum(h, 0.0, out=h)
            if res:
                h += x[(k - 1) * d // 2:(k - 1) * d // 2 + t]
            x = h
        return x @ self.w_out + self.b_out

    def frame_probabilities(self, y: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """Cough probability of each frame of a mono recording.

        ``y``: ``(n,)`` float samples at ``sample_rate`` (8-48 kHz). Returns ``(times_s,
        probs)``, both ``(n_frames,)`` float32: frame centres in seconds, raw (unsmoothed)
        probabilities in [0, 1].
        """
        y8 = self.resample(y, sample_rate)
        if len(y8) == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        db = self.log_mel(y8)
        return self._probs_from_db(db)

    def _probs_from_db(self, db):
        times = (np.arange(len(db)) * self.frame_s).astype(np.float32)
        silent = db.max(axis=1) < SILENCE_DB
        if silent.all():
            return times, np.zeros(len(db), np.float32)
        z = self.logits(self.features(db))
        probs = (1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))).astype(np.float32)
        probs[silent] = 0.0
        return times, probs

    # ---- events ------------------------------------------------------------------
    def smoothed(self, probs: np.ndarray) -> np.ndarray:
        """Centred moving average over :attr:`smooth` frames (edges average what exists)."""
        k = self.smooth
        if k <= 1 or len(probs) == 0:
            return probs.astype(np.float32)
        c = np.concatenate([[0.0], np.cumsum(probs, dtype=np.float64)])
        i = np.arange(len(probs))
        lo, hi = np.maximum(i - k // 2, 0), np.minimum(i + k // 2 + 1, len(probs))
        return ((c[hi] - c[lo]) / (hi - lo)).astype(np.float32)

    def events_from(self, probs: np.ndarray, *, on_threshold: float | None = None,
                    off_threshold: float | None = None, min_event_s: float | None = None,
                    merge_gap_s: float | None = None, smoothed: bool = False, raw: np.ndarray | None = None):
        """Events from frame probabilities (hysteresis on the smoothed probabilities: a run of
        frames above ``off_threshold`` that reaches ``on_threshold``; each run is then tightened
        to the frames whose raw probability is above ``off_threshold``, so that smoothing does
        not move onsets; runs closer than ``merge_gap_s`` are merged; shorter than
        ``min_event_s`` dropped). ``smoothed=True``: ``probs`` are smoothed already and ``raw``
        holds the raw ones. Returns ``(events (n, 2) seconds, event_probabilities (n,),
        smoothed probabilities (n_frames,))``."""
        on = self.on_threshold if on_threshold is None else on_threshold
        off = self.off_threshold if off_threshold is None else off_threshold
        min_s = self.min_event_s if min_event_s is None else min_event_s
        gap_s = self.merge_gap_s if merge_gap_s is None else merge_gap_s
        s = probs if smoothed else self.smoothed(probs)
        if not smoothed:
            raw = probs
        above = s >= off
        if not above.any():
            return np.zeros((0, 2)), np.zeros(0), s
        edges = np.flatnonzero(np.diff(np.concatenate([[0], above.astype(np.int8), [0]])))
        runs = edges.reshape(-1, 2)  # [start, end) frames
        peaks = np.maximum.reduceat(s, runs[:, 0]) if len(runs) else np.zeros(0)
        keep = peaks >= on
        runs, peaks = runs[keep], peaks[keep]
        if raw is not None:
            for r in runs:
                idx = np.flatnonzero(raw[r[0]:r[1]] >= off)
                if len(idx):
                    r[1] = r[0] + idx[-1] + 1
                    r[0] = r[0] + idx[0]
        merged: list[list[int]] = []
        mpeaks: list[float] = []
        gap = gap_s / self.frame_s
        for (a, b), pk in zip(runs, peaks):
            if merged and a - merged[-1][1] <= gap:
                merged[-1][1] = b
                mpeaks[-1] = max(mpeaks[-1], pk)
            else:
                merged.append([a, b])
                mpeaks.append(pk)
        ev = np.asarray(merged, np.float64).reshape(-1, 2) * self.frame_s
        ev[:, 0] = np.maximum(ev[:, 0] - 0.5 * self.frame_s, 0.0)
        ev[:, 1] = ev[:, 1] - 0.5 * self.frame_s
        pk = np.asarray(mpeaks, np.float64)
        keep = (ev[:, 1] - ev[:, 0]) >= min_s - 1e-9
        return ev[keep], pk[keep], s

    def detect(self, y: np.ndarray, sample_rate: int) -> Detection:
        """Cough events and the recording probability of a mono recording ``(n,)`` at
        ``sample_rate`` (8-48 kHz). See :class:`Detection`."""
        _, probs = self.frame_probabilities(y, sample_rate)
        return self.detect_probs(probs)

    def detect_probs(self, probs: np.ndarray) -> Detection:
        """:meth:`detect` from :meth:`frame_probabilities`' probabilities."""
        if len(probs) == 0:
            return Detection(np.zeros((0, 2)), np.zeros(0), 0.0)
        ev, pk, s = self.events_from(probs)
        return Detection(ev, pk, float(s.max()))


def load(path: str = DEFAULT_PATH) -> Detector:
    """The detector stored in ``path`` (an ``.npz`` written by ``train_detector.py``)."""
    with np.load(path, allow_pickle=False) as z:
        return Detector({k: z[k] for k in z.files})


# ---- the detector cough ships ---------------------------------------------------------

@functools.lru_cache(maxsize=1)
def shipped() -> Detector:
    """The detector whose weights ship in the package (:data:`DEFAULT_PATH`), loaded once per process."""
    return load(DEFAULT_PATH)


@functools.lru_cache(maxsize=1)
def fingerprint() -> str:
    """The shipped detector's version and the first 16 hex digits of its weights file's
    SHA-256: what enters the featurizer version when windows are placed on its events.

    >>> fingerprint().startswith(shipped().version + ":")
    True
    """
    with open(DEFAULT_PATH, "rb") as f:
        return f"{shipped().version}:{hashlib.sha256(f.read()).hexdigest()[:16]}"
