"""Tracebacks of job code that name notebook cells and quote their lines, as IPython does in the kernel.

Code shipped from the kernel keeps its file names (see :mod:`nbagents.runtime.shipping`); the source of
code that has no file on disk (notebook cells) travels with it and is registered here, in the job
process, with ``linecache``. A frame in a notebook cell is then shown as IPython shows it::

    Cell In[4], line 8, in entrypoint
        raise ValueError("the entrypoint broke")

instead of ``File "/tmp/ipykernel_123/2881034.py", line 8``. Frames in files on disk are shown as
Python shows them.
"""

from __future__ import annotations

import linecache
import re
import threading
import traceback
import types
from typing import Iterable

__all__ = ["register_sources", "format_exception", "format_current_exception", "format_frames"]

_labels: dict[str, str] = {}  # file name -> label, e.g. "Cell In[4]"
_lock = threading.Lock()
_FILE_LINE = re.compile(r'^(\s*)File "(?P<file>[^"]+)", line (?P<line>\d+)', re.MULTILINE)


def register_sources(sources: dict[str, list[str]], labels: dict[str, str]) -> None:
    """Make shipped source lines visible to ``linecache`` (and so to tracebacks and ``inspect``).

    ``sources`` maps a code file name to its lines (each ending in a newline); ``labels`` maps a file
    name to how tracebacks name it (``"Cell In[4]"``).
    """
    with _lock:
        for filename, lines in sources.items():
            # mtime None: linecache.checkcache() leaves the entry alone (there is no file to re-read)
            linecache.cache[filename] = (sum(len(line) for line in lines), None, list(lines), filename)
        _labels.update(labels)


def _relabel(text: str) -> str:
    if not _labels:
        return text

    def label(match: re.Match[str]) -> str:
        name = _labels.get(match.group("file"))
        if name is None:
            return match.group(0)
        return f"{match.group(1)}{name}, line {match.group('line')}"

    return _FILE_LINE.sub(label, text)


def format_exception(exc: BaseException) -> str:
    """The exception's traceback as one string, notebook cells named and quoted."""
    return _relabel("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


def format_current_exception() -> str:
    """Like :func:`traceback.format_exc`, notebook cells named and quoted."""
    return _relabel(traceback.format_exc())


def format_frames(frames: Iterable[types.FrameType]) -> str:
    """One line (and its source) per frame, outermost first, notebook cells named and quoted."""
    summary = traceback.StackSummary.extract(((frame, frame.f_lineno) for frame in frames), lookup_lines=True)
    return _relabel("".join(summary.format()))
