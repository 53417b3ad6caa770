"""What the inspector's buttons do, as plain async functions (usable and testable without widgets)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbagents.runtime.job import Job
    from nbagents.sim import SimulatedParticipant

__all__ = ["delete_room", "send_data", "add_simulated_participant", "room_api"]

ENGINE_WAIT_SECONDS = 30.0


def _credentials() -> tuple[str, str, str]:
    from nbagents.runtime.engine_session import shared_engine

    return tuple(shared_engine().wait(ENGINE_WAIT_SECONDS))  # type: ignore[return-value]


def room_api() -> Any:
    """A LiveKitAPI for the kernel's engine (the caller closes it)."""
    from livekit import api

    url, key, secret = _credentials()
    return api.LiveKitAPI(url=url.replace("ws", "http", 1), api_key=key, api_secret=secret)


async def delete_room(job: Job) -> None:
    """Delete the job's room through the server API: everyone is disconnected, which ends the job."""
    from livekit import api

    lk = room_api()
    try:
        await lk.room.delete_room(api.DeleteRoomRequest(room=job.room))
    finally:
        await lk.aclose()


async def send_data(job: Job, payload: str, topic: str = "") -> None:
    """Send a reliable data packet to everyone in the job's room (from the server, like livekit-server's API)."""
    from livekit import api

    if not payload:
        raise ValueError("nothing to send: type a payload first")
    lk = room_api()
    try:
        await lk.room.send_data(
            api.SendDataRequest(room=job.room, data=payload.encode(), kind=api.DataPacket.Kind.RELIABLE, topic=topic or None)
        )
    finally:
        await lk.aclose()


async def add_simulated_participant(
    job: Job, identity: str, *, freq_hz: float = 440.0, seconds: float = 3.0, attributes: dict[str, str] | None = None
) -> SimulatedParticipant:
    """A simulated participant joins the job's room and speaks a tone; it stays until the job ends."""
    from nbagents import sim

    if not identity.strip():
        raise ValueError("give the simulated participant an identity (e.g. 'alice')")
    if seconds <= 0 or freq_hz <= 0:
        raise ValueError(f"tone needs a positive frequency and duration (got {freq_hz} Hz for {seconds} s)")
    participant = await sim.join(job.room, identity.strip(), attributes=attributes)
    await participant.play_tone(freq_hz, seconds=seconds)
    return participant
