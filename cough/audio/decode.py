"""Decoding recordings into float32 samples, bounded by the work a recording may cost.

mp3/wav/flac/ogg decode in-process with libsndfile (soundfile); everything else
(webm, m4a/aac, opus, amr, ...) goes through the ffmpeg binary that the ``imageio-ffmpeg``
wheel ships, so no system package is needed.

A header can claim anything: a rate of 1 Hz (thousands of images from 4 KB), an hour of
opus in 3 MB. So the rate and channels are read first, rates outside
:data:`MIN_SAMPLE_RATE`–:data:`MAX_SAMPLE_RATE` are refused, and the decoder is never
asked for more frames than :class:`Budget` allows: libsndfile reads at most that many,
ffmpeg stops there (``atrim``). A recording with more becomes an error row.
"""

from __future__ import annotations

import functools
import io
import re
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from ..errors import RecordingError

#: Heap Ray reserves for each featurizing task (``cough featurize``, ``cough score``'s stage 1).
TASK_MEMORY = 1 << 30
#: What one recording may cost, file bytes included: a task holds one at a time, beside its
#: batch's images and the worker's own ~200 MB.
RECORDING_BUDGET = TASK_MEMORY // 2
#: Sample rates a recording may declare; others are damaged or hostile headers.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000
#: Seconds ffmpeg may spend on one recording.
FFMPEG_TIMEOUT_S = 300


