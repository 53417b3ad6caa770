"""Shipping notebook-defined code to a job process by value.

Functions and classes defined in notebook cells live in ``__main__``, which a child process cannot
import by name; cloudpickle serializes them (and the globals they use) by value. When something cannot
be pickled, the error names the global or closure variable that is to blame.
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
import types
from pathlib import Path
from typing import Any, Iterator

import cloudpickle

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
        return cloudpickle.dumps(obj)
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
    """The inverse of :func:`ship` (in the job process)."""
    return cloudpickle.loads(blob)


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
