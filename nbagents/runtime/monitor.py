"""Watches a job from inside the job process and turns what happens into typed events.

:class:`RoomMonitor` follows the room: participants, tracks, data, and audio statistics from the
monitor's own ``rtc.AudioStream`` per subscribed audio track, so they do not depend on (or disturb) the
streams the user's entrypoint reads. The same frames feed the job's
:class:`~nbagents.runtime.recorder.AudioRecorder` when there is one, which also records the agent's own
published audio tracks. Data the agent publishes is reported too (``DataReceived`` with ``local=True``).
Video statistics (with a thumbnail, once a second) come from the monitor's own ``rtc.VideoStream`` per
subscribed video track. :class:`SessionMonitor` follows the job's livekit-agents ``AgentSession`` s:
agent and user states, transcripts, conversation items, tool calls, turn metrics.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from livekit import rtc

from nbagents.runtime import events as ev
from nbagents.runtime import sdk_logs

if TYPE_CHECKING:
    from nbagents.runtime.recorder import AudioRecorder

__all__ = ["RoomMonitor", "SessionMonitor", "participant_info", "track_info"]

AUDIO_WINDOW_SECONDS = 0.05  # ~20 updates a second
WAVEFORM_POINTS = 64
VIDEO_WINDOW_SECONDS = 1.0  # video statistics and a new thumbnail once a second
THUMBNAIL_WIDTH = 160

Emit = Callable[[ev.Event], None]


def _kind_name(kind: int) -> str:
    try:
        return rtc.ParticipantKind.Name(kind).removeprefix("PARTICIPANT_KIND_").lower()
    except ValueError:
        return str(kind)


def track_info(publication: rtc.TrackPublication) -> ev.TrackInfo:
    kind = "audio" if publication.kind == rtc.TrackKind.KIND_AUDIO else "video"
    try:
        source = rtc.TrackSource.Name(publication.source).removeprefix("SOURCE_").lower()
    except ValueError:
        source = str(publication.source)
    subscribed = bool(getattr(publication, "subscribed", publication.track is not None))
    return ev.TrackInfo(publication.sid, publication.name, kind, source, bool(publication.muted), subscribed)


def participant_info(participant: rtc.Participant, *, local: bool = False) -> ev.ParticipantInfo:
    return ev.ParticipantInfo(
        identity=participant.identity,
        sid=participant.sid,
        name=participant.name,
        kind=_kind_name(participant.kind),
        attributes=dict(participant.attributes),
        metadata=participant.metadata,
        tracks=tuple(track_info(p) for p in participant.track_publications.values()),
        local=local,
    )


class RoomMonitor:
    """Registers on ``room`` and emits participant, track, data and audio events.

    ``recorder`` (may be set after construction, before the room connects) gets the audio of the tracks.
    """

    def __init__(self, room: rtc.Room, emit: Emit, report_exception: Callable[[str, BaseException], None],
                 *, recorder: AudioRecorder | None = None) -> None:
        self._room = room
        self._emit = emit
        self._report = report_exception
        self.recorder = recorder
        self._audio_tasks: dict[str, asyncio.Task[None]] = {}
        self._local_audio_tasks: dict[str, asyncio.Task[None]] = {}
        self._closing = False  # the room is closing: the SDK's complaints about it are expected
        self._sdk_logs = sdk_logs.install(lambda: self._closing)
        self._video_tasks: dict[str, asyncio.Task[None]] = {}
        handlers: dict[str, Callable[..., None]] = {
            "participant_connected": self._on_participant_connected,
            "participant_disconnected": self._on_participant_disconnected,
            "participant_attributes_changed": self._on_attributes,
            "participant_metadata_changed": self._on_metadata,
            "participant_name_changed": self._on_name,
            "track_published": lambda pub, p: self._track("published", p, pub),
            "track_unpublished": lambda pub, p: self._track("unpublished", p, pub),
            "track_subscribed": self._on_track_subscribed,
            "track_unsubscribed": self._on_track_unsubscribed,
            "track_muted": lambda p, pub: self._track("muted", p, pub),
            "track_unmuted": lambda p, pub: self._track("unmuted", p, pub),
            "local_track_published": self._on_local_track_published,
            "local_track_unpublished": self._on_local_track_unpublished,
            "data_received": self._on_data,
            "disconnected": lambda *_: self._mark_closing(),
            "connection_state_changed": self._on_connection_state,
        }
        for name, handler in handlers.items():
            room.on(name, self._guard(name, handler))

    def _guard(self, name: str, handler: Callable[..., None]) -> Callable[..., None]:
        def guarded(*args: Any) -> None:
            try:
                handler(*args)
            except Exception as exc:  # the monitor must never break the user's room
                self._report(f"monitor ({name})", exc)

        return guarded

    def snapshot(self) -> None:
        """Emit the current room (after connect): the agent itself and everyone already there."""
        self._emit(ev.ParticipantChanged(change="local", participant=participant_info(self._room.local_participant, local=True)))
        self._report_published_data(self._room.local_participant)
        for participant in self._room.remote_participants.values():
            self._emit(ev.ParticipantChanged(change="joined", participant=participant_info(participant)))
            for publication in participant.track_publications.values():
                if publication.track is not None and publication.kind == rtc.TrackKind.KIND_AUDIO:
                    self._start_audio(publication.track, publication, participant)
                elif publication.track is not None and publication.kind == rtc.TrackKind.KIND_VIDEO:
                    self._start_video(publication.track, publication, participant)

    def _mark_closing(self) -> None:
        self._closing = True

    def _on_connection_state(self, state: Any) -> None:
        if state == rtc.ConnectionState.CONN_DISCONNECTED:
            self._closing = True

    async def aclose(self) -> None:
        self._closing = True
        tasks = [*self._audio_tasks.values(), *self._local_audio_tasks.values(), *self._video_tasks.values()]
        self._audio_tasks.clear()
        self._local_audio_tasks.clear()
        self._video_tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if self.recorder is not None:
            try:
                self.recorder.close()
            except Exception as exc:
                self._report("closing the recordings", exc)

    async def flush_logs(self) -> None:
        """Log the SDK records still held back (once the room is disconnected: they belong to its close)."""
        self._closing = True
        self._sdk_logs.flush()

    # ---- handlers ---------------------------------------------------------------------------------

    def _on_participant_connected(self, participant: rtc.RemoteParticipant) -> None:
        self._emit(ev.ParticipantChanged(change="joined", participant=participant_info(participant)))

    def _on_participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        self._emit(ev.ParticipantChanged(change="left", participant=participant_info(participant)))

    def _on_attributes(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        local = participant.identity == self._room.local_participant.identity
        self._emit(
            ev.ParticipantChanged(change="attributes", participant=participant_info(participant, local=local), changed=dict(changed))
        )

    def _on_metadata(self, participant: rtc.Participant, old: str, new: str) -> None:
        self._emit(ev.ParticipantChanged(change="metadata", participant=participant_info(participant), changed={"metadata": new}))

    def _on_name(self, participant: rtc.Participant, old: str, new: str) -> None:
        self._emit(ev.ParticipantChanged(change="name", participant=participant_info(participant), changed={"name": new}))

    def _track(self, change: str, participant: rtc.Participant, publication: rtc.TrackPublication) -> None:
        self._emit(ev.TrackChanged(change=change, participant_identity=participant.identity, track=track_info(publication)))
        local = participant.identity == self._room.local_participant.identity
        self._emit(ev.ParticipantChanged(change="tracks", participant=participant_info(participant, local=local)))

    def _on_track_subscribed(self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        self._track("subscribed", participant, publication)
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self._start_audio(track, publication, participant)
        elif track.kind == rtc.TrackKind.KIND_VIDEO:
            self._start_video(track, publication, participant)

    def _on_track_unsubscribed(self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        self._track("unsubscribed", participant, publication)
        for tasks in (self._audio_tasks, self._video_tasks):
            task = tasks.pop(publication.sid, None)
            if task is not None:
                task.cancel()

    def _on_local_track_published(self, publication: rtc.LocalTrackPublication, track: rtc.Track) -> None:
        self._track("local_published", self._room.local_participant, publication)
        recorder = self.recorder
        if track.kind == rtc.TrackKind.KIND_AUDIO and recorder is not None and recorder.wants("published"):
            sid = publication.sid
            if sid not in self._local_audio_tasks:
                identity = self._room.local_participant.identity
                self._local_audio_tasks[sid] = asyncio.get_event_loop().create_task(self._record_published(track, sid, identity))

    def _on_local_track_unpublished(self, publication: rtc.LocalTrackPublication) -> None:
        task = self._local_audio_tasks.pop(publication.sid, None)
        if task is not None:
            task.cancel()

    async def _record_published(self, track: rtc.Track, track_sid: str, identity: str) -> None:
        """The agent's own published audio, read back from its local track, into the recorder."""
        assert self.recorder is not None
        stream = rtc.AudioStream(track)
        try:
            async for event in stream:
                frame = event.frame
                self.recorder.write(track_sid, identity, "published", frame.data, frame.sample_rate, frame.num_channels)
        finally:
            self.recorder.finish(track_sid)
            with contextlib.suppress(Exception):
                await stream.aclose()

    def _report_published_data(self, local: rtc.LocalParticipant) -> None:
        """Data the agent itself publishes never comes back as ``data_received``: report it as it is sent."""
        if getattr(local, "_nbagents_data_reported", False):
            return
        publish_data = local.publish_data

        async def reported_publish_data(payload: bytes | str, **kwargs: Any) -> None:
            await publish_data(payload, **kwargs)
            data = payload.encode() if isinstance(payload, str) else bytes(payload)
            try:
                text, payload_hex = data.decode("utf-8"), None
            except UnicodeDecodeError:
                text, payload_hex = None, data[:256].hex()
            self._emit(ev.DataReceived(sender=local.identity, topic=kwargs.get("topic") or "", size=len(data), text=text,
                                       payload_hex=payload_hex, local=True))

        reported_publish_data.__doc__ = publish_data.__doc__
        local.publish_data = reported_publish_data  # type: ignore[method-assign]
        local._nbagents_data_reported = True  # type: ignore[attr-defined]

    def _on_data(self, packet: rtc.DataPacket) -> None:
        data = bytes(packet.data)
        try:
            text, payload_hex = data.decode("utf-8"), None
        except UnicodeDecodeError:
            text, payload_hex = None, data[:256].hex()
        sender = packet.participant.identity if packet.participant is not None else ""
        self._emit(ev.DataReceived(sender=sender, topic=packet.topic or "", size=len(data), text=text, payload_hex=payload_hex))

    # ---- audio ------------------------------------------------------------------------------------

    def _start_audio(self, track: rtc.Track, publication: rtc.TrackPublication, participant: rtc.Participant) -> None:
        if publication.sid in self._audio_tasks:
            return
        task = asyncio.get_event_loop().create_task(self._watch_audio(track, publication.sid, participant.identity))
        self._audio_tasks[publication.sid] = task

    async def _watch_audio(self, track: rtc.Track, track_sid: str, identity: str) -> None:
        stream = rtc.AudioStream(track)
        frames = 0
        window: list[np.ndarray] = []
        window_start = time.monotonic()
        try:
            async for event in stream:
                frame = event.frame
                frames += 1
                window.append(np.frombuffer(frame.data, dtype=np.int16))
                if self.recorder is not None:
                    self.recorder.write(track_sid, identity, "received", frame.data, frame.sample_rate, frame.num_channels)
                now = time.monotonic()
                if now - window_start < AUDIO_WINDOW_SECONDS:
                    continue
                samples = np.concatenate(window).astype(np.float32) / 32768.0
                window.clear()
                window_start = now
                self._emit(
                    ev.AudioStats(
                        track_sid=track_sid,
                        participant_identity=identity,
                        frames=frames,
                        sample_rate=frame.sample_rate,
                        channels=frame.num_channels,
                        samples_per_frame=frame.samples_per_channel,
                        rms=float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0,
                        peak=float(np.max(np.abs(samples))) if samples.size else 0.0,
                        waveform=_decimate(samples),
                    )
                )
        finally:
            if self.recorder is not None:
                self.recorder.finish(track_sid)
            with contextlib.suppress(Exception):
                await stream.aclose()

    # ---- video ------------------------------------------------------------------------------------

    def _start_video(self, track: rtc.Track, publication: rtc.TrackPublication, participant: rtc.Participant) -> None:
        if publication.sid in self._video_tasks:
            return
        task = asyncio.get_event_loop().create_task(self._watch_video(track, publication.sid, participant.identity))
        self._video_tasks[publication.sid] = task

    async def _watch_video(self, track: rtc.Track, track_sid: str, identity: str) -> None:
        stream = rtc.VideoStream(track)
        frames = window_frames = 0
        latest: rtc.VideoFrame | None = None
        window_start = time.monotonic()
        received = await _bytes_received(track)
        try:
            async for event in stream:
                frames += 1
                window_frames += 1
                latest = event.frame
                now = time.monotonic()
                if now - window_start < VIDEO_WINDOW_SECONDS:
                    continue
                total = await _bytes_received(track)
                elapsed = time.monotonic() - window_start
                self._emit(
                    ev.VideoStats(
                        track_sid=track_sid,
                        participant_identity=identity,
                        frames=frames,
                        width=latest.width,
                        height=latest.height,
                        fps=round(window_frames / elapsed, 1),
                        bitrate_kbps=round(max(0, total - received) * 8 / 1000 / elapsed, 1),
                        thumbnail_jpeg=_thumbnail(latest),
                    )
                )
                received, window_frames, window_start = total, 0, time.monotonic()
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()


