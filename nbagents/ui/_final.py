"""A finished job's state as cell output: a JSON MIME type for tools, markdown/text for people, PNG for viewers.

Outputs carry display ids (``nbagents-state-<job id>``, ``nbagents-plot-<job id>``,
``nbagents-audio-<job id>``), so the placeholders a ``%%agent`` cell shows are updated in place when
the job ends. Headless runs keep only what a cell produces while it runs, so :func:`show_final` also
writes the outputs in the foreground (``%agent wait`` and a displayed ``await job`` call it). Paths in
outputs are relative to the working directory (``.nbagents/jobs/<id>/...``), never absolute.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from nbagents.runtime import events as ev
from nbagents.ui._plot import final_track_png, stack_pngs
from nbagents.ui._recordings import display_path, recordings_bundle, recordings_json

if TYPE_CHECKING:
    from nbagents.runtime.job import Job, JobResult

__all__ = ["STATE_MIME", "audio_bundle", "plot_bundle", "show_final", "state_bundle", "state_json", "final_plot_png"]

STATE_MIME = "application/vnd.nbagents.state+json"
MAX_PLOTTED_TRACKS = 4

_shown_in_execution: dict[str, int | None] = {}


def state_display_id(job: Job) -> str:
    return f"nbagents-state-{job.id}"


def plot_display_id(job: Job) -> str:
    return f"nbagents-plot-{job.id}"


def audio_display_id(job: Job) -> str:
    return f"nbagents-audio-{job.id}"


def state_json(job: Job, result: JobResult) -> dict[str, Any]:
    """Everything a tool needs about how the job ended (JSON-serializable)."""
    return {
        "job_id": job.id,
        "room": job.room,
        "state": result.state,
        "shutdown_reason": result.shutdown_reason,
        "error": result.error,
        "persisted": _jsonable(result.persisted),
        "callbacks": [
            {"name": c.name, "status": c.status, "value": _jsonable(c.value), "error": c.error} for c in result.callbacks
        ],
        "elapsed_seconds": round(job.elapsed, 3),
        "engine_url": job.engine_url,
        "audio_tracks": {
            sid: {
                "participant": t.participant_identity,
                "frames": t.frames,
                "sample_rate": t.sample_rate,
                "channels": t.channels,
                "samples_per_frame": t.samples_per_frame,
            }
            for sid, t in list(job.audio_tracks.items())
        },
        "video_tracks": {
            sid: {"participant": v.participant_identity, "frames": v.frames, "width": v.width, "height": v.height,
                  "fps": v.fps, "bitrate_kbps": v.bitrate_kbps}
            for sid, v in list(job.video_tracks.items())
        },
        "data_messages": len(job.data_messages),
        "recordings": recordings_json(job, result.recordings),
        "log_dir": display_path(result.log_dir, result.log_dir) if result.log_dir else None,
        "voice": _voice_json(job),
    }


def state_markdown(state: dict[str, Any]) -> str:
    lines = [
        f"**nbagents job `{state['job_id']}`** in room `{state['room']}`: **{state['state']}**"
        + (f" — shutdown reason: {_md(state['shutdown_reason'])}" if state["shutdown_reason"] else "")
        + f" (ran {state['elapsed_seconds']:.1f} s)",
        "",
    ]
    if state["callbacks"]:
        lines += ["| shutdown hook | status | persisted value |", "|---|---|---|"]
        for c in state["callbacks"]:
            if c["status"] == "finished":
                shown = json.dumps(c["value"])
            else:
                shown = ((c["error"] or "").strip().splitlines() or [""])[-1]
            lines.append(f"| `{c['name']}` | {c['status']} | `{_md(_clip(shown, 300))}` |")
    else:
        lines.append("No shutdown hooks ran, so nothing was persisted.")
    if state["audio_tracks"]:
        lines += ["", "| audio track | participant | frames | sample rate | channels | samples/frame |", "|---|---|---|---|---|---|"]
        for sid, t in state["audio_tracks"].items():
            lines.append(
                f"| `{sid}` | {_md(t['participant'])} | {t['frames']} | {t['sample_rate']} Hz | {t['channels']} | {t['samples_per_frame']} |"
            )
    if state.get("recordings"):
        lines += ["", "| recording | participant | seconds | size | status |", "|---|---|---|---|---|"]
        for r in state["recordings"]:
            lines.append(f"| `{_md(r['file'])}` | {_md(r['participant'])} ({r['direction']}) | {r['seconds']:.1f} | "
                         f"{r['bytes'] // 1024} KB | {r['status']} |")
    if state.get("video_tracks"):
        lines += ["", "| video track | participant | frames | size | frame rate | bitrate |", "|---|---|---|---|---|---|"]
        for sid, v in state["video_tracks"].items():
            lines.append(f"| `{sid}` | {_md(v['participant'])} | {v['frames']} | {v['width']}x{v['height']} | "
                         f"{v['fps']:g} fps | {v['bitrate_kbps']:g} kbit/s |")
    if state.get("voice"):
        lines += ["", _voice_markdown(state["voice"])]
    if state["error"]:
        lines += ["", "```", state["error"].rstrip(), "```"]
    if state["log_dir"]:
        lines += ["", f"Event log and result on disk: `{state['log_dir']}`"]
    return "\n".join(lines)


def state_text(state: dict[str, Any]) -> str:
    lines = [f"nbagents job {state['job_id']} in room {state['room']!r}: {state['state']}"]
    if state["shutdown_reason"]:
        lines[0] += f" (shutdown reason: {state['shutdown_reason']})"
    for name, value in state["persisted"].items():
        lines.append(f"  persisted {name}: {_clip(json.dumps(value), 300)}")
    for c in state["callbacks"]:
        if c["status"] != "finished":
            lines.append(f"  hook {c['name']}: {c['status']}")
    if state.get("voice"):
        lines.append(_voice_text(state["voice"]))
    if state["error"]:
        lines.append("  error: " + state["error"].strip().splitlines()[-1])
    return "\n".join(lines)


def final_plot_png(job: Job) -> bytes | None:
    """Per audio track, the level over the part with sound and its loudest waveform, from the job's event history."""
    histories: dict[str, list[tuple[float, float, float]]] = {}
    waveforms: dict[str, list[tuple[float, tuple[float, ...]]]] = {}
    identities: dict[str, str] = {}
    for event in list(job.events):
        if not isinstance(event, ev.AudioStats):
            continue
        if event.track_sid not in histories:
            if len(histories) >= MAX_PLOTTED_TRACKS:
                continue
            histories[event.track_sid], waveforms[event.track_sid] = [], []
            identities[event.track_sid] = event.participant_identity
        histories[event.track_sid].append((event.time, event.rms, event.peak))
        waveforms[event.track_sid].append((event.time, event.waveform))
    pngs = [
        final_track_png(track_title(job, sid, identities[sid]), histories[sid], waveforms[sid], job.created)
        for sid in histories
    ]
    timeline = _timeline_png(job)  # the voice sessions' timeline, when the job ran any, on top
    return stack_pngs(([timeline] if timeline else []) + pngs)


