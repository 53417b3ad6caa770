"""Records, in the job process, the audio a job receives (per remote track) and the audio it publishes.

Each recording is an Ogg/Opus file (mono, 48 kHz, ``bitrate`` bits a second: 4–6 KB a second at the
default 32 kbit/s VBR) under ``<job dir>/audio/``, encoded with PyAV (libopus) as the frames arrive, so
nothing waits for the end and a killed job leaves a playable file. Bounds: ``max_seconds`` per
recording and ``max_bytes`` for all of a job's recordings together; when one is reached the recording
stops and says so (``truncated``). ``audio/recordings.json`` indexes the files with a level envelope
(RMS every 100 ms) that viewers use to find the part with sound.

The recorder never raises into the room: an encoding error ends that one recording and is reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import time
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from nbagents.runtime import events as ev
from nbagents.runtime.persist import write_json_atomic

if TYPE_CHECKING:
    import numpy as np

# numpy is imported where audio is handled (in the job process, whose zygote preloaded it): the kernel
# imports this module for RecordingOptions alone, on its first launch's path, where numpy costs ~150 ms

__all__ = ["RecordingOptions", "AudioRecorder", "RECORDING_SAMPLE_RATE", "LEVEL_INTERVAL_SECONDS"]

RECORDING_SAMPLE_RATE = 48000  # Opus's own rate: the frames the SDK delivers need no resampling
LEVEL_INTERVAL_SECONDS = 0.1
INDEX_NAME = "recordings.json"


@dataclasses.dataclass(frozen=True)
class RecordingOptions:
    """How a job records its audio (``launch(..., recording=RecordingOptions(...))``; ``recording=False`` turns it off).

    - ``max_seconds``: length limit of each recording (one per track), in seconds (default 600)
    - ``max_bytes``: size limit of all the job's recordings together, in bytes (default 20 MB)
    - ``bitrate``: Opus bit rate in bits a second (default 32000; 16000–64000 is sensible for speech)
    - ``received`` / ``published``: record remote participants' tracks / the agent's own tracks
    """

    enabled: bool = True
    max_seconds: float = 600.0
    max_bytes: int = 20_000_000
    bitrate: int = 32_000
    received: bool = True
    published: bool = True

    def __post_init__(self) -> None:
        if not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be a positive number of seconds (got {self.max_seconds!r})")
        if not isinstance(self.max_bytes, int) or self.max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive whole number of bytes (got {self.max_bytes!r})")
        if not 6_000 <= self.bitrate <= 256_000:
            raise ValueError(f"bitrate must be between 6000 and 256000 bits a second for Opus (got {self.bitrate!r})")

    @classmethod
    def coerce(cls, value: RecordingOptions | bool | None) -> RecordingOptions:
        """``True``/``None`` -> the defaults, ``False`` -> off, options as given; anything else is a TypeError."""
        if value is None or value is True:
            return cls()
        if value is False:
            return cls(enabled=False)
        if isinstance(value, cls):
            return value
        raise TypeError(f"recording must be True, False or RecordingOptions(...), got {type(value).__name__}")


class _Recording:
    """One Ogg/Opus file being written."""

    def __init__(self, path: Path, relative: str, info: dict[str, Any], bitrate: int) -> None:
        import av

        self.path = path
        self.relative = relative
        self.info = info
        self.container = av.open(str(path), mode="w", format="ogg")
        self.stream = self.container.add_stream("libopus", rate=RECORDING_SAMPLE_RATE, layout="mono")
        self.stream.bit_rate = bitrate
        self.samples = 0
        self.started = time.time()
        self.levels: list[float] = []
        self._level_sum = 0.0
        self._level_count = 0
        self._level_block = int(RECORDING_SAMPLE_RATE * LEVEL_INTERVAL_SECONDS)
        self.status = "recording"
        self.note = ""

    @property
    def seconds(self) -> float:
        return self.samples / RECORDING_SAMPLE_RATE

    def bytes_written(self) -> int:
        with contextlib.suppress(OSError):
            return self.path.stat().st_size
        return 0

    def write(self, mono: np.ndarray) -> None:
        import av

        frame = av.AudioFrame.from_ndarray(mono.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RECORDING_SAMPLE_RATE
        frame.pts = self.samples
        frame.time_base = Fraction(1, RECORDING_SAMPLE_RATE)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.samples += mono.size
        self._add_levels(mono)

    def _add_levels(self, mono: np.ndarray) -> None:
        import numpy as np

        samples = mono.astype(np.float32) / 32768.0
        while samples.size:
            take = min(samples.size, self._level_block - self._level_count)
            chunk, samples = samples[:take], samples[take:]
            self._level_sum += float(np.dot(chunk, chunk))
            self._level_count += take
            if self._level_count >= self._level_block:
                self.levels.append(round(float(np.sqrt(self._level_sum / self._level_count)), 4))
                self._level_sum, self._level_count = 0.0, 0

    def close(self) -> None:
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        finally:
            self.container.close()
        if self._level_count:
            self.levels.append(round(math.sqrt(self._level_sum / self._level_count), 4))
            self._level_sum, self._level_count = 0.0, 0

    def describe(self) -> ev.RecordingInfo:
        return ev.RecordingInfo(
            file=self.relative,
            track_sid=self.info["track_sid"],
            participant_identity=self.info["participant_identity"],
            direction=self.info["direction"],
            status=self.status,
            seconds=round(self.seconds, 3),
            bytes=self.bytes_written(),
            sample_rate=RECORDING_SAMPLE_RATE,
            started=self.started,
            note=self.note,
        )


class AudioRecorder:
    """Writes each audio track it is fed to its own Ogg/Opus file in ``directory`` (all on the job's loop thread)."""

    def __init__(self, directory: Path, options: RecordingOptions, emit: Callable[[ev.Event], None],
                 report_exception: Callable[[str, BaseException], None]) -> None:
        self.directory = directory
        self.options = options
        self._emit = emit
        self._report = report_exception
        self._active: dict[str, _Recording] = {}
        self._done: list[_Recording] = []
        self._closed = False

    def wants(self, direction: str) -> bool:
        """Whether tracks of this direction ("received" or "published") are recorded."""
        if not self.options.enabled or self._closed:
            return False
        return self.options.received if direction == "received" else self.options.published

    def write(self, track_sid: str, identity: str, direction: str, data: Any, sample_rate: int, channels: int) -> None:
        """Append one frame (int16 interleaved PCM) of a track; starts its recording on the first frame."""
        if not self.wants(direction):
            return
        recording = self._active.get(track_sid)
        if recording is None:
            if any(r.info["track_sid"] == track_sid for r in self._done):
                return  # this track's recording already ended (a bound was reached)
            recording = self._start(track_sid, identity, direction)
            if recording is None:
                return
        import numpy as np

        mono = _to_mono_48k(np.frombuffer(data, dtype=np.int16), sample_rate, channels)
        try:
            recording.write(mono)
        except Exception as exc:
            recording.note = f"encoding failed: {type(exc).__name__}: {exc}"
            self._report(f"recording {recording.relative}", exc)
            self.finish(track_sid, status="failed")
            return
        if recording.seconds >= self.options.max_seconds:
            recording.note = f"stopped at max_seconds={self.options.max_seconds:g}"
            self.finish(track_sid, status="truncated")
        elif recording.samples % (RECORDING_SAMPLE_RATE // 2) < mono.size and self._total_bytes() >= self.options.max_bytes:
            for sid in list(self._active):  # checked twice a second of audio: a stat() per frame is waste
                self._active[sid].note = f"stopped at max_bytes={self.options.max_bytes} for the job's recordings"
                self.finish(sid, status="truncated")

    def finish(self, track_sid: str, *, status: str = "finished") -> None:
        """End a track's recording (its track ended, a bound was reached, or the job is closing)."""
        recording = self._active.pop(track_sid, None)
        if recording is None:
            return
        try:
            recording.close()
        except Exception as exc:
            status = "failed"
            recording.note = recording.note or f"closing failed: {type(exc).__name__}: {exc}"
            self._report(f"recording {recording.relative}", exc)
        recording.status = status
        self._done.append(recording)
        self._write_index()
        self._emit(ev.RecordingChanged(change="finished", recording=recording.describe()))

    def close(self) -> None:
        """Finish every recording (the job is shutting down)."""
        for sid in list(self._active):
            self.finish(sid)
        self._closed = True

    def _start(self, track_sid: str, identity: str, direction: str) -> _Recording | None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"{direction}-{_safe(identity)}-{_safe(track_sid)}.ogg"
            info = {"track_sid": track_sid, "participant_identity": identity, "direction": direction}
            recording = _Recording(self.directory / name, f"{self.directory.name}/{name}", info, self.options.bitrate)
        except Exception as exc:
            self._report(f"starting the recording of {track_sid}", exc)
            self._done.append(_Failed(track_sid))  # type: ignore[arg-type]
            return None
        self._active[track_sid] = recording
        self._write_index()
        self._emit(ev.RecordingChanged(change="started", recording=recording.describe()))
        return recording

    def _total_bytes(self) -> int:
        return sum(r.bytes_written() for r in (*self._active.values(), *self._done) if isinstance(r, _Recording))

    def _write_index(self) -> None:
        entries = []
        for r in (*self._done, *self._active.values()):
            if isinstance(r, _Recording):
                entries.append({**dataclasses.asdict(r.describe()), "levels": r.levels, "level_interval": LEVEL_INTERVAL_SECONDS})
        with contextlib.suppress(OSError):
            write_json_atomic(self.directory / INDEX_NAME, {"recordings": entries})


class _Failed:
    """A track whose recording could not start: not retried on every frame."""

    def __init__(self, track_sid: str) -> None:
        self.info = {"track_sid": track_sid}


def _to_mono_48k(samples: np.ndarray, sample_rate: int, channels: int) -> np.ndarray:
    import numpy as np

    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if sample_rate != RECORDING_SAMPLE_RATE and samples.size:
        # the SDK's AudioStream delivers 48 kHz unless told otherwise; resample other rates linearly
        n = int(round(samples.size * RECORDING_SAMPLE_RATE / sample_rate))
        x = np.linspace(0, samples.size - 1, n)
        samples = np.interp(x, np.arange(samples.size), samples.astype(np.float32)).astype(np.int16)
    return np.ascontiguousarray(samples)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60] or "unnamed"


def load_index(job_dir: Path) -> list[dict[str, Any]]:
    """The recordings a job's directory holds (``audio/recordings.json``), [] when there are none."""
    import json

    try:
        return list(json.loads((job_dir / "audio" / INDEX_NAME).read_text()).get("recordings", []))
    except (OSError, ValueError):
        return []
