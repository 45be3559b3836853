"""One recording, from its path to its ``recordings`` row and its window images.

This is the single featurizing code path: ``cough featurize`` and ``cough score``
on a raw archive both call :func:`process`, so identical files give identical images.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from threadpoolctl import ThreadpoolController

from .decode import RECORDING_BUDGET, Budget, decode
from ..errors import RecordingError
from . import detector
from .detector import RECORDING_THRESHOLD
from .features import DEFAULT_PARAMS, FeaturizerParams, Windows, featurize, mono
from .quality import measure


@functools.lru_cache(maxsize=1)
def _threadpools() -> ThreadpoolController:
    """Found once per process: looking the libraries up costs ~3 ms, more than a short recording."""
    return ThreadpoolController()


def recording_id(data: bytes) -> str:
    """Stable content hash of a file's bytes: the same bytes, the same id, whatever the name."""
    return hashlib.sha256(data).hexdigest()[:32]


class Readable(Protocol):
    """Where a recording's bytes come from: its ``path`` as rows show it, and a ``read`` that
    raises :class:`~cough.errors.RecordingError` with a reason when they cannot be had
    (:class:`cough.tables.listing.Entry` is one)."""

    @property
    def path(self) -> str: ...

    def read(self, *, max_bytes: int) -> bytes: ...


#: How far an annotated span may end past the recording's end (decoders disagree on the last frame).
SPAN_TOLERANCE_S = 0.1


@dataclass
class Processed:
    """A ``recordings`` row (``row``); the cough events the detector found in it, ``(n, 3)``
    start_s, end_s, cough_probability (for every recording that decodes, kept or rejected);
    and, when it is ``ok``, its windows."""

    row: dict
    events: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    windows: Windows | None = None


def annotated_span(info: dict, duration_s: float) -> tuple[float, float] | None:
    """The annotated cough span of a recording (``cough_start_s``, ``cough_end_s`` from the
    labels CSV), checked against its ``duration_s``; None when it has none. A span that is
    half given, empty, or not inside the recording is a :class:`RecordingError` naming it.

    >>> annotated_span({"cough_start_s": 1.5, "cough_end_s": 3.0}, 10.0)
    (1.5, 3.0)
    >>> annotated_span({"cough_start_s": 48.7, "cough_end_s": 51.1}, 30.2)
    Traceback (most recent call last):
    ...
    cough.errors.RecordingError: annotated cough span 48.7-51.1 s lies outside the recording (30.2 s long)
    """
    start, end = info.get("cough_start_s"), info.get("cough_end_s")
    if start is None and end is None:
        return None
    if start is None or end is None:
        raise RecordingError(f"annotated cough span has only {'an end' if start is None else 'a start'} "
                             f"({start if end is None else end:g} s): give cough_start_s and cough_end_s")
    shown = f"annotated cough span {start:g}-{end:g} s"
    if not end > start >= 0:
        raise RecordingError(f"{shown} is empty or negative")
    if start >= duration_s or end > duration_s + SPAN_TOLERANCE_S:
        where = "lies outside" if start >= duration_s else f"ends {end - duration_s:.1f} s after the end of"
        raise RecordingError(f"{shown} {where} the recording ({duration_s:.1f} s long)")
    return float(start), float(min(end, duration_s))


def no_cough(probability: float, *, min_probability: float) -> str | None:
    """The one rule for "this recording holds no cough", shared by featurize (so train never
    sees it) and score: the detector's recording probability below ``min_probability``.

    >>> no_cough(0.03, min_probability=0.5)
    'no cough detected (p=0.03)'
    >>> no_cough(0.97, min_probability=0.5) is None
    True
    """
    return f"no cough detected (p={probability:.2f})" if probability < min_probability else None


def process(entry: Readable, info: dict | None = None, *, params: FeaturizerParams = DEFAULT_PARAMS,
            min_cough_probability: float = RECORDING_THRESHOLD, data: bytes | None = None,
            budget: int = RECORDING_BUDGET) -> Processed:
    """Read, decode, measure (:mod:`cough.audio.quality`), find the coughs
    (:mod:`cough.audio.detector`) and featurize one recording (a :class:`Readable`: an
    :class:`~cough.tables.listing.Entry` of SOURCE); a bad one gives an ``error`` row, one
    without a cough (:func:`no_cough`) a ``rejected`` row; never raises.

    ``info`` carries ``label``, ``participant``, the annotated span (:func:`annotated_span`:
    it restricts the windows, and a recording with one is never rejected for want of a cough)
    and metadata into the row; ``data``, the file's bytes when the caller has read them
    already; ``budget``, the bytes of memory the recording may use, its file included
    (:class:`cough.audio.decode.Budget`).
    """
    row = {"recording_id": None, "path": entry.path, "status": "error", "error": None, "duration_s": None,
           "sample_rate": None, "channels": None, "format": None, "n_windows": 0, "cough_probability": None,
           "n_coughs": None, "dropped_windows": None, **(info or {})}
    events = np.zeros((0, 3))
    try:
        if data is None:
            data = entry.read(max_bytes=budget)
    except RecordingError as exc:
        row["error"] = str(exc)
        return Processed(row)
    row["recording_id"] = recording_id(data)
    try:
        audio = decode(data, budget=Budget(budget - len(data), target_rate=params.sample_rate))
        row.update(duration_s=audio.duration_s, sample_rate=audio.sample_rate,
                   channels=audio.channels, format=audio.format)
        # One recording is small work: BLAS threads only fight the other Ray workers for cores
        # (25x slower mel projection measured on a busy 2-core machine).
        with _threadpools().limit(limits=1):
            y = mono(audio)
            quality = measure(y, audio.sample_rate, samples=audio.samples)
            row.update(quality.to_row())
            found = detector.shipped().detect(y, audio.sample_rate)
            events = np.column_stack([found.events, found.event_probabilities]).reshape(-1, 3)
            row.update(cough_probability=round(found.probability, 4), n_coughs=found.n_events)
            span = annotated_span(row, audio.duration_s)
            reason = None if span is not None else no_cough(found.probability, min_probability=min_cough_probability)
            if reason is not None:
                row.update(status="rejected", error=reason)
                return Processed(row, events)
            windows = featurize(audio, params=params, events_s=quality.events, coughs_s=found.events, span_s=span,
                                y=y)
    except RecordingError as exc:
        row["error"] = str(exc)
        return Processed(row, events)
    except Exception as exc:  # a decoder bug on one file must not stop an archive-wide job
        row["error"] = f"unexpected {type(exc).__name__} while processing: {str(exc)[:300]}"
        return Processed(row, events)
    row.update(status="ok", n_windows=len(windows), dropped_windows=windows.dropped)
    return Processed(row, events, windows)
