"""From decoded audio to the seed CNN's input: log-mel windows rendered as 150×150 RGB.

The seed loaded audio with librosa at 22050 Hz, computed a mel spectrogram and saved
it as a picture. We keep that signal path (the same numbers as librosa's, computed by
:mod:`cough.audio.melspec` without importing librosa) but render each fixed-span window straight
to a uint8 array (no matplotlib figure), so every image covers the same time span:
long recordings yield several images, short ones are padded, none is stretched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import UsageError
from . import melspec
from .colormap import lookup_table
from .decode import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, Audio
from .detector import fingerprint as detector_fingerprint

#: Bump when the meaning of the same parameters changes (code, not settings).
FEATURIZER_CODE_VERSION = 1
#: Longest window: one image's log-mel (128 × 2585 frames at 60 s) stays small.
MAX_WINDOW_S = 60.0


#: Where windows are cut: from the recording's start every ``hop_s`` (the seed's way),
#: centred on the energy events that :mod:`cough.audio.quality` finds, or centred on the
#: coughs that :mod:`cough.audio.detector` finds.
WINDOWINGS = ("start", "events", "coughs")
#: Settings added after FEATURIZER_CODE_VERSION 1 (see :attr:`FeaturizerParams.version`).
LATER_SETTINGS = ("windowing", "bandwidth_hz")


@dataclass(frozen=True)
class FeaturizerParams:
    """Every setting that changes the images. Recorded in the manifest and the model.

    Defaults: 22050 Hz (the seed's rate), 128 mel bands, 2.0 s windows with no overlap,
    dB range 80 relative to the recording's peak, the perceptual ``magma`` colormap.
    ``windowing``: ``"start"``, ``"events"`` (windows on energy events) or ``"coughs"``
    (windows on the cough detector's events; its weights then enter :attr:`version`). ``bandwidth_hz``:
    when set, every recording is first band-limited to it (resampled to twice that rate), so
    that the channel's bandwidth cannot show in the image: a common band for archives that
    mix 8 kHz phone lines with 48 kHz apps.
    """

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    window_s: float = 2.0
    hop_s: float = 2.0
    min_tail_s: float = 0.5
    top_db: float = 80.0
    image_size: int = 150
    colormap: str = "magma"
    silence_peak: float = 1e-4
    windowing: str = "start"
    bandwidth_hz: float | None = None

    def __post_init__(self):
        for name, ok, rule in (
            ("sample_rate", MIN_SAMPLE_RATE <= self.sample_rate <= MAX_SAMPLE_RATE,
             f"between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz"),
            ("n_fft", 16 <= self.n_fft <= 1 << 16, "between 16 and 65536"),
            ("hop_length", 1 <= self.hop_length <= self.n_fft, "between 1 and n_fft"),
            ("n_mels", 1 <= self.n_mels <= self.n_fft // 2 + 1, "between 1 and n_fft / 2 + 1"),
            ("fmin", 0 <= self.fmin < self.sample_rate / 2, "at least 0 and below sample_rate / 2"),
            ("fmax", self.fmax is None or self.fmin < self.fmax <= self.sample_rate / 2,
             "above fmin and at most sample_rate / 2"),
            ("window_s", 0 < self.window_s <= MAX_WINDOW_S, f"above 0 and at most {MAX_WINDOW_S:g} seconds"),
            ("hop_s", 0 < self.hop_s <= MAX_WINDOW_S, f"above 0 and at most {MAX_WINDOW_S:g} seconds"),
            ("min_tail_s", 0 <= self.min_tail_s <= self.window_s, "between 0 and window_s"),
            ("top_db", 0 < self.top_db <= 200, "above 0 and at most 200 dB"),
            ("image_size", 8 <= self.image_size <= 1024, "between 8 and 1024 pixels"),
            ("silence_peak", 0 <= self.silence_peak < 1, "at least 0 and below 1"),
        ):
            if not ok:  # NaN fails every comparison, so it lands here too
                raise UsageError(f"featurizer parameter {name} must be {rule}, not {getattr(self, name)!r}")
        if self.windowing not in WINDOWINGS:
            raise UsageError(f"featurizer parameter windowing must be one of {', '.join(WINDOWINGS)}, "
                             f"not {self.windowing!r}")
        if self.bandwidth_hz is not None and not 500 <= self.bandwidth_hz <= self.sample_rate / 2:
            raise UsageError(f"featurizer parameter bandwidth_hz must lie between 500 Hz and sample_rate / 2 "
                             f"({self.sample_rate / 2:g} Hz), not {self.bandwidth_hz!r}")

    @property
    def frames_per_window(self) -> int:
        return int(round(self.window_s * self.sample_rate / self.hop_length)) + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeaturizerParams":
        return cls(**d)

    @property
    def version(self) -> str:
        """Hash of the parameters and the code version: equal hashes, equal images.

        Settings added after version 1 enter the hash only when they differ from their
        default, so models and features made before them keep their version."""
        later = {k: v for k, v in self.to_dict().items()
                 if k in LATER_SETTINGS and v == getattr(FeaturizerParams, k)}
        # The detector places the windows only with windowing "coughs": only then do its
        # weights change the images.
        detector = {"detector": detector_fingerprint()} if self.windowing == "coughs" else {}
        blob = json.dumps({"code": FEATURIZER_CODE_VERSION, **detector,
                           **{k: v for k, v in self.to_dict().items() if k not in later}}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


DEFAULT_PARAMS = FeaturizerParams()


def mono(audio: Audio) -> np.ndarray:
    """The channels averaged, at the recording's own rate: ``(n,)`` float32."""
    y = audio.samples.mean(axis=0) if audio.channels > 1 else audio.samples[0]
    return np.ascontiguousarray(y, dtype=np.float32)


def to_rate(y: np.ndarray, sample_rate: int, *, params: FeaturizerParams = DEFAULT_PARAMS) -> np.ndarray:
    """Resample mono ``y`` to ``params.sample_rate`` (soxr, as librosa does), through the common
    band ``params.bandwidth_hz`` when one is set (soxr's anti-alias filter is the low-pass)."""
    if params.bandwidth_hz is not None and sample_rate > 2 * params.bandwidth_hz:
        band_rate = int(round(2 * params.bandwidth_hz))
        y, sample_rate = melspec.resample(y, orig_sr=sample_rate, target_sr=band_rate), band_rate
    if sample_rate != params.sample_rate:
        y = melspec.resample(y, orig_sr=sample_rate, target_sr=params.sample_rate)
    return np.ascontiguousarray(y, dtype=np.float32)


def to_mono(audio: Audio, *, params: FeaturizerParams = DEFAULT_PARAMS) -> np.ndarray:
    """Average the channels and resample to ``params.sample_rate``."""
    return to_rate(mono(audio), audio.sample_rate, params=params)


def log_mel(y: np.ndarray, *, params: FeaturizerParams = DEFAULT_PARAMS) -> np.ndarray:
    """Log-mel spectrogram in dB relative to the peak, clipped to ``[-top_db, 0]``.

    >>> y = np.sin(2 * np.pi * 440 * np.arange(22050) / 22050).astype(np.float32)
    >>> log_mel(y).shape
    (128, 44)
    """
    if np.max(np.abs(y), initial=0.0) < params.silence_peak:
        # Silence is a quality finding (no cough event; the score job's gate rejects it),
        # not a decoding failure: the image is the floor, not noise blown up to full scale.
        return np.full((params.n_mels, 1 + max(len(y), params.n_fft) // params.hop_length), -params.top_db,
                       np.float32)
    if len(y) < params.n_fft:  # a few samples: pad to one FFT frame rather than warn
        y = np.pad(y, (0, params.n_fft - len(y)))
    mel = melspec.mel_power(y, sample_rate=params.sample_rate, n_fft=params.n_fft, hop_length=params.hop_length,
                            n_mels=params.n_mels, fmin=params.fmin, fmax=params.fmax)
    return melspec.power_to_db(mel, top_db=params.top_db).astype(np.float32, copy=False)


def _frames(seconds: float, params: FeaturizerParams) -> int:
    return int(round(seconds * params.sample_rate / params.hop_length))


def window_starts(n_frames: int, *, params: FeaturizerParams = DEFAULT_PARAMS) -> list[int]:
    """First frames of equal windows of ``params.window_s`` cut every ``hop_s`` from the
    start of ``n_frames`` log-mel frames: the last window is kept (padded) when it holds at
    least ``min_tail_s`` of audio, or when it is the only one.

    >>> window_starts(431)   # 10 s: five 2 s windows
    [0, 86, 172, 258, 344]
    """
    width, step = params.frames_per_window, max(1, _frames(params.hop_s, params))
    min_tail = _frames(params.min_tail_s, params)
    starts: list[int] = []
    for start in range(0, max(n_frames, 1), step):
        if starts and n_frames - start < max(min_tail, 1):
            break
        starts.append(start)
        if start + width >= n_frames:
            break
    return starts


def event_window_starts(n_frames: int, events_s: np.ndarray, *,
                        params: FeaturizerParams = DEFAULT_PARAMS) -> list[int]:
    """First frames of windows placed on events (``(n, 2)`` start and end seconds) instead
    of cut from the start: each event gets a window centred on it (shifted to stay inside the
    recording); an event longer than a window gets windows every ``hop_s`` across it. A window
    that would overlap the previous one by more than half is not made, so a burst of close
    coughs is not counted many times. Without events, :func:`window_starts`.

    >>> event_window_starts(431, np.array([[4.0, 4.3]]))
    [135]
    """
    if len(events_s) == 0:
        return window_starts(n_frames, params=params)
    width, step = params.frames_per_window, max(1, _frames(params.hop_s, params))
    per_s = params.sample_rate / params.hop_length
    last_start = max(n_frames - width, 0)
    starts: list[int] = []
    for start_s, end_s in events_s:
        first, last = int(round(start_s * per_s)), int(round(end_s * per_s))
        span = range(first, max(last - width, first) + 1, step) if last - first > width \
            else [int(round((first + last - width) / 2))]
        for s in span:
            s = min(max(s, 0), last_start)
            if not starts or s - starts[-1] >= width // 2:
                starts.append(s)
    return starts


def cut(db: np.ndarray, starts: list[int], *, params: FeaturizerParams = DEFAULT_PARAMS) -> list[np.ndarray]:
    """The windows of ``db`` that begin at ``starts``, padded with the floor (-top_db) past its end."""
    width = params.frames_per_window
    return [np.pad(db[:, s:s + width], ((0, 0), (0, max(0, s + width - db.shape[1]))),
                   constant_values=-params.top_db) for s in starts]


def windows(db: np.ndarray, *, params: FeaturizerParams = DEFAULT_PARAMS) -> list[np.ndarray]:
    """Cut a log-mel matrix into equal windows of ``params.window_s`` (:func:`window_starts`)."""
    return cut(db, window_starts(db.shape[1], params=params), params=params)


def event_windows(db: np.ndarray, events_s: np.ndarray, *, params: FeaturizerParams = DEFAULT_PARAMS) -> list[np.ndarray]:
    """Windows of ``params.window_s`` placed on events (:func:`event_window_starts`).

    >>> db = np.full((128, 431), -80.0, np.float32)     # 10 s of log-mel frames
    >>> [w.shape for w in event_windows(db, np.array([[4.0, 4.3]]))]
    [(128, 87)]
    """
    return cut(db, event_window_starts(db.shape[1], events_s, params=params), params=params)


def to_image(window: np.ndarray, *, params: FeaturizerParams = DEFAULT_PARAMS) -> np.ndarray:
    """Render one log-mel window as ``(size, size, 3)`` uint8, low frequencies at the bottom."""
    lut = lookup_table(params.colormap)
    level = np.clip((window + params.top_db) / params.top_db, 0.0, 1.0)[::-1]
    gray = Image.fromarray((level * 255).round().astype(np.uint8))
    gray = gray.resize((params.image_size, params.image_size), Image.Resampling.BILINEAR)
    return np.take(lut, np.asarray(gray), axis=0)  # 4x faster than fancy indexing


@dataclass(frozen=True)
class Windows:
    """One recording's windows: ``images`` uint8 ``(n, S, S, 3)``, ``log_mel`` float16
    ``(n, mels, frames)``, and where each lies in the recording, ``start_s`` and ``end_s``
    ``(n,)`` seconds (a padded last window ends with the recording). ``dropped``: how many
    of the recording's windows cut from the start (the seed's way) the kept windows cover
    less than half of: audio the model does not see (0 for windowing ``start`` over the whole
    recording)."""

    images: np.ndarray
    log_mel: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    dropped: int

    def __len__(self) -> int:
        return len(self.images)


def featurize(audio: Audio, *, params: FeaturizerParams = DEFAULT_PARAMS, events_s: np.ndarray | None = None,
              coughs_s: np.ndarray | None = None, span_s: tuple[float, float] | None = None,
              y: np.ndarray | None = None) -> Windows:
    """All windows of one recording (:class:`Windows`).

    ``events_s``: energy events ``(n, 2)`` seconds, used when ``params.windowing == "events"``;
    ``coughs_s``: the detector's cough events, used when it is ``"coughs"``. ``span_s``: an
    annotated cough span ``(start, end)`` seconds: windows are cut inside it only (events
    clipped to it). ``y``: the recording already averaged to mono (:func:`mono`), to save
    doing it twice."""
    y = mono(audio) if y is None else y
    db = log_mel(to_rate(y, audio.sample_rate, params=params), params=params)
    per_s = params.sample_rate / params.hop_length
    first, last = 0, db.shape[1]
    if span_s is not None:
        first = min(int(round(span_s[0] * per_s)), db.shape[1] - 1)
        last = max(first + 1, min(int(round(span_s[1] * per_s)), db.shape[1]))
    placed = {"events": events_s, "coughs": coughs_s}.get(params.windowing)
    if params.windowing == "start" or placed is None:
        starts = window_starts(last - first, params=params)
    else:
        offset, end = first / per_s, last / per_s
        inside = [(max(a, offset) - offset, min(b, end) - offset) for a, b in placed if b > offset and a < end]
        starts = event_window_starts(last - first, np.array(inside).reshape(-1, 2), params=params)
    starts = [s + first for s in starts]
    chunks = cut(db[:, :last], starts, params=params)
    width = params.frames_per_window
    start_s = np.array(starts, np.float64) / per_s
    end_s = np.minimum(start_s + width / per_s, audio.duration_s)
    seen = np.zeros(db.shape[1] + width, bool)
    for s in starts:
        seen[s:s + width] = True
    dropped = sum(seen[s:s + width].mean() < 0.5 for s in window_starts(db.shape[1], params=params))
    images = np.stack([to_image(c, params=params) for c in chunks])
    return Windows(images, np.stack(chunks).astype(np.float16), start_s, end_s, int(dropped))
