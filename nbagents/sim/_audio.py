"""Audio a simulated participant speaks: sine tones and WAV files, cut into 10 ms frames.

``describe_wav`` needs only the standard library, so the kernel can reject a bad file before a process
starts; the frame generators need numpy and run in the participant's process.
"""

from __future__ import annotations

import math
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

SAMPLE_RATE = 48_000
FRAME_MS = 10
SAMPLES_PER_FRAME = SAMPLE_RATE * FRAME_MS // 1000
TONE_AMPLITUDE = 0.5


@dataclass(frozen=True)
class WavInfo:
    path: str
    sample_rate: int
    channels: int
    sample_width: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def validate_tone(freq_hz: float, seconds: float) -> None:
    if not (isinstance(freq_hz, (int, float)) and 0 < freq_hz < SAMPLE_RATE / 2):
        raise ValueError(f"freq_hz must be between 0 and {SAMPLE_RATE // 2} Hz (got {freq_hz!r})")
    if not (isinstance(seconds, (int, float)) and 0 < seconds <= 3600):
        raise ValueError(f"seconds must be a positive duration of at most an hour (got {seconds!r})")


def describe_wav(path: str | Path) -> WavInfo:
    """Open ``path`` as a 16-bit PCM WAV file, or raise an error that says what is wrong with it."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"no WAV file at {str(p)!r} (resolved to {str(p.resolve())!r})")
    if not p.is_file():
        raise IsADirectoryError(f"{str(p)!r} is not a file; play_wav needs a .wav file")
    try:
        with wave.open(str(p), "rb") as w:
            info = WavInfo(str(p.resolve()), w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(
            f"{str(p)!r} is not a PCM WAV file ({exc}); convert it, e.g. "
            "`ffmpeg -i input -ac 1 -ar 48000 -sample_fmt s16 out.wav`"
        ) from None
    if info.sample_width != 2:
        raise ValueError(
            f"{str(p)!r} has {8 * info.sample_width}-bit samples; play_wav plays 16-bit PCM "
            "(convert with `ffmpeg -i input -sample_fmt s16 out.wav`)"
        )
    if info.frames == 0:
        raise ValueError(f"{str(p)!r} holds no audio (0 frames)")
    return info


def tone_frames(freq_hz: float, seconds: float, amplitude: float = TONE_AMPLITUDE) -> Iterator[np.ndarray]:
    """A phase-continuous sine as int16 mono frames of 10 ms at 48 kHz."""
    import numpy as np

    total = int(round(seconds * SAMPLE_RATE))
    step = 2 * math.pi * freq_hz / SAMPLE_RATE
    for start in range(0, total, SAMPLES_PER_FRAME):
        n = np.arange(start, min(start + SAMPLES_PER_FRAME, total))
        frame = np.zeros(SAMPLES_PER_FRAME, dtype=np.int16)  # the last frame is padded with silence
        frame[: len(n)] = (amplitude * 32767 * np.sin(step * n)).astype(np.int16)
        yield frame


def wav_mono_samples(info: WavInfo) -> np.ndarray:
    """The file's samples as int16 mono at its own rate (channels averaged)."""
    import numpy as np

    with wave.open(info.path, "rb") as w:
        raw = w.readframes(info.frames)
    samples = np.frombuffer(raw, dtype="<i2").reshape(-1, info.channels)
    if info.channels > 1:
        samples = samples.astype(np.int32).mean(axis=1)
    return samples.astype(np.int16).reshape(-1)


def split_frames(samples: np.ndarray) -> Iterator[np.ndarray]:
    """Cut 48 kHz int16 mono samples into 10 ms frames, padding the last one with silence."""
    import numpy as np

    for start in range(0, len(samples), SAMPLES_PER_FRAME):
        chunk = samples[start : start + SAMPLES_PER_FRAME]
        if len(chunk) < SAMPLES_PER_FRAME:
            chunk = np.concatenate([chunk, np.zeros(SAMPLES_PER_FRAME - len(chunk), dtype=np.int16)])
        yield chunk
