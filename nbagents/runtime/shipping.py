"""Shipping notebook-defined code to a job process by value.

Functions and classes defined in notebook cells live in ``__main__``, which a child process cannot
import by name; cloudpickle serializes them (and the globals they use) by value. When something cannot
be pickled, the error names the global or closure variable that is to blame.

Code objects travel whole (``marshal``, the interpreter's own format: kernel and job run the same
Python), so they keep their file names and line tables; cloudpickle's own code reducer renames every
file ``<dynamic-code>`` since 3.1. The source lines of code that has no file on disk (notebook cells)
travel with it, with the label IPython gives the cell (``Cell In[4]``), so a job's tracebacks name the
cell and quote the line (:mod:`nbagents.runtime.tracebacks`).
"""

from __future__ import annotations

import hashlib
import io
import linecache
import marshal
import os
import pickle
import sys
import sysconfig
import types
from pathlib import Path
from typing import Any, Iterator

import cloudpickle

from nbagents.runtime.tracebacks import register_sources

__all__ = ["ShippingError", "ship", "unship", "digest"]


class ShippingError(TypeError):
    """A function, or something it refers to, cannot be sent to a job process."""


def ship(obj: Any, *, role: str = "entrypoint") -> bytes:
    """Serialize ``obj`` (a function, usually from a notebook cell) for a job process.

    Code from ``__main__`` (notebook cells) goes by value. So does code from the user's own modules
    (files outside the installed packages, such as helpers next to the notebook or test modules),
    because the job process may not be able to import them, or would import a stale copy.
    """
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    by_value = module is not None and _is_user_module(module)
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        return _dumps(obj)
    except Exception as exc:  # pickling raises TypeError, PicklingError, AttributeError, RecursionError...
        culprit = _find_culprit(obj)
        name = getattr(obj, "__qualname__", None) or repr(obj)
        if culprit is not None:
            path, value, cause = culprit
            raise ShippingError(
                f"cannot send the {role} {name!r} to its job process: it uses {path}, "
                f"a {type(value).__module__}.{type(value).__qualname__}, which cannot be pickled ({cause}). "
                f"Create it inside the {role} (or in prewarm, storing it in proc.userdata) instead of in the notebook."
            ) from exc
        raise ShippingError(
            f"cannot send the {role} {name!r} to its job process: {type(exc).__name__}: {exc}. "
            f"Define what it needs inside the function, or in prewarm."
        ) from exc
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)


_INSTALLED = tuple(
    Path(p).resolve() for p in {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
)


def _is_user_module(module: types.ModuleType) -> bool:
    """A module of the user's own (not __main__, not installed, not nbagents)."""
    name = module.__name__
    if name == "__main__" or name.split(".")[0] in ("nbagents", "livekit"):
        return False
    file = getattr(module, "__file__", None)
    if not file:
        return False
    path = Path(file).resolve()
    return not any(path.is_relative_to(root) for root in _INSTALLED)


def unship(blob: bytes) -> Any:
    """The inverse of :func:`ship` (in the job process): registers the shipped source lines, then loads."""
    payload, sources, labels = pickle.loads(blob)
    register_sources(sources, labels)
    return cloudpickle.loads(payload)


class _LocatingPickler(cloudpickle.Pickler):
    """cloudpickle, but code objects keep their file names; records which files the code came from."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.filenames: set[str] = set()

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.CodeType:
            self.filenames.add(obj.co_filename)
            return marshal.loads, (marshal.dumps(obj),)
        return super().reducer_override(obj)


def _dumps(obj: Any) -> bytes:
    buffer = io.BytesIO()
    pickler = _LocatingPickler(buffer)
    pickler.dump(obj)
    sources: dict[str, list[str]] = {}
    labels: dict[str, str] = {}
    for filename in sorted(pickler.filenames):
        if os.path.isfile(filename):
            continue  # the job process reads it from disk like any module
        lines = linecache.getlines(filename)
        if lines:
            sources[filename] = lines
        label = _cell_label(filename)
        if label is not None:
            labels[filename] = label
    return pickle.dumps((buffer.getvalue(), sources, labels), protocol=pickle.HIGHEST_PROTOCOL)


def _cell_label(filename: str) -> str | None:
    """``"Cell In[4]"`` for the file name IPython gave a cell's code, as IPython's tracebacks say it."""
    ipython_module = sys.modules.get("IPython")
    shell = ipython_module.get_ipython() if ipython_module is not None else None  # type: ignore[attr-defined]
    format_code_name = getattr(getattr(shell, "compile", None), "format_code_name", None)
    if format_code_name is None:
        return None
    try:
        named = format_code_name(filename)
    except Exception:
        return None
    return f"{named[0]} {named[1]}" if named else None


def digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()[:16]


def _find_culprit(obj: Any) -> tuple[str, Any, str] | None:
    """The first global/closure variable (searched depth-first through nested functions) that fails to pickle."""
    seen: set[int] = set()
    for path, value in _references(obj, seen, depth=0):
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            return path, value, f"{type(exc).__name__}: {exc}"
    return None


def _references(obj: Any, seen: set[int], depth: int) -> Iterator[tuple[str, Any]]:
    if id(obj) in seen or depth > 6:
        return
    seen.add(id(obj))
    if isinstance(obj, types.MethodType):
        yield "its bound instance", obj.__self__
        obj = obj.__func__
    if isinstance(obj, types.FunctionType):
        owner = obj.__qualname__
        names = _code_names(obj.__code__)
        for name in names:
            if name in obj.__globals__:
                value = obj.__globals__[name]
                if isinstance(value, types.ModuleType):
                    continue
                if isinstance(value, (types.FunctionType, type)):
                    yield from _references(value, seen, depth + 1)
                yield f"the global {name!r} (used by {owner})", value
        if obj.__closure__:
            for var, cell in zip(obj.__code__.co_freevars, obj.__closure__):
                try:
                    value = cell.cell_contents
                except ValueError:
                    continue
                if isinstance(value, (types.FunctionType, type)):
                    yield from _references(value, seen, depth + 1)
                yield f"the closure variable {var!r} (of {owner})", value
        for name, value in (obj.__defaults__ and enumerate(obj.__defaults__)) or ():
            yield f"default argument #{name} of {owner}", value
    elif isinstance(obj, type):
        for name, value in vars(obj).items():
            if isinstance(value, (types.FunctionType, staticmethod, classmethod)):
                fn = getattr(value, "__func__", value)
                yield from _references(fn, seen, depth + 1)
            elif not name.startswith("__"):
                yield f"the class attribute {obj.__qualname__}.{name}", value


def _code_names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_code_names(const))
    return list(dict.fromkeys(names))
