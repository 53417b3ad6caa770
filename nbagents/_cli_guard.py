"""``cli.run_app(server)`` in a notebook kernel: launch instead of livekit-agents' command line.

livekit-agents examples end with ``if __name__ == "__main__": cli.run_app(server)``. In a kernel
``__name__`` is ``"__main__"``, and livekit-agents' CLI parses the kernel's own arguments and exits the
cell with ``SystemExit: 2``. Once ``%load_ext nbagents`` ran, ``livekit.agents.cli.run_app`` is replaced
in the kernel (when livekit-agents is imported, or at once if it already is):

- in a ``%%agent`` cell it records the server, and the cell launches the function registered with
  ``@server.rtc_session(...)`` with its options (see :mod:`nbagents.magics`);
- anywhere else it prints one line saying what to do instead, and returns.

Nothing else of livekit-agents changes, and job processes are not affected.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Iterator
from typing import Any

__all__ = ["capturing", "install"]

_CLI = "livekit.agents.cli"
_captured: list[Any] | None = None


def run_app(server: Any) -> None:
    """Replaces ``livekit.agents.cli.run_app`` in a notebook kernel (see the module's documentation)."""
    if _captured is not None:
        _captured.append(server)
        return
    name = _registered_name(server)
    what = f"`{name}`" if name else "its entrypoint"
    print(
        "nbagents: cli.run_app() runs livekit-agents' command line, which cannot run inside a notebook kernel; "
        f"run this cell with %%agent to launch {what} as a job (or `%agent serve` to take jobs the server dispatches)."
    )


def _registered_name(server: Any) -> str | None:
    try:
        from nbagents.runtime._agents import registered_session

        registration = registered_session(server)
    except Exception:
        return None
    return getattr(registration["entrypoint"], "__name__", None) if registration else None


@contextlib.contextmanager
def capturing() -> Iterator[list[Any]]:
    """While the block runs, ``cli.run_app(server)`` records ``server`` in the yielded list and returns."""
    global _captured
    previous, _captured = _captured, []
    try:
        yield _captured
    finally:
        _captured = previous


def install() -> None:
    """Replace ``run_app`` now if livekit-agents' CLI is imported, else as soon as it is."""
    module = sys.modules.get(_CLI)
    if module is not None:
        _patch(module)
    elif not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


def uninstall() -> None:
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _PatchOnImport)]
    module = sys.modules.get(_CLI)
    original = getattr(module, "_nbagents_original_run_app", None)
    if module is not None and original is not None:
        module.run_app = original
        inner = sys.modules.get(_CLI + ".cli")
        if inner is not None:
            inner.run_app = original


def _patch(module: types.ModuleType) -> None:
    if getattr(module, "run_app", None) is run_app:
        return
    module._nbagents_original_run_app = module.run_app  # type: ignore[attr-defined]
    module.run_app = run_app  # type: ignore[attr-defined]
    inner = sys.modules.get(_CLI + ".cli")  # livekit.agents.cli.cli, where run_app is defined
    if inner is not None:
        inner.run_app = run_app  # type: ignore[attr-defined]


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds ``livekit.agents.cli`` with the other finders and patches it right after it executes."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != _CLI:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        _patch(module)

    def __getattr__(self, name: str) -> Any:  # resources, get_source, ... as the real loader has them
        return getattr(self._loader, name)
