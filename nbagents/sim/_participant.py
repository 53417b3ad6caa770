"""The kernel's handle on a simulated participant whose real ``livekit`` client runs in its own process."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import sys
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nbagents.sim import _audio
from nbagents.sim._protocol import KINDS, MAX_LINE_BYTES, b64, decode, encode, unb64

log = logging.getLogger("nbagents.sim")

#: Extra seconds a request may take beyond the audio it plays before the participant counts as stuck.
REQUEST_GRACE_SECONDS = 30.0


class SimError(RuntimeError):
    """A simulated participant could not do what was asked; the message says why and what to do."""


class AudioNotDelivered(SimError):
    """Audio was played, but the server acknowledged none of it: nothing reached the room.

    ``report`` is what ``play_tone``/``play_wav`` would have returned (``frames`` generated,
    ``packets_sent``, ``packets_acknowledged`` 0, ...).
    """

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class ReceivedData:
    """A data packet the simulated participant received.

    ``sender`` is the sending participant's identity, or None when the SDK no longer knew the sender (it
    had already left the room by the time the packet was handled).
    """

    payload: bytes
    sender: str | None
    topic: str
    received_at: float

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class HeardSpeech:
    """An utterance the simulated participant heard in the room, recognised by the offline STT.

    ``started_at`` is when its first audible frame reached the participant, ``ended_at`` when the speech
    ended (the recogniser's end of speech), ``received_at`` when the kernel got the text; all seconds
    since the epoch. ``sender`` is the identity of the participant whose track it came from.
    """

    text: str
    sender: str
    started_at: float | None
    ended_at: float | None
    received_at: float


class SimulatedParticipant:
    """A participant in a room, played by a real ``livekit.rtc.Room`` in a child process.

    Use ``nbagents.sim.join(...)``; it starts the process and connects before handing this out.
    """

    def __init__(self, room: str, identity: str, kind: str, attributes: dict[str, str], url: str) -> None:
        self.room = room
        self.identity = identity
        self.kind = kind
        self.url = url
        self.attributes = dict(attributes)
        self.received: list[ReceivedData] = []
        self.heard: list[HeardSpeech] = []
        self.unrecognised: list[HeardSpeech] = []  # utterances heard that the recogniser could not make out (text "")
        self.listening = False
        self.last_said: dict[str, Any] | None = None
        self._speech_arrived = asyncio.Event()
        self._speech_returned = 0
        self._said_from = 0.0
        self.sid: str | None = None
        self.room_sid: str | None = None
        self.disconnect_reason: str | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._connected: asyncio.Future[dict[str, Any]] | None = None
        self._data_arrived = asyncio.Event()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._readers: list[asyncio.Task[None]] = []
        self._left = False

    def __repr__(self) -> str:
        state = "left" if self._left else ("disconnected" if self.disconnect_reason else "connected")
        return f"<SimulatedParticipant {self.identity!r} kind={self.kind} room={self.room!r} {state}>"

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def _start(
        self, api_key: str, api_secret: str, name: str | None, connect_timeout: float, listen: dict[str, Any] | None = None
    ) -> None:
        self.listening = listen is not None
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "nbagents.sim._worker",
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=MAX_LINE_BYTES,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # a kernel interrupt (SIGINT to the kernel's process group) leaves it alone
        )
        loop = asyncio.get_running_loop()
        self._connected = loop.create_future()
        self._readers = [
            asyncio.ensure_future(self._read_messages()),
            asyncio.ensure_future(self._read_stderr()),
        ]
        config = {
            "url": self.url,
            "api_key": api_key,
            "api_secret": api_secret,
            "room": self.room,
            "identity": self.identity,
            "name": name,
            "kind": self.kind,
            "attributes": self.attributes,
            "connect_timeout": connect_timeout,
            "listen": listen,
        }
        self._write(config)
        try:
            # the process also needs time to import livekit (about a second on a busy machine)
            info = await asyncio.wait_for(asyncio.shield(self._connected), connect_timeout + 30.0)
        except BaseException:
            await self._terminate()
            raise
        self.sid, self.room_sid = info.get("sid"), info.get("room_sid")

    async def leave(self) -> None:
        """Leave the room and end the participant's process. Safe to call twice."""
        if self._left:
            return
        self._left = True
        try:
            if self._process is not None and self._process.returncode is None and not self.disconnect_reason:
                await self._request("leave", {}, timeout=15.0)
        except SimError as exc:
            log.debug("leave of %s failed: %s", self.identity, exc)
        finally:
            await self._terminate()

    async def _terminate(self) -> None:
        process = self._process
        if process is None:
            return
        if process.returncode is None and process.stdin is not None:
            process.stdin.close()  # the process leaves the room and exits when its stdin closes
        try:
            await asyncio.wait_for(process.wait(), 10.0)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
        for reader in self._readers:
            try:
                await asyncio.wait_for(reader, 5.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                reader.cancel()

    # -- what the participant does ----------------------------------------------------------------------

    async def play_tone(self, freq_hz: float = 440.0, seconds: float = 1.0) -> dict[str, Any]:
        """Speak a sine tone on the microphone track (published on first use) at real-time pace.

        Returns once the tone has been sent and the server has acknowledged it (its next RTCP receiver
        report, usually within a second), with what was generated and what reached the room:

        - ``track_sid``; ``frames`` (10 ms frames generated), ``seconds`` (how long sending took) and
          ``ended_at`` (epoch seconds when the last frame was played out);
        - ``packets_sent`` (RTP packets, 20 ms of Opus each), ``packets_acknowledged`` (received by the
          server, by its receiver reports), ``packets_lost`` (as the server reported them) and
          ``frames_acknowledged`` (``frames`` in the proportion of packets acknowledged);
        - ``reached_server`` (any packet acknowledged) and ``subscribed`` (someone in the room subscribed
          to the track, as the server told the participant).

        Raises :class:`AudioNotDelivered` (its ``report`` holds the above) when the server acknowledged
        nothing within a few seconds — the track never reached it.
        """
        _audio.validate_tone(freq_hz, seconds)
        report = await self._request(
            "play_tone", {"freq_hz": float(freq_hz), "seconds": float(seconds)}, timeout=seconds + REQUEST_GRACE_SECONDS
        )
        return self._delivered(report, f"a {freq_hz:g} Hz tone")

    async def say(self, text: str, *, speed: float = 1.0) -> dict[str, Any]:
        """Speak ``text`` into the microphone track with the offline voice, in real time (10 ms frames).

        Returns and raises as :meth:`play_tone` does; the report also holds ``speech_ended_at`` (when the
        speech ended, before the voice's trailing silence; epoch seconds) and ``text``. Needs ``nbagents[offline]``. A participant that
        listens loads the voice while it joins; otherwise the first ``say`` does (a fraction of a second).
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text must be a non-empty string (got {text!r})")
        if not (isinstance(speed, (int, float)) and 0.25 <= speed <= 4):
            raise ValueError(f"speed must be between 0.25 and 4 (got {speed!r})")
        self._said_from = time.time()
        # about 15 characters a second of speech, plus synthesis and the voice's first load
        seconds = len(text) / 10.0 / speed
        report = await self._request("say", {"text": text, "speed": float(speed)}, timeout=seconds + REQUEST_GRACE_SECONDS)
        result = self._delivered(report, f"the speech {_clip(text)!r}")
        self.last_said = result
        return result

    async def wait_for_speech(self, timeout: float = 30.0, *, sender: str | None = None) -> str:
        """The text of the next utterance this participant hears (from ``sender``, if given).

        Utterances are returned once each, in order; those that ended before this participant's latest
        ``say`` began are skipped (they stay in ``heard``). Needs ``join(..., listen=True)``; raises
        ``TimeoutError`` when nothing is heard within ``timeout`` seconds (saying how many utterances it
        heard meanwhile that the recogniser could not make out: they are in ``unrecognised``, without text).
        """
        if not self.listening:
            raise SimError(
                f"simulated participant {self.identity!r} is not listening; join with "
                "nbagents.sim.join(..., listen=True) (or phrases=[...]) to hear speech"
            )
        deadline = time.monotonic() + timeout
        while True:
            while self._speech_returned < len(self.heard):
                speech = self.heard[self._speech_returned]
                self._speech_returned += 1
                ended = speech.ended_at if speech.ended_at is not None else speech.received_at
                if ended < self._said_from or (sender is not None and speech.sender != sender):
                    continue
                return speech.text
            self._speech_arrived.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                whom = f" from {sender!r}" if sender is not None else ""
                raise TimeoutError(f"{self.identity!r} heard no speech{whom} within {timeout:g} s{self._unrecognised_since(deadline - timeout)}")
            try:
                await asyncio.wait_for(self._speech_arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def _unrecognised_since(self, since: float) -> str:
        """What a TimeoutError adds about utterances heard meanwhile that the recogniser could not make out."""
        started = time.time() - (time.monotonic() - since)
        missed = [u for u in self.unrecognised if u.received_at >= started]
        if not missed:
            return ""
        lengths = ", ".join(f"{u.ended_at - u.started_at:.1f} s from {u.sender!r}" for u in missed[-5:]
                            if u.started_at is not None and u.ended_at is not None)
        return (f"; it heard {len(missed)} utterance(s) it could not make out ({lengths}): the audio was not one of its "
                "phrases, or it arrived broken up (a starved machine delivers audio with gaps)")

    async def play_wav(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Speak a 16-bit PCM WAV file (any rate, mono or stereo) on the microphone track at real-time pace.

        Returns and raises as :meth:`play_tone` does.
        """
        info = _audio.describe_wav(path)
        report = await self._request("play_wav", {"path": info.path}, timeout=info.seconds + REQUEST_GRACE_SECONDS)
        return self._delivered(report, repr(os.path.basename(info.path)))

    def _delivered(self, report: dict[str, Any], what: str) -> dict[str, Any]:
        if report.get("reached_server", True):
            return report
        raise AudioNotDelivered(
            f"simulated participant {self.identity!r} played {what} ({report['frames']} frames of 10 ms on track "
            f"{report['track_sid']}, {report['packets_sent']} RTP packets sent), but the server at {self.url} "
            "acknowledged none of it: nothing reached room "
            f"{self.room!r}. Is the server still running and answering, and can media (UDP) reach it?",
            report,
        )

    async def set_attributes(self, attributes: Mapping[str, str]) -> dict[str, str]:
        """Set (merge) this participant's attributes; returns all of them once the server has accepted."""
        bad = {k: v for k, v in attributes.items() if not isinstance(k, str) or not isinstance(v, str)}
        if bad:
            raise TypeError(f"attribute keys and values must be strings; these are not: {bad!r}")
        result = await self._request("set_attributes", {"attributes": dict(attributes)})
        self.attributes = dict(result["attributes"])
        return dict(self.attributes)

    async def send_data(self, payload: bytes | str, topic: str = "", *, reliable: bool = True) -> None:
        """Publish a data packet to the room."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"payload must be bytes or str, not {type(payload).__name__}")
        await self._request("send_data", {"payload": b64(bytes(payload)), "topic": topic, "reliable": reliable})

    async def wait_for_data(self, topic: str | None = None, *, timeout: float = 30.0) -> ReceivedData:
        """The first received packet (on ``topic``, if given) — already received or arriving within ``timeout``."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for packet in self.received[seen:]:
                if topic is None or packet.topic == topic:
                    return packet
            seen = len(self.received)
            self._data_arrived.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                on_topic = f" on topic {topic!r}" if topic is not None else ""
                raise TimeoutError(f"{self.identity!r} received no data{on_topic} within {timeout:g} s")
            try:
                await asyncio.wait_for(self._data_arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    # -- IPC ----------------------------------------------------------------------------------------------

    def _write(self, message: dict[str, Any]) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(encode(message))

    async def _request(self, op: str, args: dict[str, Any], timeout: float = REQUEST_GRACE_SECONDS) -> Any:
        if self._process is None or self._process.returncode is not None:
            raise SimError(f"simulated participant {self.identity!r} is not running ({self._why_gone()})")
        if self.disconnect_reason and op != "leave":
            raise SimError(
                f"simulated participant {self.identity!r} was disconnected from room {self.room!r} "
                f"({self.disconnect_reason}); join again with nbagents.sim.join(...)"
            )
        if self._left and op != "leave":
            raise SimError(f"simulated participant {self.identity!r} has left; join again with nbagents.sim.join(...)")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self._write({"id": request_id, "op": op, "args": args})
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise SimError(f"simulated participant {self.identity!r} did not finish {op} within {timeout:g} s") from None
        finally:
            self._pending.pop(request_id, None)

    async def _read_messages(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        while line := await stdout.readline():
            try:
                self._on_message(decode(line))
            except Exception:  # noqa: BLE001 - a bad line must not stop the reader
                log.exception("bad message from simulated participant %s: %r", self.identity, line[:200])
        await self._process.wait()
        error = SimError(f"simulated participant {self.identity!r} stopped: {self._why_gone()}")
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(error)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)

    def _on_message(self, message: dict[str, Any]) -> None:
        if "id" in message:
            future = self._pending.get(message["id"])
            if future is None or future.done():
                return
            if message["ok"]:
                future.set_result(message.get("result"))
            else:
                future.set_exception(SimError(f"simulated participant {self.identity!r}: {message['error']}"))
            return
        event = message.get("event")
        if event == "data":
            packet = ReceivedData(unb64(message["payload"]), message.get("sender"), message.get("topic", ""), time.time())
            self.received.append(packet)
            self._data_arrived.set()
        elif event == "speech":
            self.heard.append(
                HeardSpeech(message["text"], message.get("sender") or "", message.get("started_at"), message.get("ended_at"), time.time())
            )
            self._speech_arrived.set()
        elif event == "unrecognised":
            self.unrecognised.append(
                HeardSpeech("", message.get("sender") or "", message.get("started_at"), message.get("ended_at"), time.time())
            )
        elif event == "connected" and self._connected is not None and not self._connected.done():
            self._connected.set_result(message)
        elif event == "connect_failed" and self._connected is not None and not self._connected.done():
            self._connected.set_exception(
                SimError(
                    f"simulated participant {self.identity!r} could not connect to {self.url} "
                    f"(room {self.room!r}): {message['error']}. Is the LiveKit server running and reachable "
                    "from this machine, and are its API key and secret right?"
                )
            )
        elif event == "disconnected":
            self.disconnect_reason = message.get("reason") or "disconnected"

    async def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        while line := await self._process.stderr.readline():
            text = line.decode("utf-8", errors="replace").rstrip()
            self._stderr_tail.append(text)
            log.debug("[%s] %s", self.identity, text)

    def _why_gone(self) -> str:
        code = self._process.returncode if self._process is not None else None
        tail = "\n".join(self._stderr_tail)
        if code is None:
            return "the process is still starting"
        why = "it left the room" if self._left else f"its process exited with code {code}"
        return f"{why}\n{tail}" if tail and not self._left else why


class _Joining:
    """What ``join`` returns: use it as ``async with`` (leaves at the end) or ``await`` it (call leave yourself)."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._participant: SimulatedParticipant | None = None

    async def _open(self) -> SimulatedParticipant:
        o = self._options
        if o["url"] is None:
            from nbagents.sim._engine import kernel_credentials

            # starting the kernel's engine may take a moment: keep the notebook's event loop free meanwhile
            o["url"], o["api_key"], o["api_secret"] = await asyncio.to_thread(kernel_credentials)
        participant = SimulatedParticipant(o["room"], o["identity"], o["kind"], o["attributes"], o["url"])
        await participant._start(o["api_key"], o["api_secret"], o["name"], o["connect_timeout"], o["listen"])
        return participant

    def __await__(self) -> Generator[Any, None, SimulatedParticipant]:
        return self._open().__await__()

    async def __aenter__(self) -> SimulatedParticipant:
        self._participant = await self._open()
        return self._participant

    async def __aexit__(self, *exc: object) -> None:
        if self._participant is not None:
            await self._participant.leave()


def join(
    room: str,
    identity: str,
    *,
    attributes: Mapping[str, str] | None = None,
    kind: str = "standard",
    name: str | None = None,
    credentials: tuple[str, str, str] | None = None,
    connect_timeout: float = 20.0,
    listen: bool = False,
    phrases: Sequence[str] | None = None,
    strict: bool = False,
) -> _Joining:
    """A simulated participant joining ``room`` as ``identity``: a real ``livekit`` client in its own process.

    ``async with nbagents.sim.join("demo", "alice", attributes={"user.language": "en"}) as alice:``
    connects (to the kernel's engine unless ``credentials=(url, api_key, api_secret)`` is given) and
    leaves when the block ends; ``alice = await nbagents.sim.join(...)`` keeps it until ``await alice.leave()``.

    ``listen=True`` makes the participant recognise what it hears on every remote audio track with the
    offline STT (``alice.heard``, ``await alice.wait_for_speech()``); ``phrases=[...]`` (implies listen)
    biases that recognition to the phrases you expect, ``strict=True`` restricts it to them (see
    ``nbagents.offline.STT``). Listening and ``say`` need ``nbagents[offline]``.
    """
    if not isinstance(room, str) or not room:
        raise ValueError(f"room must be a non-empty string (got {room!r})")
    if not isinstance(identity, str) or not identity:
        raise ValueError(f"identity must be a non-empty string (got {identity!r})")
    if kind not in KINDS:
        raise ValueError(f"unknown participant kind {kind!r}; choose one of {', '.join(KINDS)}")
    attrs = dict(attributes or {})
    bad = {k: v for k, v in attrs.items() if not isinstance(k, str) or not isinstance(v, str)}
    if bad:
        raise TypeError(f"attribute keys and values must be strings; these are not: {bad!r}")
    url, api_key, api_secret = credentials if credentials is not None else (None, None, None)
    hearing = None
    if listen or phrases is not None:
        if phrases is not None:
            from nbagents.offline._lm import phrase_words

            phrases = list(phrases) if not isinstance(phrases, str) else phrases
            phrase_words(phrases)  # a bad list is refused here, not in the participant's process
        elif strict:
            raise ValueError("strict=True restricts recognition to the phrases: give phrases=[...] too")
        hearing = {"phrases": phrases, "strict": bool(strict)}
    return _Joining(
        listen=hearing,
        room=room,
        identity=identity,
        kind=kind,
        attributes=attrs,
        name=name,
        url=url,
        api_key=api_key,
        api_secret=api_secret,
        connect_timeout=connect_timeout,
    )


__all__ = ["AudioNotDelivered", "HeardSpeech", "ReceivedData", "SimError", "SimulatedParticipant", "join"]


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
