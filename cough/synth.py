"""Synthetic labelled cough archives for demos, tests and load tests.

Each participant gives 1–4 recordings of 1–4 cough-like bursts (band-limited noise
with a fast attack and exponential decay, over a faint noise floor). The learnable
class difference: positive participants' coughs are lower and carry a wheeze-like
tone, negative ones are brighter. Formats (mp3/wav/ogg/flac), sample rates
(8–48 kHz), channel counts and durations (0.3–10 s) are mixed.
"""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf

from .errors import UsageError
from .tables.provenance import MARKER, synth_marker

RATES = (8000, 16000, 22050, 44100, 48000)
FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"),
           "mp3": ("MP3", "MPEG_LAYER_III")}


class Burst(NamedTuple):
    """One synthetic cough burst: where it starts, how fast it decays, how loud it is."""

    onset_s: float
    tau_s: float  # the envelope's decay time constant: it falls 20 dB in 2.3 tau
    amplitude: float

    @property
    def end_s(self) -> float:
        """Where the burst has fallen 20 dB under its peak (what counts as the cough)."""
        return self.onset_s + 2.3 * self.tau_s


def cough_bursts(rng: np.random.Generator, *, positive: bool, sample_rate: int, duration_s: float,
                 channels: int = 1) -> tuple[np.ndarray, list[Burst]]:
    """One synthetic recording, shape ``(n, channels)`` float32, and its bursts: the ground
    truth of where the coughs are (tests and the cough detector's training, bench/detector/).

    >>> y, bursts = cough_bursts(np.random.default_rng(0), positive=True, sample_rate=16000, duration_s=1.0)
    >>> y.shape, 1 <= len(bursts) <= 4
    ((16000, 1), True)
    """
    n = max(1, int(round(duration_s * sample_rate)))
    t = np.arange(n) / sample_rate
    y = rng.normal(0, 10 ** (-50 / 20), n)
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    bursts = []
    for _ in range(int(rng.integers(1, 5))):
        onset = rng.uniform(0, max(duration_s - 0.15, 0.01))
        center = rng.normal(550, 120) if positive else rng.normal(1900, 400)
        width = rng.uniform(250, 600)
        shape = np.exp(-0.5 * ((freqs - center) / width) ** 2)
        burst = np.fft.irfft(np.fft.rfft(rng.normal(0, 1, n)) * shape, n)
        burst /= np.max(np.abs(burst)) + 1e-9
        if positive:  # a wheeze: a tone between 250 and 600 Hz
            burst += 0.35 * np.sin(2 * np.pi * rng.uniform(250, 600) * t)
        rel = np.clip(t - onset, 0, None)
        tau = rng.uniform(0.08, 0.2)
        envelope = (1 - np.exp(-rel / 0.008)) * np.exp(-rel / tau) * (t >= onset)
        amplitude = rng.uniform(0.3, 0.9)
        y += amplitude * envelope * burst
        bursts.append(Burst(float(onset), float(tau), float(amplitude)))
    y = np.clip(y / max(1.0, np.max(np.abs(y)) / 0.95), -1, 1)
    stereo = np.stack([y * g for g in rng.uniform(0.7, 1.0, channels)], axis=1)
    return stereo.astype(np.float32), bursts


def cough_signal(rng: np.random.Generator, *, positive: bool, sample_rate: int, duration_s: float,
                 channels: int = 1) -> np.ndarray:
    """One synthetic recording, shape ``(n, channels)`` float32 (:func:`cough_bursts` without its bursts).

    >>> y = cough_signal(np.random.default_rng(0), positive=True, sample_rate=16000, duration_s=1.0)
    >>> y.shape
    (16000, 1)
    """
    return cough_bursts(rng, positive=positive, sample_rate=sample_rate, duration_s=duration_s,
                        channels=channels)[0]