def video_line(video: Any) -> str:
    """One video track's statistics as HTML (a :class:`~nbagents.runtime.job.VideoTrackState`)."""
    import html

    status = "" if video.active else " · <i>ended</i>"
    return (f"<code>{html.escape(video.track_sid)}</code> from <b>{html.escape(video.participant_identity)}</b>: "
            f"<span class='nbagents-video-size'>{video.width}x{video.height}</span> · "
            f"<span class='nbagents-video-fps'>{video.fps:g}</span> fps · "
            f"<span class='nbagents-video-kbps'>{video.bitrate_kbps:g}</span> kbit/s · "
            f"<span class='nbagents-frames'>{video.frames}</span> frames{status}")


def track_title(job: Job, track_sid: str, identity: str) -> str:
    track = job.audio_tracks.get(track_sid)
    rate = f" · {track.sample_rate} Hz" if track is not None and track.sample_rate else ""
    return f"{identity} · {track_sid}{rate}"


def state_bundle(job: Job, result: JobResult, png: bytes | None = None) -> dict[str, Any]:
    """The MIME bundle of the final state: JSON for tools, markdown and text for people.

    The plot is its own output (:func:`plot_bundle`): a PNG here too would be stored twice in the notebook.
    """
    state = state_json(job, result)
    return {STATE_MIME: state, "text/markdown": state_markdown(state), "text/plain": state_text(state)}


