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
from .features import DEFAULT_PARAMS, FeaturizerParams, featurize, mono
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


@dataclass
class Processed:
    """A ``recordings`` row (``row``) and, when it is ``ok``, its windows."""

    row: dict
    images: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 3), np.uint8))
    log_mel: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float16))


def process(entry: Readable, info: dict | None = None, *, params: FeaturizerParams = DEFAULT_PARAMS,
            data: bytes | None = None, budget: int = RECORDING_BUDGET) -> Processed:
    """Read, decode, measure (:mod:`cough.audio.quality`) and featurize one recording (a
    :class:`Readable`: an :class:`~cough.tables.listing.Entry` of SOURCE); a bad one gives an
    ``error`` row, never raises.

    ``info`` carries ``label``, ``group`` and metadata into the row; ``data``, the file's
    bytes when the caller has read them already; ``budget``, the bytes of memory the
    recording may use, its file included (:class:`cough.audio.decode.Budget`).
    """
    row = {"recording_id": None, "path": entry.path, "status": "error", "error": None, "duration_s": None,
           "sample_rate": None, "channels": None, "format": None, "n_windows": 0, **(info or {})}
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
            images, log_mel = featurize(audio, params=params, events_s=quality.events, y=y)
    except RecordingError as exc:
        row["error"] = str(exc)
        return Processed(row)
    except Exception as exc:  # a decoder bug on one file must not stop an archive-wide job
        row["error"] = f"unexpected {type(exc).__name__} while processing: {str(exc)[:300]}"
        return Processed(row)
    row.update(status="ok", n_windows=int(len(images)))
    return Processed(row, images, log_mel)
