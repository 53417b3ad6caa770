"""Close rooms in which only agents are left, as livekit-server does.

Agents do not keep a room open: ``departure_timeout`` after the last other participant left (or
``empty_timeout`` after creation if nobody else ever joined) a room holding only agents is closed, and the
agents are disconnected with reason ``ROOM_CLOSED``. That is how a dispatched livekit-agents job learns
that its humans have gone: its room disconnects and the job ends, running its shutdown hooks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from livekit.protocol import models

from nbagents.server.rooms import Room, RoomRegistry

if TYPE_CHECKING:
    from nbagents.server.participant import Participant

log = logging.getLogger(__name__)

_AGENT = models.ParticipantInfo.Kind.AGENT


def only_agents(room: Room) -> bool:
    return bool(room.participants) and all(p.info.kind == _AGENT for p in room.participants.values())


class AgentOnlyRoomCloser:
    """Watches joins and departures; closes a room once only agents have been in it for its timeout."""

    def __init__(self, rooms: RoomRegistry) -> None:
        self.rooms = rooms
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._last_human_left: dict[str, float] = {}

    def changed(self, room: Room, departed: Participant | None = None) -> None:
        """Call after a participant joined or left ``room``: (re)arm or cancel its closing timer."""
        if departed is not None and departed.info.kind != _AGENT:
            self._last_human_left[room.sid] = time.time()
        timer = self._timers.pop(room.sid, None)
        if timer is not None:
            timer.cancel()
        if room.closed or not only_agents(room):
            if room.closed:
                self._last_human_left.pop(room.sid, None)
            return
        left = self._last_human_left.get(room.sid)
        deadline = left + room.departure_timeout if left is not None else room.created_at + room.empty_timeout
        delay = max(0.0, deadline - time.time())
        self._timers[room.sid] = asyncio.get_running_loop().call_later(
            delay, lambda: asyncio.ensure_future(self._close(room)))

    async def _close(self, room: Room) -> None:
        self._timers.pop(room.sid, None)
        self._last_human_left.pop(room.sid, None)
        if room.closed or self.rooms.get(room.name) is not room or not only_agents(room):
            return
        log.info("room %s closed: only agents were left", room.name)
        self.rooms._forget(room)  # the registry's own bookkeeping for a closed room
        await asyncio.gather(*(p.close(models.DisconnectReason.ROOM_CLOSED, notify=True)
                               for p in list(room.participants.values())))

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
