"""livekit-server's size limits on names, identities, metadata and attributes, with its error wording.

The figures are livekit-server v1.13.5's defaults (pkg/config/config.go, ``LimitConfig``); sizes are counted in
bytes of UTF-8, as Go's ``len`` counts them. Each check returns None when the value is within its limit, or the
message livekit-server gives when it is not (pkg/service/errors.go, pkg/service/roomservice.go).
"""

from __future__ import annotations

from collections.abc import Mapping

#: room and participant metadata, and an agent dispatch's metadata (``max_metadata_size``)
MAX_METADATA_BYTES = 512 * 1024
#: a participant's attributes, keys and values together (``max_attributes_size``)
MAX_ATTRIBUTES_BYTES = 64 * 1024
#: ``max_room_name_length``, ``max_participant_identity_length``, ``max_participant_name_length``
MAX_ROOM_NAME_BYTES = 256
MAX_IDENTITY_BYTES = 256
MAX_NAME_BYTES = 256


def size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def attributes_size(attributes: Mapping[str, str]) -> int:
    return sum(size(key) + size(value) for key, value in attributes.items())


def metadata_error(metadata: str) -> str | None:
    if size(metadata) > MAX_METADATA_BYTES:
        return f"metadata size exceeds limits {MAX_METADATA_BYTES}"
    return None


def attributes_error(attributes: Mapping[str, str]) -> str | None:
    if attributes_size(attributes) > MAX_ATTRIBUTES_BYTES:
        return f"attribute size exceeds limits {MAX_ATTRIBUTES_BYTES}"
    return None


def name_error(name: str) -> str | None:
    if size(name) > MAX_NAME_BYTES:
        return f"name length exceeds limits {MAX_NAME_BYTES}"
    return None


def room_name_error(name: str) -> str | None:
    if size(name) > MAX_ROOM_NAME_BYTES:
        return f"room name length exceeds limits: max length {MAX_ROOM_NAME_BYTES}"
    return None


def identity_error(identity: str) -> str | None:
    if size(identity) > MAX_IDENTITY_BYTES:
        return f"participant identity length exceeds limits: max length {MAX_IDENTITY_BYTES}"
    return None


def participant_update_error(name: str = "", metadata: str = "",
                             attributes: Mapping[str, str] | None = None) -> str | None:
    """The first limit a participant update (UpdateParticipant, or the client's own) breaks, checked in
    livekit-server's order: name, metadata, attributes."""
    return name_error(name) or metadata_error(metadata) or attributes_error(attributes or {})