def speech_like_signal(rng: np.random.Generator, *, sample_rate: int, duration_s: float) -> np.ndarray:
    """Speech-like sound that holds no cough, ``(n,)`` float32 in [-1, 1]: syllables of voiced
    harmonics (f0 80-260 Hz, a moving contour) through three formants, with fricative noise
    and pauses, at a syllable rate of a few per second. For tests and the cough detector's
    negatives (bench/detector/): what a call holds around its cough.

    >>> speech_like_signal(np.random.default_rng(0), sample_rate=8000, duration_s=1.0).shape
    (8000,)
    """
    n = max(1, int(round(duration_s * sample_rate)))
    y = np.zeros(n)
    f0_base = rng.uniform(80, 260)
    pos = int(rng.uniform(0, 0.3) * sample_rate)
    while pos < n:
        seg = min(int(rng.uniform(0.08, 0.35) * sample_rate), n - pos)
        if seg <= 8:
            break
        t = np.arange(seg) / sample_rate
        f = np.fft.rfftfreq(seg, 1 / sample_rate)
        if rng.random() < 0.2:  # a fricative: band-limited noise
            centre, width = rng.uniform(1500, 3800), rng.uniform(300, 1500)
            s = np.fft.irfft(np.fft.rfft(rng.normal(0, 1, seg)) * np.exp(-0.5 * ((f - centre) / width) ** 2), seg)
            s = s / (np.std(s) + 1e-12) * rng.uniform(0.05, 0.5)
            envelope = np.clip(np.sin(np.pi * t / t[-1]), 0, 1) ** rng.uniform(0.5, 2)
        else:  # a voiced syllable: harmonics of a moving f0 through three formants
            f0 = f0_base * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t + rng.uniform(0, 6.28))
                            + 0.1 * rng.normal())
            phase = 2 * np.pi * np.cumsum(f0) / sample_rate
            source = sum(np.sin(h * phase) / h ** 0.5 for h in range(1, int(min(3800, sample_rate / 2) / f0_base)))
            formants = [rng.uniform(250, 900), rng.uniform(850, 2500), rng.uniform(2200, 3600)]
            shape = sum(np.exp(-0.5 * ((f - fm) / (rng.uniform(50, 150) + 0.05 * fm)) ** 2) / (k + 1)
                        for k, fm in enumerate(formants)) + 0.01
            s = np.fft.irfft(np.fft.rfft(source) * shape, seg)
            s = s / (np.std(s) + 1e-12)
            envelope = np.clip(np.sin(np.pi * t / t[-1]), 0, 1) ** rng.uniform(0.3, 1.5)
        y[pos:pos + seg] += envelope * s * rng.uniform(0.3, 1.0)
        pos += seg
        if rng.random() < 0.25:  # a pause
            pos += int(rng.uniform(0.05, 0.8) * sample_rate)
    return (y / (np.max(np.abs(y)) + 1e-12)).astype(np.float32)


def _plan(n: int, seed: int, max_duration_s: float, positive_rate: float,
          formats: tuple[str, ...]) -> list[dict]:
    rng = np.random.default_rng(seed)
    plan: list[dict] = []
    participant = 0
    while len(plan) < n:
        positive = bool(rng.random() < positive_rate)
        site = str(rng.choice(["app", "clinic", "call-centre"]))
        # The seed is part of the participant id, so archives made with different seeds
        # never share a participant (a report would take them for training participants).
        group = f"s{seed}p{participant:05d}"
        for k in range(int(rng.integers(1, 5))):
            if len(plan) == n:
                break
            fmt = str(rng.choice(list(formats)))
            plan.append({"filename": f"{group}-{k}.{fmt}", "label": int(positive),
                         "participant": group, "site": site,
                         "sample_rate": int(rng.choice(RATES)), "channels": int(rng.integers(1, 3)),
                         "duration_s": float(rng.uniform(0.3, max_duration_s)), "format": fmt,
                         "seed": int(rng.integers(2**31))})
        participant += 1
    return plan


def _write_one(item: dict, raw: str) -> None:
    rng = np.random.default_rng(item["seed"])
    y = cough_signal(rng, positive=bool(item["label"]), sample_rate=item["sample_rate"],
                     duration_s=item["duration_s"], channels=item["channels"])
    fmt, subtype = FORMATS[item["format"]]
    sf.write(os.path.join(raw, item["filename"]), y, item["sample_rate"], format=fmt, subtype=subtype)


def _write_chunk(args) -> None:
    items, raw = args
    for item in items:
        _write_one(item, raw)


def synth_archive(out: str | Path, *, n: int, seed: int = 0, max_duration_s: float = 10.0,
                  positive_rate: float = 0.4, formats: tuple[str, ...] = tuple(FORMATS),
                  workers: int | None = None) -> dict:
    """Write ``n`` recordings to ``out/raw``, their labels to ``out/labels.csv``, and the
    parameters to ``out/synth.json`` (:data:`cough.tables.provenance.MARKER`: this is synthetic data).

    >>> synth_archive("/tmp/archive", n=20, seed=1)   # doctest: +SKIP
    {'out': '/tmp/archive', 'recordings': 20, 'participants': 8, 'positive': 9}
    """
    if n < 1:
        raise UsageError("--n must be at least 1")
    if not 0.3 <= max_duration_s:
        raise UsageError("--max-duration-s must be at least 0.3")
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise UsageError(f"--formats takes a comma-separated subset of {','.join(FORMATS)}")
    plan = _plan(n, seed, max_duration_s, positive_rate, tuple(formats))
    raw = os.path.join(str(out), "raw")
    os.makedirs(raw, exist_ok=True)
    workers = workers or min(os.cpu_count() or 1, max(1, n // 200))
    chunks = [(plan[i::workers], raw) for i in range(workers)]
    if workers == 1:
        _write_chunk(chunks[0])
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_chunk, chunks))
    with open(os.path.join(str(out), "labels.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, ["filename", "label", "participant", "site"], extrasaction="ignore")
        writer.writeheader()
        for item in plan:
            writer.writerow({**item, "label": "positive" if item["label"] else "negative"})
    with open(os.path.join(str(out), MARKER), "w") as f:  # how a report recognises synthetic data
        json.dump(synth_marker(n=n, seed=seed, max_duration_s=max_duration_s, positive_rate=positive_rate,
                               formats=list(formats)), f, indent=1)
    return {"out": str(out), "recordings": n, "participants": len({p["participant"] for p in plan}),
            "positive": sum(p["label"] for p in plan)}