@dataclass(frozen=True)
class Budget:
    """Memory one recording may use from decoding to its images, in bytes.

    Peak memory was measured with tracemalloc (:func:`cough.audio.recording.process`: decode,
    quality, featurize; numpy buffers) and is bounded by 18 bytes per decoded sample (samples, their float32
    copy, the mono mix), 16 per sample at the featurizer's rate ``target_rate``
    (resampled signal, mel power, images), and a fixed workspace: the STFT's chunks of
    :data:`cough.audio.melspec.FRAMES_PER_CHUNK` frames (two of them alive at once, ~50 MiB measured). Low rates are costly:
    1 kHz audio grows 22-fold when resampled to 22050 Hz.

    >>> round(Budget(512 << 20).max_frames(48000, 2) / 48000)   # seconds of 48 kHz stereo
    230
    """

    max_bytes: int
    target_rate: int = 22050

    DECODED_BYTES_PER_SAMPLE = 18
    FEATURIZER_BYTES_PER_SAMPLE = 16
    WORKSPACE_BYTES = 56 << 20

    def bytes_per_frame(self, sample_rate: int, channels: int) -> float:
        return (self.DECODED_BYTES_PER_SAMPLE * channels
                + self.FEATURIZER_BYTES_PER_SAMPLE * self.target_rate / sample_rate)

    def max_frames(self, sample_rate: int, channels: int) -> int:
        room = self.max_bytes - self.WORKSPACE_BYTES
        return max(0, int(room // self.bytes_per_frame(sample_rate, channels)))

    def too_long(self, sample_rate: int, channels: int) -> RecordingError:
        seconds = self.max_frames(sample_rate, channels) / sample_rate
        return RecordingError(
            f"recording is longer than the {seconds:.0f} s of {sample_rate} Hz x {channels} channel(s) "
            f"that fit in the {self.max_bytes / 2**20:.0f} MiB one recording may use (decoding stopped there)")


DEFAULT_BUDGET = Budget(RECORDING_BUDGET)


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


def decode(data: bytes, *, budget: Budget = DEFAULT_BUDGET) -> Audio:
    """Decode the bytes of one recording, holding at most ``budget``'s worth of samples.

    Raises :class:`RecordingError` with a reason a person understands when the bytes
    are not usable audio, declare an implausible rate, or hold more than fits.

    >>> import io, soundfile
    >>> wav = io.BytesIO()
    >>> soundfile.write(wav, np.zeros((22050, 2), "float32"), 22050, format="WAV")
    >>> audio = decode(wav.getvalue())       # samples: (channels, n) float32
    >>> audio.samples.shape, audio.sample_rate
    ((2, 22050), 22050)
    >>> decode(b"not audio")
    Traceback (most recent call last):
    cough.errors.RecordingError: not a recognised audio file (no audio stream found)
    """
    if len(data) == 0:
        raise RecordingError("empty file (0 bytes)")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            _check_rate(f.samplerate)
            limit = budget.max_frames(f.samplerate, f.channels)
            samples = f.read(frames=limit + 1, dtype="float32", always_2d=True)
            if len(samples) > limit:
                raise budget.too_long(f.samplerate, f.channels)
            audio = Audio(np.ascontiguousarray(samples.T), int(f.samplerate), f.format.lower())
    except sf.LibsndfileError:
        audio = _decode_ffmpeg(data, budget)  # a container libsndfile does not read, or a damaged file
    except RuntimeError as exc:  # libsndfile reports truncated streams this way
        raise RecordingError(f"damaged audio stream: {exc}") from None
    return _check(audio)


def _check_rate(rate: int) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise RecordingError(f"sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz "
                             "(a damaged or forged header)")


def _check(audio: Audio) -> Audio:
    if audio.samples.size == 0 or audio.samples.shape[1] == 0:
        raise RecordingError("no audio samples (file holds a header only or is truncated)")
    if not np.all(np.isfinite(audio.samples)):
        raise RecordingError("samples contain NaN or infinity")
    return audio


# ------------------------------------------------------------------------------ ffmpeg

def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=1)
def _layouts() -> dict[str, int]:
    """Channel count of each layout name ffmpeg prints (``stereo`` → 2, ``5.1(side)`` → 6)."""
    text = subprocess.run([_ffmpeg(), "-hide_banner", "-layouts"], capture_output=True, text=True,
                          timeout=60).stdout
    table = text.split("Standard channel layouts:", 1)[-1]
    return {m.group(1): m.group(2).count("+") + 1 for m in re.finditer(r"^(\S+)\s+([A-Z0-9+]+)$", table, re.M)}


@dataclass(frozen=True)
class _Stream:
    codec: str
    sample_rate: int
    channels: int


def _probe(path: str) -> _Stream:
    """The first audio stream's codec, rate and channels, from ffmpeg's own banner
    (imageio-ffmpeg ships no ffprobe); nothing is decoded."""
    proc = subprocess.run([_ffmpeg(), "-hide_banner", "-nostdin", "-i", path],
                          capture_output=True, timeout=FFMPEG_TIMEOUT_S)
    banner = proc.stderr.decode("utf-8", "replace")
    match = re.search(r"Stream #\S+.*?: Audio: ([A-Za-z0-9_]+)[^\n]*?, (\d+) Hz, ([^,\n]+)", banner)
    if match is None:
        raise RecordingError("not a recognised audio file (no audio stream found)")
    codec, rate, layout = match.group(1), int(match.group(2)), match.group(3).strip()
    counted = re.fullmatch(r"(\d+) channels", layout)
    channels = int(counted.group(1)) if counted else _layouts().get(layout)
    if not channels:
        raise RecordingError(f"{codec} stream with an unknown channel layout {layout!r}")
    return _Stream(codec, rate, channels)


def _decode_ffmpeg(data: bytes, budget: Budget) -> Audio:
    """Decode with ffmpeg from a temporary file: mp4/m4a/3gp written with the index at the
    end (ffmpeg's default, and many phones') need seeking, which a pipe cannot do.
    16-bit output, as pydub gave before, so the images of these formats did not change."""
    with tempfile.NamedTemporaryFile(prefix="cough-", suffix=".audio") as tmp:
        tmp.write(data)
        tmp.flush()
        stream = _probe(tmp.name)
        _check_rate(stream.sample_rate)
        limit = budget.max_frames(stream.sample_rate, stream.channels)
        cmd = [_ffmpeg(), "-nostdin", "-v", "error", "-i", tmp.name, "-map", "0:a:0",
               "-af", f"atrim=end_sample={limit + 1}",  # one frame past the limit: over it is refused
               "-ac", str(stream.channels), "-ar", str(stream.sample_rate), "-f", "s16le", "-acodec", "pcm_s16le",
               "pipe:1"]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RecordingError(f"ffmpeg took over {FFMPEG_TIMEOUT_S} s to decode the {stream.codec} stream") from None
    if proc.returncode != 0:
        last = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise RecordingError(f"ffmpeg could not decode the {stream.codec} stream: {last[0][:200]}")
    raw = np.frombuffer(proc.stdout, dtype="<i2")
    raw = raw[: len(raw) - len(raw) % stream.channels].reshape(-1, stream.channels)
    if len(raw) > limit:
        raise budget.too_long(stream.sample_rate, stream.channels)
    samples = np.ascontiguousarray(raw.T, dtype=np.float32)
    samples *= np.float32(1.0 / (1 << 15))
    return Audio(samples, stream.sample_rate, stream.codec)
