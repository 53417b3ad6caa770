"""Rooms and the registry that creates and closes them, with livekit-server's timeouts.

A room exists from its first join or its CreateRoom until it is deleted or has stayed empty too long:
``empty_timeout`` (default 300 s) if nobody has joined yet, ``departure_timeout`` (default 20 s) after the
last participant left. Both are server-wide settings a CreateRoom request may override per room.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from livekit.protocol import models
from livekit.protocol import rtc as signal

from nbagents.server._ids import new_sid

if TYPE_CHECKING:
    from nbagents.server.participant import Participant, PublishedTrack

log = logging.getLogger(__name__)

DEFAULT_EMPTY_TIMEOUT = 300.0
DEFAULT_DEPARTURE_TIMEOUT = 20.0
#: sessions remembered as ended with their room (a few hundred bytes each), so late resumes are told so
ENDED_SESSIONS_KEPT = 10_000


@dataclass(frozen=True)
class RoomDefaults:
    """Server-wide room settings (seconds); a CreateRoom request may override them per room."""

    empty_timeout: float = DEFAULT_EMPTY_TIMEOUT
    departure_timeout: float = DEFAULT_DEPARTURE_TIMEOUT


class Room:
    """One room: its participants, its metadata, and the routing of tracks between participants."""

    def __init__(self, name: str, empty_timeout: float, departure_timeout: float,
                 max_participants: int = 0, metadata: str = "") -> None:
        self.name = name
        self.sid = new_sid("RM_")
        self.created_at = time.time()
        self.empty_timeout = empty_timeout
        self.departure_timeout = departure_timeout
        self.max_participants = max_participants
        self.metadata = metadata
        self.version = 0
        self.participants: dict[str, Participant] = {}
        self.last_departure: float | None = None  # when the last participant who is not an agent left
        #: keys of every session that joined (its sid; an agent's token too), in order: a client whose
        #: connection dropped may still try to resume or rejoin one after the room ended
        self.session_keys: list[str] = []
        self.closed = False

    def has_humans(self) -> bool:
        """Whether anyone but agents is in the room: agents alone do not keep a room open."""
        return any(p.info.kind != models.ParticipantInfo.Kind.AGENT for p in self.participants.values())

    def info(self) -> models.Room:
        created = self.created_at
        return models.Room(
            sid=self.sid, name=self.name, empty_timeout=int(self.empty_timeout),
            departure_timeout=int(self.departure_timeout), max_participants=self.max_participants,
            creation_time=int(created), creation_time_ms=int(created * 1000), metadata=self.metadata,
            num_participants=len(self.participants),
            num_publishers=sum(1 for p in self.participants.values() if p.published),
        )

    def others(self, participant: Participant) -> list[Participant]:
        return [p for p in self.participants.values() if p is not participant]

    def broadcast(self, response: signal.SignalResponse, exclude: Participant | None = None) -> None:
        for p in list(self.participants.values()):
            if p is not exclude:
                p.send(response)

    def announce(self, participant: Participant) -> None:
        """Tell everyone (the participant included) its current ParticipantInfo."""
        update = signal.SignalResponse(update=signal.ParticipantUpdate(participants=[participant.info]))
        self.broadcast(update, exclude=None if participant.active else participant)

    def announce_joined(self, participant: Participant) -> None:
        """Tell everyone else that ``participant`` joined (it learns about itself from its JoinResponse)."""
        update = signal.SignalResponse(update=signal.ParticipantUpdate(participants=[participant.info]))
        self.broadcast(update, exclude=participant)

    def update_metadata(self, metadata: str) -> None:
        self.metadata = metadata
        self.version += 1
        self.broadcast(signal.SignalResponse(room_update=signal.RoomUpdate(room=self.info())))

    # --- membership

    def add(self, participant: Participant) -> None:
        self.participants[participant.identity] = participant
        self.session_keys.append(participant.sid)
        if participant.info.kind == models.ParticipantInfo.Kind.AGENT and participant.token_id:
            self.session_keys.append(agent_token_key(participant.token_id))

    def remove(self, participant: Participant) -> None:
        """Forget a participant that left: tell the others and stop relaying its tracks to them."""
        if self.participants.get(participant.identity) is not participant:
            return
        del self.participants[participant.identity]
        if participant.info.kind != models.ParticipantInfo.Kind.AGENT:
            self.last_departure = time.time()
        for other in self.participants.values():
            for track in participant.published.values():
                other.unsubscribe(track.info.sid)
        self.broadcast(signal.SignalResponse(update=signal.ParticipantUpdate(participants=[participant.info])))

    # --- track routing

    def track_published(self, publisher: Participant, track: PublishedTrack) -> None:
        for other in self.others(publisher):
            if other.wants(track.info.sid):
                other.subscribe(publisher, track)

    def track_unpublished(self, publisher: Participant, track_sid: str) -> None:
        for other in self.others(publisher):
            other.unsubscribe(track_sid)

    def find_track(self, track_sid: str) -> tuple[Participant, PublishedTrack] | None:
        for p in self.participants.values():
            track = p.published.get(track_sid)
            if track is not None:
                return p, track
        return None

    def existing_tracks(self, joiner: Participant) -> Iterable[tuple[Participant, PublishedTrack]]:
        for p in self.others(joiner):
            for track in list(p.published.values()):
                yield p, track


def agent_token_key(token_id: str) -> str:
    return f"agent-token:{token_id}"


class RoomRegistry:
    """All rooms of the server by name; closes rooms whose empty or departure timeout ran out.

    As in livekit-server, a room that holds only agents counts as empty: ``departure_timeout`` after the last
    other participant left (``empty_timeout`` after creation if nobody else came) it closes and its agents are
    disconnected with ROOM_CLOSED. That is how a dispatched agent's job learns that its humans have gone.
    """

    def __init__(self, defaults: RoomDefaults = RoomDefaults()) -> None:
        self.defaults = defaults
        self.rooms: dict[str, Room] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        #: participant sid -> why its session ended with its room (ROOM_CLOSED, ROOM_DELETED), most recent last
        self._ended_with_room: OrderedDict[str, int] = OrderedDict()

    def ended_with_room(self, participant_sid: str) -> int | None:
        """The DisconnectReason of a session that ended because its room closed or was deleted, if it did.

        A client that lost its connection around that moment tries to resume; livekit-server then re-creates the
        room and asks for a full reconnect, which puts a dispatched agent alone in a new room until that room's
        empty timeout (300 s). This server answers such a resume with the reason instead, so the client stops.
        """
        return self._ended_with_room.get(participant_sid)

    def agent_token_ended(self, token_id: str) -> int | None:
        """As ``ended_with_room``, for a full rejoin by an agent with the token of a session that ended with its
        room (an SDK that cannot resume rejoins with the token it has): the agent's job is over."""
        return self._ended_with_room.get(agent_token_key(token_id))

    def _remember_ended(self, room: Room, reason: int) -> None:
        for key in room.session_keys[-ENDED_SESSIONS_KEPT:]:
            self._ended_with_room[key] = reason
            self._ended_with_room.move_to_end(key)
        while len(self._ended_with_room) > ENDED_SESSIONS_KEPT:
            self._ended_with_room.popitem(last=False)

    def get(self, name: str) -> Room | None:
        return self.rooms.get(name)

    def get_or_create(self, name: str, *, empty_timeout: float = 0, departure_timeout: float = 0,
                      max_participants: int = 0, metadata: str = "") -> Room:
        """The room called ``name``, created with these settings if needed (0 means the server default)."""
        room = self.rooms.get(name)
        if room is None:
            room = Room(name, empty_timeout=empty_timeout or self.defaults.empty_timeout,
                        departure_timeout=departure_timeout or self.defaults.departure_timeout,
                        max_participants=max_participants, metadata=metadata)
            self.rooms[name] = room
            log.info("room %s created (%s)", name, room.sid)
            self.schedule_close_check(room)
        return room

    def schedule_close_check(self, room: Room) -> None:
        """(Re)arm the timer that closes ``room`` if only agents (or nobody) are in it when its timeout runs out.

        Call it whenever someone joins or leaves."""
        timer = self._timers.pop(room.name, None)
        if timer is not None:
            timer.cancel()
        if room.closed or room.has_humans():
            return
        if room.last_departure is None:
            deadline = room.created_at + room.empty_timeout
        else:
            deadline = room.last_departure + room.departure_timeout
        delay = max(0.0, deadline - time.time())
        self._timers[room.name] = asyncio.get_running_loop().call_later(delay, self._close_if_unattended, room)

    def _close_if_unattended(self, room: Room) -> None:
        self._timers.pop(room.name, None)
        if room.has_humans() or self.rooms.get(room.name) is not room:
            return
        agents = list(room.participants.values())
        log.info("room %s closed after its timeout%s", room.name, " (only agents were left)" if agents else "")
        self._remember_ended(room, models.DisconnectReason.ROOM_CLOSED)
        self._forget(room)
        for agent in agents:
            asyncio.ensure_future(agent.close(models.DisconnectReason.ROOM_CLOSED, notify=True))

    async def delete(self, name: str) -> bool:
        """Delete a room, disconnecting everyone in it with reason ROOM_DELETED. False if there was none."""
        room = self.rooms.get(name)
        if room is None:
            return False
        self._remember_ended(room, models.DisconnectReason.ROOM_DELETED)
        self._forget(room)
        await asyncio.gather(*(p.close(models.DisconnectReason.ROOM_DELETED, notify=True)
                               for p in list(room.participants.values())))
        log.info("room %s deleted", name)
        return True

    async def close_all(self) -> None:
        for name in list(self.rooms):
            room = self.rooms[name]
            self._forget(room)
            await asyncio.gather(*(p.close(models.DisconnectReason.SERVER_SHUTDOWN, notify=True)
                                   for p in list(room.participants.values())))

    def _forget(self, room: Room) -> None:
        room.closed = True
        timer = self._timers.pop(room.name, None)
        if timer is not None:
            timer.cancel()
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]
