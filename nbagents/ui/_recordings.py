"""Audio players for a finished job's recordings: a short MP3 excerpt of the part with sound, embedded.

The files on disk are Ogg/Opus (small, but not played by every browser); the notebook keeps, per
recording, at most :data:`EXCERPT_SECONDS` of MP3 (mono, 22.05 kHz, 32 kbit/s: ~4 KB a second, ~55 KB
of base64 for 10 s), which plays in JupyterLab, Notebook 7, VS Code and static viewers such as
nbviewer. The excerpt runs from just before the first sound to a second after the last (found with the
level envelope the recorder wrote, ``audio/recordings.json``), at most 10 s, and the output says which
part of how long a file it is.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from nbagents.runtime.job import Job, Recording

__all__ = ["EXCERPT_SECONDS", "Excerpt", "excerpt", "recordings_bundle", "recordings_json", "sound_span"]

EXCERPT_SECONDS = 10.0
EXCERPT_RATE = 22050
EXCERPT_BITRATE = 32_000
SOUND_THRESHOLD = 0.01  # RMS, full scale 1.0: quieter than this is silence (about -40 dBFS)
LEAD_IN_SECONDS = 0.2
TAIL_SECONDS = 1.0  # the excerpt ends this long after the last sound (or at EXCERPT_SECONDS)
MAX_PLAYERS = 8


class Excerpt:
    """An MP3 excerpt: ``data`` bytes, ``start`` and ``seconds`` within a recording of ``total`` seconds."""

    def __init__(self, data: bytes, start: float, seconds: float, total: float) -> None:
        self.data, self.start, self.seconds, self.total = data, start, seconds, total

    @property
    def data_uri(self) -> str:
        return "data:audio/mpeg;base64," + base64.b64encode(self.data).decode("ascii")


def sound_span(levels: list[float], interval: float, threshold: float = SOUND_THRESHOLD) -> tuple[float, float] | None:
    """(first, last) second at which the level envelope is above ``threshold``; None for silence."""
    loud = [i for i, level in enumerate(levels) if level > threshold]
    if not loud:
        return None
    return loud[0] * interval, (loud[-1] + 1) * interval


def excerpt(path: Path, levels: list[float] | None = None, interval: float = 0.1, *,
            seconds: float = EXCERPT_SECONDS) -> Excerpt | None:
    """Decode ``path`` (any format PyAV reads) and encode up to ``seconds`` from just before its first sound as MP3.

    None when the file holds no audio. Raises OSError/av errors for an unreadable file.
    """
    import av

    start = 0.0
    if levels:  # the recorder's envelope: decode only up to the end of the excerpt
        span = sound_span(levels, interval)
        if span is not None:
            start = max(0.0, span[0] - LEAD_IN_SECONDS)
            seconds = min(seconds, span[1] + TAIL_SECONDS - start)
        pcm, rate = _decode_mono(path, until=start + seconds)
    else:  # no envelope (e.g. the job was killed): find the sound in the decoded audio
        pcm, rate = _decode_mono(path)
        block = int(rate * interval)
        if pcm.size >= block:
            blocks = pcm[: (pcm.size // block) * block].reshape(-1, block)
            span = sound_span([float(v) for v in np.sqrt(np.mean(blocks * blocks, axis=1))], interval)
            if span is not None:
                start = max(0.0, span[0] - LEAD_IN_SECONDS)
                seconds = min(seconds, span[1] + TAIL_SECONDS - start)
    if pcm.size == 0:
        return None
    total = _duration(path, pcm.size / rate)
    piece = pcm[int(start * rate): int((start + seconds) * rate)]
    if piece.size == 0:
        return None
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=EXCERPT_RATE, layout="mono")
        stream.bit_rate = EXCERPT_BITRATE
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=EXCERPT_RATE)
        frame = av.AudioFrame.from_ndarray(piece.astype(np.float32).reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate = rate
        for resampled in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(resampled):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return Excerpt(out.getvalue(), start, piece.size / rate, total)


def _decode_mono(path: Path, until: float | None = None) -> tuple[np.ndarray, int]:
    """The file's first audio stream as mono float32 samples (up to ``until`` seconds, when given)."""
    import av

    chunks: list[np.ndarray] = []
    rate, decoded = 48000, 0
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return np.zeros(0, dtype=np.float32), rate
        stream = container.streams.audio[0]
        rate = stream.rate or rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in container.decode(stream):
            for mono in resampler.resample(frame):
                chunks.append(mono.to_ndarray().reshape(-1))
                decoded += chunks[-1].size
            if until is not None and decoded >= until * rate:
                break
    return (np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)), rate


