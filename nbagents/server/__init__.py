"""The embedded LiveKit-protocol dev server: speaks LiveKit's signaling, WebRTC media and RoomService API.

Start it with ``nbagents server`` or from Python with ``DevServer``; it runs as its own process.
"""

from nbagents.server.process import DevServer

__all__ = ["DevServer"]