def plot_bundle(job: Job, png: bytes | None) -> dict[str, Any]:
    """The last audio plot as a static image (what stays in the notebook when the live plot stops)."""
    if png is None:
        return {"text/plain": f"job {job.id}: no audio track was received, so there is no audio plot"}
    return {
        "image/png": base64.b64encode(png).decode("ascii"),
        "text/plain": f"<{'voice timeline and ' if job.sessions else ''}audio plot of job {job.id}: {len(job.audio_tracks)} track(s)>",
    }


def audio_bundle(job: Job, result: JobResult) -> dict[str, Any]:
    """A player per recording, each with a short embedded excerpt (see :mod:`nbagents.ui._recordings`)."""
    return recordings_bundle(job, result.recordings)


def placeholder_bundles(job: Job) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """What the state, plot and audio outputs show until the job ends."""
    return (
        {"text/plain": f"job {job.id}: its final state (persisted values of its shutdown hooks) appears here when it ends"},
        {"text/plain": ""},
        {"text/plain": ""},
    )


_final_cache: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {}
_inspector_outputs: dict[str, dict[str, dict[str, Any]]] = {}  # job id -> display id -> widget view data


def final_bundles(job: Job, result: JobResult, png: bytes | None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The state, plot and audio outputs of a finished job (made once: the excerpts take a decode and an encode)."""
    cached = _final_cache.get(job.id)
    if cached is None:
        cached = _final_cache[job.id] = (state_bundle(job, result, png), plot_bundle(job, png), audio_bundle(job, result))
    return cached


def register_inspector_output(job: Job, display_id: str, widget_data: dict[str, Any]) -> None:
    """An inspector shown with ``display_id``: when the job ends its text fallback becomes the final state."""
    _inspector_outputs.setdefault(job.id, {})[display_id] = widget_data


def inspector_text(job: Job) -> str:
    """What viewers without widgets show for a running job's inspector (a notebook reopened without its kernel)."""
    return (f"nbagents job {job.id} in room {job.room!r}: live inspector (needs the running kernel); "
            "the final state is shown below once the job ends")


def update_final_outputs(job: Job, result: JobResult, png: bytes | None) -> None:
    """Update, in place, every output that shows this job's state, plot and audio (e.g. the %%agent cell's)."""
    from IPython.display import update_display

    state, plot, audio = final_bundles(job, result, png)
    update_display(state, raw=True, display_id=state_display_id(job))
    update_display(plot, raw=True, display_id=plot_display_id(job))
    update_display(audio, raw=True, display_id=audio_display_id(job))
    for display_id, widget_data in _inspector_outputs.pop(job.id, {}).items():  # the widget stays; its text is final
        update_display({**widget_data, "text/plain": state["text/plain"]}, raw=True, display_id=display_id)


def show_final(job: Job) -> None:
    """Write the finished job's state and last plot into the running cell's output, and refresh earlier ones.

    Call it in the foreground (``%agent wait`` does): headless runs keep only output produced while a
    cell runs. Raises ValueError for a job that has not ended yet.
    """
    from IPython.display import display

    if not job.done:
        raise ValueError(f"job {job.id} is still {job.state}: await it first (`result = await job` or `%agent wait`)")
    result = job.result(0)
    png = None if job.id in _final_cache else final_plot_png(job)
    update_final_outputs(job, result, png)
    state, plot, audio = final_bundles(job, result, png)
    display(state, raw=True, display_id=state_display_id(job))
    display(plot, raw=True, display_id=plot_display_id(job))
    display(audio, raw=True, display_id=audio_display_id(job))
    _shown_in_execution[job.id] = _execution_count()


def shown_in_this_cell(job: Job) -> bool:
    """True when :func:`show_final` already wrote this job's state in the cell that is running now."""
    count = _execution_count()
    return count is not None and _shown_in_execution.get(job.id) == count


def _execution_count() -> int | None:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return getattr(shell, "execution_count", None) if shell is not None else None


def _voice_json(job: Job) -> dict[str, Any] | None:
    from nbagents.ui._voice import voice_json

    return voice_json(job)


def _voice_markdown(voice: dict[str, Any]) -> str:
    from nbagents.ui._voice import voice_markdown

    return voice_markdown(voice)


def _voice_text(voice: dict[str, Any]) -> str:
    from nbagents.ui._voice import voice_text

    return voice_text(voice)


def _timeline_png(job: Job) -> bytes | None:
    if not job.sessions:
        return None
    from nbagents.ui._voice import timeline_png

    return timeline_png(job)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
