"""Mel power spectrograms with numpy, scipy.fft and soxr: librosa's numbers without its import.

``librosa.stft``, ``librosa.filters.mel``, ``librosa.power_to_db`` and
``librosa.resample(res_type="soxr_hq")`` are what the seed used and what these functions
reproduce (tests/test_featurize.py holds them to librosa). Importing librosa's spectral
modules pulls in scipy.signal and numba: 2-4 s in every fresh Ray worker, more than the
whole work of a thousand recordings, for what is a periodic Hann window, a strided view,
an FFT and a triangular filter bank.
"""

from __future__ import annotations

import functools
import math

import numpy as np

#: STFT frames per chunk: bounds the temporary ``frames × n_fft`` array (~8 MB at n_fft 2048)
#: whatever the recording's length.
FRAMES_PER_CHUNK = 1024


def resample(y: np.ndarray, *, orig_sr: int, target_sr: int) -> np.ndarray:
    """``librosa.resample(y, orig_sr=, target_sr=)`` (soxr, high quality, length
    ``ceil(n · target_sr / orig_sr)``). ``y``: mono float32 ``(n,)``."""
    import soxr

    out = soxr.resample(y, orig_sr, target_sr, quality="HQ")
    n = int(math.ceil(len(y) * target_sr / orig_sr))
    return out[:n] if len(out) >= n else np.pad(out, (0, n - len(out)))


@functools.lru_cache(maxsize=8)
def hann(n_fft: int) -> np.ndarray:
    """Periodic Hann window (``scipy.signal.get_window("hann", n_fft)``), float64 ``(n_fft,)``."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (librosa's default, ``htk=False``): linear below 1 kHz, log above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / (200.0 / 3)
    log = hz >= 1000.0
    return np.where(log, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), mel * (200.0 / 3))


@functools.lru_cache(maxsize=8)
def mel_filters(*, sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                fmax: float | None = None) -> np.ndarray:
    """Triangular, Slaney-normalised mel filter bank ``(n_mels, 1 + n_fft // 2)`` float32:
    ``librosa.filters.mel(sr=, n_fft=, n_mels=, fmin=, fmax=)``. Built once per process."""
    fmax = sample_rate / 2.0 if fmax is None else fmax
    fft_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    width = np.diff(edges)
    ramps = np.subtract.outer(edges, fft_hz)
    rising = -ramps[:-2] / width[:-1, None]
    falling = ramps[2:] / width[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights


@functools.lru_cache(maxsize=8)
def _mel_filters_sparse(**kwargs):
    """:func:`mel_filters` as a CSR matrix: each triangle spans a few FFT bins (2018 of the
    131,200 weights are non-zero at 2048/128), so the projection costs 40% of a dense one."""
    import scipy.sparse

    return scipy.sparse.csr_matrix(mel_filters(**kwargs))


def mel_power(y: np.ndarray, *, sample_rate: int, n_fft: int, hop_length: int, n_mels: int,
              fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Mel power spectrogram ``(n_mels, 1 + len(y) // hop_length)`` float32 of mono ``y``:
    centred frames padded with zeros, periodic Hann window, ``|STFT|²`` projected on
    :func:`mel_filters` (``librosa.feature.melspectrogram``'s defaults).

    The FFT runs in float32 (scipy.fft) where librosa runs it in float64: 40% less CPU for
    the featurizer's costliest step. On the shared archive's 2119 images, 300 of 143 million
    uint8 values differ from librosa's path, by at most 3 of 255. The filter bank is applied
    as a sparse matrix (float32 sums in another order: a relative 1e-7).
    """
    import scipy.fft

    basis = _mel_filters_sparse(sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    window = hann(n_fft).astype(np.float32)
    padded = np.pad(np.asarray(y, dtype=np.float32), n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    out = np.empty((n_mels, len(frames)), dtype=np.float32)
    for start in range(0, len(frames), FRAMES_PER_CHUNK):
        spectrum = scipy.fft.rfft(frames[start:start + FRAMES_PER_CHUNK] * window, axis=-1, overwrite_x=True)
        power = np.square(spectrum.real) + np.square(spectrum.imag)
        out[:, start:start + len(power)] = basis @ power.T
    return out


def power_to_db(power: np.ndarray, *, top_db: float, amin: float = 1e-10) -> np.ndarray:
    """``librosa.power_to_db(power, ref=np.max, top_db=top_db)``: dB relative to the peak,
    floored ``top_db`` below it."""
    db = 10.0 * np.log10(np.maximum(amin, power))
    db -= 10.0 * np.log10(np.maximum(amin, power.max(initial=0)))
    return np.maximum(db, db.max(initial=-np.inf) - top_db)
