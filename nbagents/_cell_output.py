"""Lines nbagents prints from a background thread, shown in a running cell (``%load_ext nbagents`` installs it).

The engine starts in a background thread, and its line ("nbagents engine: ...") or a notice comes when it is
ready. A kernel attaches such output to the last cell that ran; when that cell has already finished, JupyterLab
still shows it there, but a headless run (nbclient, ``jupyter nbconvert --execute``) has moved on and never
records it. So a line that comes while no cell runs is held and printed when the next cell starts (IPython's
``pre_run_cell`` event), where every front end keeps it.
"""

from __future__ import annotations

import threading
from typing import Any, TextIO

from nbagents.runtime import engine_session


class CellOutput:
    """``engine_session.print_line`` while the extension is loaded: prints now if a cell runs, else holds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = True  # installed by %load_ext, which runs in a cell
        self._held: list[tuple[str, TextIO]] = []

    def __call__(self, line: str, stream: TextIO) -> None:
        with self._lock:
            if not self._running:
                self._held.append((line, stream))
                return
            print(line, file=stream, flush=True)

    def pre_run_cell(self, info: Any = None) -> None:
        with self._lock:
            self._running = True
            held, self._held = self._held, []
            for line, stream in held:
                print(line, file=stream, flush=True)

    def post_run_cell(self, result: Any = None) -> None:
        with self._lock:
            self._running = False


_installed: CellOutput | None = None


def install(ipython: Any) -> None:
    global _installed
    if _installed is not None:
        return
    _installed = CellOutput()
    ipython.events.register("pre_run_cell", _installed.pre_run_cell)
    ipython.events.register("post_run_cell", _installed.post_run_cell)
    engine_session.print_line = _installed


def uninstall(ipython: Any) -> None:
    global _installed
    if _installed is None:
        return
    ipython.events.unregister("pre_run_cell", _installed.pre_run_cell)
    ipython.events.unregister("post_run_cell", _installed.post_run_cell)
    engine_session.print_line = engine_session.print_now
    _installed = None