async def _bytes_received(track: rtc.Track) -> int:
    """Bytes the track received so far, from its WebRTC statistics (0 when they are not available)."""
    try:
        for stats in await track.get_stats():
            if stats.WhichOneof("stats") == "inbound_rtp":
                return int(stats.inbound_rtp.inbound.bytes_received)
    except Exception:  # statistics are a nicety: a track that cannot report them still shows its frames
        pass
    return 0


def _thumbnail(frame: rtc.VideoFrame, width: int = THUMBNAIL_WIDTH) -> str:
    """The frame scaled down (every n-th pixel) to at most ``width`` pixels wide, as base64 JPEG."""
    from PIL import Image  # only jobs that receive video pay for the import

    rgba = frame.convert(rtc.VideoBufferType.RGBA)
    pixels = np.frombuffer(rgba.data, dtype=np.uint8).reshape(rgba.height, rgba.width, 4)
    step = max(1, -(-rgba.width // width))
    small = np.ascontiguousarray(pixels[::step, ::step, :3])
    out = io.BytesIO()
    Image.fromarray(small).save(out, format="JPEG", quality=70)
    return base64.b64encode(out.getvalue()).decode("ascii")


def _decimate(samples: np.ndarray, points: int = WAVEFORM_POINTS) -> tuple[float, ...]:
    """Signed peak per bucket: a cheap envelope that keeps the waveform's shape and loudness."""
    if samples.size == 0:
        return ()
    usable = samples[: (samples.size // points) * points] if samples.size >= points else samples
    buckets = usable.reshape(-1, max(1, usable.size // points)) if samples.size >= points else usable.reshape(-1, 1)
    idx = np.abs(buckets).argmax(axis=1)
    return tuple(round(float(v), 4) for v in buckets[np.arange(buckets.shape[0]), idx])


class SessionMonitor:
    """Follows the job's livekit-agents ``AgentSession`` s through their public events and emits the voice
    events of :mod:`nbagents.runtime.events` (numbering the sessions 1, 2, ... as they start).

    It only registers handlers with ``session.on(...)``; it never changes what a session does. livekit-agents
    is not imported here: the events are read by their documented fields.
    """

    HANDLED = ("agent_state_changed", "user_state_changed", "user_input_transcribed", "conversation_item_added",
               "function_tools_executed", "close")

    def __init__(self, emit: Emit, report_exception: Callable[[str, BaseException], None]) -> None:
        self._emit = emit
        self._report = report_exception
        self._numbers: dict[int, int] = {}  # id(session) -> number
        self._sessions: list[Any] = []  # keeps the sessions alive while their numbers are in use

    def attach(self, session: Any, agent: Any, *, primary: bool) -> int:
        """Start following ``session`` (once; later calls, e.g. a restart, return its number)."""
        number = self._numbers.get(id(session))
        if number is not None:
            return number
        number = self._numbers[id(session)] = len(self._numbers) + 1
        self._sessions.append(session)
        for name in self.HANDLED:
            handler = getattr(self, "_on_" + name)
            session.on(name, self._guard(name, lambda event, handler=handler: handler(number, event)))
        self._emit(ev.SessionStarted(session=number, agent=type(agent).__name__, primary=primary))
        return number

    def _guard(self, name: str, handler: Callable[[Any], None]) -> Callable[[Any], None]:
        def guarded(event: Any) -> None:
            try:
                handler(event)
            except Exception as exc:  # watching must never break the session
                self._report(f"session monitor ({name})", exc)

        return guarded

    def _on_agent_state_changed(self, number: int, event: Any) -> None:
        self._emit(ev.AgentStateChanged(session=number, old_state=str(event.old_state), new_state=str(event.new_state)))

    def _on_user_state_changed(self, number: int, event: Any) -> None:
        self._emit(ev.UserStateChanged(session=number, old_state=str(event.old_state), new_state=str(event.new_state)))

    def _on_user_input_transcribed(self, number: int, event: Any) -> None:
        language = getattr(event, "language", None)
        self._emit(ev.UserTranscribed(session=number, text=event.transcript, is_final=bool(event.is_final),
                                      language=str(language) if language else None,
                                      speaker_id=getattr(event, "speaker_id", None)))

    def _on_conversation_item_added(self, number: int, event: Any) -> None:
        item = event.item
        if getattr(item, "type", None) != "message":  # agent handoffs carry no text
            return
        text = item.text_content or ""
        self._emit(ev.ConversationItemAdded(session=number, item_id=item.id, role=str(item.role), text=text,
                                            interrupted=bool(item.interrupted), created_at=float(item.created_at)))
        metrics = dict(getattr(item, "metrics", None) or {})
        timings = {
            "e2e_latency": metrics.get("e2e_latency"),
            "llm_ttft": metrics.get("llm_node_ttft"),
            "tts_ttfb": metrics.get("tts_node_ttfb"),
            "transcription_delay": metrics.get("transcription_delay"),
            "end_of_turn_delay": metrics.get("end_of_turn_delay"),
            "on_user_turn_completed_delay": metrics.get("on_user_turn_completed_delay"),
            "started_speaking_at": metrics.get("started_speaking_at"),
            "stopped_speaking_at": metrics.get("stopped_speaking_at"),
        }
        timings = {key: float(value) for key, value in timings.items() if isinstance(value, (int, float))}
        if timings:
            self._emit(ev.TurnMetrics(session=number, item_id=item.id, role=str(item.role), **timings))

    def _on_function_tools_executed(self, number: int, event: Any) -> None:
        calls = tuple(
            ev.ToolCall(name=call.name, call_id=call.call_id, arguments=call.arguments,
                        output=str(output.output) if output is not None else "",
                        is_error=bool(output.is_error) if output is not None else False)
            for call, output in zip(event.function_calls, event.function_call_outputs)
        )
        self._emit(ev.FunctionToolsExecuted(session=number, calls=calls))

    def _on_close(self, number: int, event: Any) -> None:
        reason = getattr(event.reason, "value", event.reason)
        error = getattr(event, "error", None)
        self._emit(ev.SessionClosed(session=number, reason=str(reason), error=repr(error) if error is not None else None))
