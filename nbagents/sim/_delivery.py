"""What of a simulated participant's audio reached the server, from the server's own RTCP receiver reports.

Runs in the participant's process. A LiveKit server (an SFU: livekit-server, or nbagents' embedded server
through aiortc) sends the publisher an RTCP receiver report for each stream it receives, about once a second;
libwebrtc exposes the latest one as the track's ``remote-inbound-rtp`` statistics (when it arrived, the
round-trip time, the cumulative packets lost), beside ``outbound-rtp`` (the packets sent). A report that
arrived at time T, with round-trip time R, covers every packet sent up to T - R: those were received by the
server or counted as lost. So

    packets acknowledged = packets sent up to (T - R), since the play began  -  packets lost meanwhile

sampled every :data:`SAMPLE_SECONDS` during a play, and counted up to the play's last packet once a report
covering it arrives (waited for up to :data:`ACK_WAIT_SECONDS` after the play). Between samples the count is
rounded down: it never claims more than the server confirmed.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from dataclasses import dataclass
from typing import Any

SAMPLE_SECONDS = 0.25
ACK_WAIT_SECONDS = 5.0  # servers report about once a second; a loaded machine may be slower
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class _Report:
    at: float  # when the receiver report arrived, seconds (the statistics' clock)
    covers_until: float  # its arrival minus the round-trip time: packets sent before this were counted
    packets_lost: int


async def _stats(track: Any) -> tuple[tuple[float, int] | None, _Report | None]:
    """(time, packets sent) of the track's outbound stream and its latest receiver report, if any."""
    outbound = report = None
    for stats in await track.get_stats():
        which = stats.WhichOneof("stats")
        if which == "outbound_rtp":
            o = stats.outbound_rtp
            outbound = (o.rtc.timestamp / 1e6, int(o.sent.packets_sent))
        elif which == "remote_inbound_rtp":
            r = stats.remote_inbound_rtp
            at = r.rtc.timestamp / 1e6
            report = _Report(at, at - float(r.remote_inbound.round_trip_time or 0.0), int(r.received.packets_lost))
    return outbound, report


async def packets_sent(track: Any) -> int:
    """RTP packets the track's stream has sent so far (0 before its sender runs)."""
    outbound, _ = await _stats(track)
    return outbound[1] if outbound else 0


class DeliveryTracker:
    """Follows one play of ``track`` (a published ``LocalAudioTrack``): ``await start()``, play, ``await finish()``."""

    def __init__(self, track: Any) -> None:
        self._track = track
        self._times: list[float] = []  # sample times, ascending
        self._sent: list[int] = []  # packets sent by then
        self._report: _Report | None = None  # the latest receiver report seen
        self._lost_before = 0
        self._started_at = 0.0
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        outbound, report = await _stats(self._track)
        now = outbound[0] if outbound else time.time()
        self._started_at = now
        self._record(now, outbound[1] if outbound else 0)
        self._lost_before = report.packets_lost if report else 0
        self._sampler = asyncio.ensure_future(self._sample())

    def _record(self, at: float, sent: int) -> None:
        if not self._times or at > self._times[-1]:
            self._times.append(at)
            self._sent.append(max(sent, self._sent[-1] if self._sent else sent))

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            await self._take()

    async def _take(self) -> tuple[float, int] | None:
        outbound, report = await _stats(self._track)
        if outbound is not None:
            self._record(*outbound)
        if report is not None and report.at > self._started_at:
            self._report = report
        return outbound

    def _sent_by(self, moment: float) -> int:
        """Packets sent up to ``moment``: the last sample at or before it (rounded down)."""
        index = bisect.bisect_right(self._times, moment) - 1
        return self._sent[max(index, 0)]

    async def finish(self, wait: float = ACK_WAIT_SECONDS) -> dict[str, Any]:
        """After the play: wait for a receiver report covering its last packet, then count.

        Returns ``packets_sent``, ``packets_acknowledged`` and ``packets_lost`` (as the server reported them).
        """
        ended = await self._take()
        end_time, end_sent = ended if ended is not None else (self._times[-1], self._sent[-1])
        deadline = time.monotonic() + wait
        while (self._report is None or self._report.covers_until < end_time) and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            await self._take()
        if self._sampler is not None:
            self._sampler.cancel()
        sent = end_sent - self._sent[0]
        report = self._report
        if report is None:
            return {"packets_sent": sent, "packets_acknowledged": 0, "packets_lost": 0}
        covered = min(self._sent_by(min(report.covers_until, end_time)), end_sent) - self._sent[0]
        lost = max(0, report.packets_lost - self._lost_before)
        return {"packets_sent": sent, "packets_acknowledged": max(0, covered - lost), "packets_lost": min(lost, covered)}
