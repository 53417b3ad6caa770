"""Server-assigned ids in LiveKit's shape (``RM_…``, ``PA_…``, ``TR_…``): clients and tools expect the prefixes."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_sid(prefix: str) -> str:
    """A fresh random id such as ``PA_x7Gk2Lq9Zb3M``."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(12))
