"""The one error type the exporter raises."""

from __future__ import annotations


class ExportError(ValueError):
    """The notebook cannot become a worker script; the message names the cell and says what to do."""
