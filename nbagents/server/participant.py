"""One participant's session: its ParticipantInfo, its permissions, and its signaling requests.

A participant is created when a client's /rtc websocket is accepted and closed exactly once, by
``close()``, whatever ended it (leave, removal, room deletion, a dropped or garbled connection).
Every change to what others can see bumps ``ParticipantInfo.version`` and is announced to the room.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiortc import RTCRtpTransceiver
from google.protobuf.message import DecodeError
from livekit.protocol import models
from livekit.protocol import rtc as signal

from nbagents.server._ids import new_sid
from nbagents.server import limits
from nbagents.server.auth import Claims
from nbagents.server.forwarding import TrackRelay
from nbagents.server.join import JoinParams
from nbagents.server.media import PublisherPeer, SubscriberPeer, negotiated_codec
from nbagents.server.rooms import Room
from nbagents.server.sdp import MediaSection
from nbagents.server.single_pc import SinglePeer

log = logging.getLogger(__name__)

SERVER_VERSION = "1.9.0"  # the livekit-server protocol level this server speaks, for clients that gate on it
PROTOCOL_VERSION = 16
PING_INTERVAL = 5
PING_TIMEOUT = 15
_OK = signal.RequestResponse.Reason.OK
_NOT_ALLOWED = signal.RequestResponse.Reason.NOT_ALLOWED
_LIMIT_EXCEEDED = signal.RequestResponse.Reason.LIMIT_EXCEEDED
#: livekit-server's RequestResponse messages for an update over a limit (pkg/rtc/participant.go)
_LIMIT_MESSAGES = {"name": "exceeds name length limit", "metadata": "exceeds metadata size limit",
                   "attribute": "exceeds attributes size limit"}


@dataclass
class PublishedTrack:
    """A track this participant publishes.

    The publisher learns its sid at once (TrackPublishedResponse); ``mid`` and ``relay`` arrive with the
    client's next offer; the room learns of it (ParticipantInfo.tracks, then subscriptions) when its first
    packet arrives, as livekit-server publishes a track when its media starts (by then its codec is known).
    """

    info: models.TrackInfo
    mid: str | None = None
    relay: TrackRelay | None = None
    live: bool = False  # its media has started: announced to the room


_MIME_TYPES = {"opus": "audio/opus", "red": "audio/red", "vp8": "video/VP8", "h264": "video/H264",
               "vp9": "video/VP9", "av1": "video/AV1", "h265": "video/H265"}


def _requested_mime_type(request: signal.AddTrackRequest) -> str:
    """The codec a publish asks for (the SDKs name it in ``simulcast_codecs``), as livekit-server names it.

    The negotiation confirms it once the client's offer arrives; a subscriber's SDK keeps the value it saw first.
    """
    for codec in request.simulcast_codecs:
        name = codec.codec.lower().rsplit("/", 1)[-1]
        if name in _MIME_TYPES:
            return _MIME_TYPES[name]
    return "audio/opus" if request.type == models.TrackType.AUDIO else ""


class Participant:
    """A connected client in a room."""

    def __init__(self, room: Room, claims: Claims, ws: web.WebSocketResponse, params: JoinParams, *,
                 on_closed: Callable[[Participant], None]) -> None:
        self.room = room
        self.identity = claims.identity
        self.sid = new_sid("PA_")
        self.params = params
        self.token_id = claims.token_id
        self.auto_subscribe = params.auto_subscribe
        self._ws = ws
        self._on_closed = on_closed
        now = time.time()
        self.info = models.ParticipantInfo(
            sid=self.sid, identity=claims.identity, name=claims.name, metadata=claims.metadata,
            state=models.ParticipantInfo.State.ACTIVE, joined_at=int(now), joined_at_ms=int(now * 1000),
            version=1, permission=claims.video.permission(), kind=claims.kind,
            # what the client's SDK supports: others' SDKs read it, e.g. to send large RPC payloads as data streams
            client_protocol=params.client.client_protocol, capabilities=params.client.capabilities,
        )
        self.info.attributes.update(claims.attributes)
        self.published: dict[str, PublishedTrack] = {}
        self._awaiting_media: dict[str, PublishedTrack] = {}  # AddTrackRequest.cid -> track, until its section
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._negotiation_scheduled = False
        self._requested: set[str] = set()  # track sids subscribed to explicitly (UpdateSubscription)
        self.closed = False
        self.publisher: PublisherPeer | SinglePeer
        self.subscriber: SubscriberPeer | SinglePeer
        if params.single_peer_connection:  # /rtc/v1: one PeerConnection plays both parts
            self.publisher = self.subscriber = SinglePeer(self._track_arrived, self._track_stopped,
                                                          self._data_received, self._request_media_sections)
            peers = (("pc", self.publisher),)
        else:
            self.publisher = PublisherPeer(self._track_arrived, self._track_stopped, self._data_received)
            self.subscriber = SubscriberPeer(self._send_offer)
            peers = (("publisher", self.publisher), ("subscriber", self.subscriber))
        self._joined_at = time.perf_counter()
        for name, peer in peers:
            pc = peer.pc
            pc.on("connectionstatechange", lambda n=name, pc=pc: self._trace(f"{n} {pc.connectionState}"))
            pc.on("iceconnectionstatechange", lambda n=name, pc=pc: self._trace(f"{n} ice {pc.iceConnectionState}"))
        self._writer = asyncio.ensure_future(self._write_loop())

    @property
    def active(self) -> bool:
        return not self.closed

    @property
    def permission(self) -> models.ParticipantPermission:
        return self.info.permission

    # --- outgoing signaling

    def send(self, response: signal.SignalResponse) -> None:
        """Queue a message for the client; sending never blocks the caller and keeps the order."""
        if not self.closed:
            self._outbox.put_nowait(response.SerializeToString())

    async def _write_loop(self) -> None:
        while (data := await self._outbox.get()) is not None:
            if self._ws.closed:
                continue
            try:
                await self._ws.send_bytes(data)
            except (ConnectionError, RuntimeError):
                log.debug("%s: signal connection gone while sending", self.identity)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and not self.closed:
            log.error("%s: background step failed", self.identity, exc_info=task.exception())

    def _trace(self, what: str) -> None:
        """Debug timeline of the session (``-v``): where connect time goes."""
        log.debug("%s +%.0f ms: %s", self.identity, (time.perf_counter() - self._joined_at) * 1000, what)

    def bump(self) -> None:
        self.info.version += 1

    def join_response(self) -> signal.SignalResponse:
        others = [p.info for p in self.room.others(self)]
        return signal.SignalResponse(join=signal.JoinResponse(
            room=self.room.info(), participant=self.info, other_participants=others,
            server_version=SERVER_VERSION,
            # As livekit-server: a participant that may subscribe connects on the subscriber PeerConnection
            # (which the server offers at once).
            subscriber_primary=self.permission.can_subscribe and not self.params.single_peer_connection,
            ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT,
            # As livekit-server (pkg/rtc/room.go, no ICE fallback here): a publisher negotiates at once and queues
            # its later negotiations instead of debouncing them (the SDKs' debounced path can drop a request that
            # comes while an offer is being made, leaving a track never offered).
            fast_publish=self.permission.can_publish,
            server_info=models.ServerInfo(edition=models.ServerInfo.Edition.Standard, version=SERVER_VERSION,
                                          protocol=PROTOCOL_VERSION, node_id="nbagents-embedded"),
        ))

    def start(self) -> None:
        """After the JoinResponse: subscribe to what is already published and offer the subscriber connection."""
        if self.auto_subscribe:
            for publisher, track in self.room.existing_tracks(self):
                self.subscribe(publisher, track, negotiate=False)
        self._spawn(self.subscriber.negotiate())

    # --- incoming signaling

    async def handle_bytes(self, data: bytes) -> None:
        """Handle one binary websocket frame; raises DecodeError if it is not a SignalRequest."""
        request = signal.SignalRequest()
        request.ParseFromString(data)
        await self.handle(request)

    async def handle(self, request: signal.SignalRequest) -> None:
        kind = request.WhichOneof("message")
        self._trace(f"<- {kind}")
        handler = getattr(self, f"_on_{kind}", None)
        if handler is None:
            log.debug("%s: ignoring signal request %s", self.identity, kind)
            return
        await handler(getattr(request, kind))

    async def _on_offer(self, offer: signal.SessionDescription) -> None:
        sdp = await self.publisher.answer(offer.sdp)
        self._trace("-> answer")
        answer = signal.SessionDescription(type="answer", sdp=sdp, id=offer.id)
        if isinstance(self.publisher, SinglePeer):
            answer.mid_to_track_id.update(self.publisher.mid_to_track_id)
        self.send(signal.SignalResponse(answer=answer))

    async def _on_answer(self, answer: signal.SessionDescription) -> None:
        await self.subscriber.apply_answer(answer.sdp)

    async def _on_trickle(self, trickle: signal.TrickleRequest) -> None:
        peer = self.subscriber if trickle.target == signal.SignalTarget.SUBSCRIBER else self.publisher
        await peer.add_candidate(trickle.candidateInit)

    async def _on_ping(self, timestamp: int) -> None:
        self.send(signal.SignalResponse(pong=int(time.time() * 1000)))

    async def _on_ping_req(self, ping: signal.Ping) -> None:
        self.send(signal.SignalResponse(pong_resp=signal.Pong(last_ping_timestamp=ping.timestamp,
                                                              timestamp=int(time.time() * 1000))))

    async def _on_leave(self, leave: signal.LeaveRequest) -> None:
        await self.close(models.DisconnectReason.CLIENT_INITIATED, notify=False)

    async def _on_add_track(self, request: signal.AddTrackRequest) -> None:
        refusal = self._publish_refusal(request)
        if refusal is not None:
            log.info("%s: refused to publish %r: %s", self.identity, request.name, refusal)
            self.send(signal.SignalResponse(request_response=signal.RequestResponse(
                reason=_NOT_ALLOWED, message=refusal, add_track=request)))
            return
        info = models.TrackInfo(
            sid=new_sid("TR_"), type=request.type, name=request.name, muted=request.muted, source=request.source,
            disable_dtx=request.disable_dtx, stereo=request.stereo, disable_red=True, stream=request.stream,
            width=request.width, height=request.height, simulcast=len(request.layers) > 1, layers=request.layers,
            mime_type=_requested_mime_type(request),
        )
        track = PublishedTrack(info=info)
        self._awaiting_media[request.cid] = track
        self.published[info.sid] = track
        self.send(signal.SignalResponse(track_published=signal.TrackPublishedResponse(cid=request.cid, track=info)))

    def _publish_refusal(self, request: signal.AddTrackRequest) -> str | None:
        perm = self.permission
        if not perm.can_publish:
            return "token does not grant canPublish"
        if perm.can_publish_sources and request.source not in perm.can_publish_sources:
            return f"token does not allow publishing source {models.TrackSource.Name(request.source)}"
        return None

    async def _on_mute(self, mute: signal.MuteTrackRequest) -> None:
        self.set_muted(mute.sid, mute.muted, tell_publisher=False)

    async def _on_subscription(self, update: signal.UpdateSubscription) -> None:
        sids = list(update.track_sids)
        for pt in update.participant_tracks:
            sids.extend(pt.track_sids)
        for track_sid in sids:
            if update.subscribe:
                self._requested.add(track_sid)
                found = self.room.find_track(track_sid)
                if found is not None and found[0] is not self:
                    self.subscribe(*found)
            else:
                self._requested.discard(track_sid)
                self.unsubscribe(track_sid)

    async def _on_update_metadata(self, update: signal.UpdateParticipantMetadata) -> None:
        if not self.permission.can_update_metadata:
            self.send(signal.SignalResponse(request_response=signal.RequestResponse(
                request_id=update.request_id, reason=_NOT_ALLOWED, update_metadata=update,
                message="token does not grant canUpdateOwnMetadata")))
            return
        error = limits.participant_update_error(update.name, update.metadata, update.attributes)
        if error is not None:
            log.info("%s: refused its own update: %s", self.identity, error)
            self.send(signal.SignalResponse(request_response=signal.RequestResponse(
                request_id=update.request_id, reason=_LIMIT_EXCEEDED, update_metadata=update,
                message=next(m for k, m in _LIMIT_MESSAGES.items() if error.startswith(k)))))
            return
        self.update(name=update.name or None, metadata=update.metadata or None, attributes=dict(update.attributes))
        self.send(signal.SignalResponse(request_response=signal.RequestResponse(
            request_id=update.request_id, reason=_OK, update_metadata=update)))

    # --- changes (from the client or from the service API)

    def update(self, *, name: str | None = None, metadata: str | None = None,
               attributes: dict[str, str] | None = None) -> None:
        """Change name, metadata and attributes (an empty attribute value deletes the key), then announce."""
        if name is not None:
            self.info.name = name
        if metadata is not None:
            self.info.metadata = metadata
        for key, value in (attributes or {}).items():
            if value == "":
                self.info.attributes.pop(key, None)
            else:
                self.info.attributes[key] = value
        self.bump()
        self.room.announce(self)

    def set_permission(self, permission: models.ParticipantPermission) -> None:
        """Replace the permission; losing canSubscribe/canPublish drops subscriptions/publications at once."""
        self.info.permission.CopyFrom(permission)
        if not permission.can_subscribe:
            for track_sid in self.subscriber.forwarded_track_sids:
                self.unsubscribe(track_sid)
        if not permission.can_publish:
            for track in list(self.published.values()):
                self._unpublish(track)
        self.bump()
        self.room.announce(self)

    def set_muted(self, track_sid: str, muted: bool, *, tell_publisher: bool) -> models.TrackInfo | None:
        track = self.published.get(track_sid)
        if track is None:
            return None
        track.info.muted = muted
        if tell_publisher:
            self.send(signal.SignalResponse(mute=signal.MuteTrackRequest(sid=track_sid, muted=muted)))
        self._refresh_tracks()
        self.room.announce(self)
        return track.info

    def _refresh_tracks(self) -> None:
        del self.info.tracks[:]
        self.info.tracks.extend(t.info for t in self.published.values() if t.live)
        self.info.is_publisher = any(t.live for t in self.published.values())
        self.bump()

    # --- publishing

    def _track_arrived(self, section: MediaSection, transceiver: RTCRtpTransceiver) -> None:
        track = self._awaiting_media.pop(section.track_id or "", None)
        if track is None or track.info.sid not in self.published:
            log.warning("%s: media section %s carries no announced track (msid %s)", self.identity,
                        section.mid, section.track_id)
            return
        info = track.info
        track.mid = info.mid = section.mid
        codec = negotiated_codec(transceiver)
        if codec is None:
            log.warning("%s: no codec negotiated for %s", self.identity, info.sid)
            return
        info.mime_type = codec.mime_type
        track.relay = self.publisher.relay(section, info.sid, codec, on_media=lambda: self._media_started(track))
        log.info("%s publishes %s (%s%s)", self.identity, info.sid, codec.mime_type,
                 f", simulcast {'/'.join(section.rids)}: one layer is relayed" if section.rids else "")

    def _media_started(self, track: PublishedTrack) -> None:
        if self.closed or track.live or self.published.get(track.info.sid) is not track:
            return
        track.live = True
        log.info("%s published %s: its media arrives", self.identity, track.info.sid)
        self._refresh_tracks()
        self.room.announce(self)
        self.room.track_published(self, track)

    def _track_stopped(self, section: MediaSection) -> None:
        for track in list(self.published.values()):
            if track.mid == section.mid:
                self._unpublish(track)
                self.room.announce(self)

    def _unpublish(self, track: PublishedTrack) -> None:
        if self.published.pop(track.info.sid, None) is None:
            return
        log.info("%s unpublished %s", self.identity, track.info.sid)
        self.room.track_unpublished(self, track.info.sid)
        if track.relay is not None:
            track.relay.close()
        self._refresh_tracks()
        self.send(signal.SignalResponse(track_unpublished=signal.TrackUnpublishedResponse(track_sid=track.info.sid)))

    # --- subscribing

    def wants(self, track_sid: str) -> bool:
        """Whether this participant subscribes to the track once its media arrives."""
        return self.auto_subscribe or track_sid in self._requested

    def subscribe(self, publisher: Participant, track: PublishedTrack, *, negotiate: bool = True) -> None:
        if self.closed or not self.permission.can_subscribe or track.relay is None or not track.live:
            return
        if track.info.sid in self.subscriber.forwarded_track_sids:
            return
        self.subscriber.forward(track.relay, publisher.sid, track.info.sid)
        # the publisher's SDK emits local_track_subscribed on this (an agent knows it is being heard)
        publisher.send(signal.SignalResponse(track_subscribed=signal.TrackSubscribed(track_sid=track.info.sid)))
        if negotiate:
            self._schedule_negotiation()

    def unsubscribe(self, track_sid: str) -> None:
        if not self.closed and self.subscriber.stop_forwarding(track_sid):
            self._schedule_negotiation()

    def _schedule_negotiation(self) -> None:
        """Fold all changes made in this turn of the event loop into one offer."""
        if self._negotiation_scheduled:
            return
        self._negotiation_scheduled = True

        async def negotiate() -> None:
            await asyncio.sleep(0)
            self._negotiation_scheduled = False
            await self.subscriber.negotiate()

        self._spawn(negotiate())

    def _request_media_sections(self, audios: int, videos: int) -> None:
        """/rtc/v1: the server cannot offer; ask the client for more receive-only sections and a new offer."""
        self._trace(f"-> media sections requirement ({audios} audio, {videos} video)")
        self.send(signal.SignalResponse(media_sections_requirement=signal.MediaSectionsRequirement(
            num_audios=audios, num_videos=videos)))

    def _send_offer(self, sdp: str) -> None:
        self.send(signal.SignalResponse(offer=signal.SessionDescription(type="offer", sdp=sdp)))

    # --- data

    def _data_received(self, label: str, payload: bytes) -> None:
        if not self.permission.can_publish_data:
            log.debug("%s: dropped a data packet (no canPublishData)", self.identity)
            return
        packet = models.DataPacket()
        try:
            packet.ParseFromString(payload)
        except DecodeError:
            log.warning("%s: dropped a data channel message that is not a DataPacket", self.identity)
            return
        packet.participant_identity = self.identity
        packet.participant_sid = self.sid
        identities = set(packet.destination_identities)
        sids: set[str] = set()
        if packet.HasField("user"):
            packet.user.participant_identity = self.identity
            packet.user.participant_sid = self.sid
            identities.update(packet.user.destination_identities)
            sids.update(packet.user.destination_sids)
        recipients = [p for p in self.room.others(self)
                      if (not identities and not sids) or p.identity in identities or p.sid in sids]
        data = packet.SerializeToString()
        for p in recipients:
            p.subscriber.send_data(label, data)

    # --- end

    async def close(self, reason: int, *, notify: bool) -> None:
        """End the session once: tell the client why (if ``notify``), tell the room, release media."""
        if self.closed:
            return
        if notify:
            self.send(signal.SignalResponse(leave=signal.LeaveRequest(
                can_reconnect=False, reason=reason, action=signal.LeaveRequest.Action.DISCONNECT)))
        self.closed = True
        self.info.state = models.ParticipantInfo.State.DISCONNECTED
        self.info.disconnect_reason = reason
        self.bump()
        log.info("%s left %s (%s)", self.identity, self.room.name, models.DisconnectReason.Name(reason))
        self.room.remove(self)
        self._on_closed(self)
        for track in self.published.values():
            if track.relay is not None:
                track.relay.close()
        self._outbox.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._writer), timeout=2)
        except (asyncio.TimeoutError, ConnectionError):
            self._writer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self._ws.close()
        await asyncio.gather(self.publisher.close(), self.subscriber.close(), return_exceptions=True)