def _duration(path: Path, at_least: float) -> float:
    """The file's length in seconds (from its container; at least what was decoded)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return max(at_least, float(stream.duration * stream.time_base))
            if container.duration is not None:
                return max(at_least, container.duration / 1_000_000)
    except Exception:
        pass
    return at_least


def display_path(path: Path | str, job_dir: Path | str | None = None) -> str:
    """A path as outputs show it, never absolute: relative to the working directory (the notebook's, e.g.
    ``.nbagents/jobs/<id>/audio/x.ogg``) when it is inside it, else relative to the job directory's parent."""
    path = Path(path)
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        relative = ".."
    if not relative.startswith(".."):
        return relative
    if job_dir is not None:
        job_dir = Path(job_dir)
        if path == job_dir or path.is_relative_to(job_dir):
            return str(Path(job_dir.name) / path.relative_to(job_dir))
    return path.name


def recordings_json(job: Job, recordings: tuple[Recording, ...]) -> list[dict[str, Any]]:
    return [
        {
            "file": display_path(r.path, job.log_dir),
            "participant": r.participant_identity,
            "track_sid": r.track_sid,
            "direction": r.direction,
            "status": r.status,
            "seconds": r.seconds,
            "bytes": r.bytes,
            "note": r.note,
        }
        for r in recordings
    ]


def recordings_bundle(job: Job, recordings: tuple[Recording, ...]) -> dict[str, Any]:
    """An audio player (embedded MP3 excerpt) per recording, with text for viewers that play no audio."""
    from nbagents.runtime.recorder import load_index

    if not recordings:
        return {"text/plain": f"job {job.id}: no audio was recorded"}
    envelopes = {entry.get("file"): entry for entry in load_index(job.log_dir)}
    rows, lines = [], [f"audio recorded by job {job.id} (Ogg/Opus files; excerpts embedded as MP3):"]
    for recording in recordings[:MAX_PLAYERS]:
        who = f"{recording.participant_identity} ({recording.direction}, {recording.track_sid})"
        where = display_path(recording.path, job.log_dir)
        entry = envelopes.get(str(recording.path.relative_to(job.log_dir)) if recording.path.is_relative_to(job.log_dir) else "")
        try:
            clip = excerpt(recording.path, entry.get("levels") if entry else None, (entry or {}).get("level_interval", 0.1))
        except Exception as exc:  # a damaged file: say so, keep the others
            clip = None
            problem = f"cannot be played here: {type(exc).__name__}: {exc}"
        else:
            problem = "holds no audio" if clip is None else ""
        size = _size(recording.path)
        status = "" if recording.status == "finished" else f" · {recording.status}{': ' + recording.note if recording.note else ''}"
        if clip is not None:
            total = max(clip.total, recording.seconds)
            part = f"{clip.seconds:.1f} s excerpt ({clip.start:.1f}–{clip.start + clip.seconds:.1f} s) of {total:.1f} s"
            player = f"<audio controls preload='metadata' src='{clip.data_uri}'></audio>"
        else:
            part, player = problem, ""
        rows.append(
            f"<tr><td style='padding:2px 8px'><b>{html.escape(who)}</b></td><td style='padding:2px 8px'>{player}</td>"
            f"<td style='padding:2px 8px;font-size:12px'>{html.escape(part)}{html.escape(status)}<br>"
            f"<code>{html.escape(where)}</code> ({size})</td></tr>"
        )
        lines.append(f"  {who}: {part}{status}; file {where} ({size})")
    if len(recordings) > MAX_PLAYERS:
        lines.append(f"  … and {len(recordings) - MAX_PLAYERS} more in {display_path(job.log_dir / 'audio', job.log_dir)}")
        rows.append(f"<tr><td colspan=3>… and {len(recordings) - MAX_PLAYERS} more in "
                    f"<code>{html.escape(display_path(job.log_dir / 'audio', job.log_dir))}</code></td></tr>")
    table = (f"<div class='nbagents-recordings'><b>Audio recorded by job <code>{html.escape(job.id)}</code></b>"
             f"<table style='border-collapse:collapse'>{''.join(rows)}</table></div>")
    return {"text/html": table, "text/plain": "\n".join(lines)}


def _size(path: Path) -> str:
    try:
        n = path.stat().st_size
    except OSError:
        return "missing"
    return f"{n / 1024:.0f} KB" if n >= 1024 else f"{n} B"
