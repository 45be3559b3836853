"""Decoding recordings into float32 samples.

mp3/wav/flac/ogg decode in-process with libsndfile (soundfile); everything else
(webm, m4a/aac, opus, amr, ...) goes through pydub with the ffmpeg binary that the
``imageio-ffmpeg`` wheel ships, so no system package is needed.
"""

from __future__ import annotations

import io
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import RecordingError

#: Longest recording decoded; longer ones become error rows instead of exhausting memory.
MAX_DURATION_S = 3 * 3600.0


@dataclass(frozen=True)
class Audio:
    """Decoded samples, shape ``(channels, n)``, float32 in [-1, 1]."""

    samples: np.ndarray
    sample_rate: int
    format: str

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / float(self.sample_rate)


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _probe_codec(data: bytes) -> str:
    """The first audio codec ffmpeg sees in ``data``.

    pydub asks ffprobe for this unless it is given a codec, and imageio-ffmpeg ships
    no ffprobe, so read ffmpeg's own stream banner instead.
    """
    proc = subprocess.run(
        [_ffmpeg(), "-hide_banner", "-nostdin", "-i", "pipe:0"],
        input=data, capture_output=True, timeout=120,
    )
    banner = proc.stderr.decode("utf-8", "replace")
    match = re.search(r"Stream #\S+.*?: Audio: ([A-Za-z0-9_]+)", banner)
    if match is None:
        raise RecordingError("not a recognised audio file (no audio stream found)")
    return match.group(1)


def _decode_ffmpeg(data: bytes) -> Audio:
    import warnings

    with warnings.catch_warnings():  # pydub warns at import that no ffmpeg is on PATH; we set it below
        warnings.simplefilter("ignore", RuntimeWarning)
        from pydub import AudioSegment

    AudioSegment.converter = _ffmpeg()
    codec = _probe_codec(data)
    try:
        segment = AudioSegment.from_file(io.BytesIO(data), codec=codec)
    except Exception as exc:  # pydub raises CouldntDecodeError with ffmpeg's whole log
        last = str(exc).strip().splitlines()[-1:] or [""]
        raise RecordingError(f"ffmpeg could not decode the {codec} stream: {last[0][:200]}") from None
    raw = np.array(segment.get_array_of_samples(), dtype=np.float32)
    scale = float(1 << (8 * segment.sample_width - 1))
    samples = (raw / scale).reshape(-1, segment.channels).T
    return Audio(np.ascontiguousarray(samples), int(segment.frame_rate), codec)


def decode(data: bytes, *, max_duration_s: float = MAX_DURATION_S) -> Audio:
    """Decode the bytes of one recording.

    Raises :class:`RecordingError` with a reason a person understands when the bytes
    are not usable audio.

    >>> audio = decode(Path("cough.wav").read_bytes())   # doctest: +SKIP
    >>> audio.samples.shape, audio.sample_rate
    ((1, 44100), 44100)
    """
    if len(data) == 0:
        raise RecordingError("empty file (0 bytes)")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.frames / f.samplerate > max_duration_s:
                raise RecordingError(
                    f"recording is {f.frames / f.samplerate / 3600:.1f} h long, over the "
                    f"{max_duration_s / 3600:.1f} h limit")
            samples = f.read(dtype="float32", always_2d=True).T
            audio = Audio(np.ascontiguousarray(samples), int(f.samplerate), f.format.lower())
    except sf.LibsndfileError:
        audio = _decode_ffmpeg(data)  # a container libsndfile does not read, or a damaged file
    except RuntimeError as exc:  # libsndfile reports truncated streams this way
        raise RecordingError(f"damaged audio stream: {exc}") from None
    return _check(audio, max_duration_s)


def _check(audio: Audio, max_duration_s: float) -> Audio:
    if audio.samples.size == 0 or audio.samples.shape[1] == 0:
        raise RecordingError("no audio samples (file holds a header only or is truncated)")
    if audio.duration_s > max_duration_s:
        raise RecordingError(
            f"recording is {audio.duration_s / 3600:.1f} h long, over the {max_duration_s / 3600:.1f} h limit")
    if not np.all(np.isfinite(audio.samples)):
        raise RecordingError("samples contain NaN or infinity")
    return audio
