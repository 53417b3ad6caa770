"""Atomic writes to a job's directory, so a reader (or a crash) never sees a half-written file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["write_json_atomic", "EventLog", "jsonable"]


def write_json_atomic(path: Path, data: Any, *, durable: bool = False) -> None:
    """Write JSON to a temporary sibling, then rename it over ``path`` (fsync first when ``durable``).

    The rename alone is enough against a killed process (the page cache survives it); ``durable``
    also survives a machine crash, at the price of a disk flush, so it is kept for final results.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = json.dumps(data, indent=1, default=repr).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, payload)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class EventLog:
    """Append-only JSON-lines log: records are whole lines, each ``write`` on the O_APPEND fd holds whole lines.

    A process killed mid-run leaves every line it wrote complete (readers skip a torn last line).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def append(self, *records: dict[str, Any]) -> None:
        """Append records (one line each) in a single write."""
        if self._fd < 0:
            return
        os.write(self._fd, "".join(json.dumps(record, default=repr) + "\n" for record in records).encode())

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = -1


def read_event_log(path: Path) -> list[dict[str, Any]]:
    """Every complete record of an event log."""
    records = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return records
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def jsonable(value: Any) -> tuple[bool, Any]:
    """(True, value) when ``value`` survives a JSON round trip, else (False, why)."""
    try:
        return True, json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
