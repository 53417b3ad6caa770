"""Decide, statement by statement, what of a notebook belongs in a worker script, and find the entrypoint.

Only top-level statements are judged. A statement is notebook-only when it awaits at top level, or when
it reads a name that exists only in a notebook (IPython's ``get_ipython``/``display``, nbagents'
``launch``/``sim``, IPython and ipywidgets modules, or anything set by notebook-only code). That rule
cascades: ``job = launch(...)`` is notebook-only, so ``await job`` and ``job.state`` are too. Dropped
statements stay visible in the script as comments.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from nbagents.export._cells import ParsedCell, parse_agent_options
from nbagents.export._errors import ExportError

# nbagents names that are livekit-agents names in a worker script.
LIVEKIT_EQUIVALENTS = frozenset({"JobContext", "JobProcess", "AutoSubscribe", "WorkerOptions"})
NOTEBOOK_ONLY_MODULES = ("nbagents", "IPython", "ipywidgets", "ipykernel")
#: Parts of nbagents an agent itself runs on: kept in the exported worker (which then needs them installed,
#: e.g. ``pip install "nbagents[offline]"`` for the offline speech engines).
AGENT_MODULES = ("nbagents.offline",)
_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}
IPYTHON_BUILTINS = {
    "get_ipython": "IPython itself: a magic or a shell line",
    "display": "IPython's display()",
}
# Worker options a notebook can set, with the value a script gets when the notebook leaves one unset.
# shutdown_process_timeout: nbagents' default (livekit-agents' own is 10 s; its documentation says 60 s).
WORKER_OPTION_DEFAULTS: dict[str, Any] = {
    "shutdown_process_timeout": 60.0,
    "initialize_process_timeout": 10.0,
    "agent_name": "",
}
_LAUNCH_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "shutdown_process_timeout": (int, float),
    "initialize_process_timeout": (int, float),
    "agent_name": (str,),
    "num_idle_processes": (int,),
}


@dataclass
class Plan:
    """What happens to one top-level statement: kept, replaced by other lines, hoisted, or dropped."""

    stmt: ast.stmt
    first: int
    last: int
    action: Literal["keep", "replace", "drop", "hoist"] = "keep"
    reason: str = ""
    replacement: list[str] = field(default_factory=list)
    redacted: str | None = None  # a dropped statement holding a credential: what, shown instead of the code


@dataclass
class Binding:
    """Where a top-level name was last given a value by kept code."""

    name: str
    cell: ParsedCell
    stmt: ast.stmt

    @property
    def where(self) -> str:
        return f"{self.cell.cell.label}, line {self.cell.cell_line(self.stmt.lineno)}"


@dataclass
class Site:
    """A place where the notebook runs an agent: a ``%%agent`` cell or a ``launch(...)`` call."""

    where: str
    kind: str
    entrypoint: Binding
    prewarm: Binding | None
    options: dict[str, Any]


@dataclass
class Analysis:
    """The result: per-cell statement plans, hoisted ``__future__`` imports, and the chosen entrypoint."""

    plans: dict[int, list[Plan]]
    future_imports: list[str]
    entrypoint: Binding
    prewarm: Binding | None
    options: dict[str, Any]
    sites: list[Site]
    module_names: set[str]


def _span(stmt: ast.stmt) -> tuple[int, int]:
    first = stmt.lineno
    for decorator in getattr(stmt, "decorator_list", []):
        first = min(first, decorator.lineno)
    return first, stmt.end_lineno or stmt.lineno


def _module_is_notebook_only(module: str) -> bool:
    if any(module == m or module.startswith(m + ".") for m in AGENT_MODULES):
        return False
    return any(module == m or module.startswith(m + ".") for m in NOTEBOOK_ONLY_MODULES)


def _alias_text(alias: ast.alias) -> str:
    return f"{alias.name} as {alias.asname}" if alias.asname else alias.name


def _walk_outside_functions(node: ast.AST) -> Iterator[ast.AST]:
    """Nodes of ``node`` that run when the statement runs (not the bodies of functions it defines)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from child.decorator_list
            yield from ast.walk(child.args)
            continue
        if isinstance(child, ast.Lambda):
            continue
        yield child
        yield from _walk_outside_functions(child)


def _awaits_at_top_level(stmt: ast.stmt) -> bool:
    if isinstance(stmt, (ast.AsyncFor, ast.AsyncWith)):
        return True
    for node in _walk_outside_functions(ast.Module(body=[stmt], type_ignores=[])):
        if isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)):
            return True
        if isinstance(node, ast.comprehension) and node.is_async:
            return True
    return False


def _names_read(stmt: ast.stmt) -> list[str]:
    """Names the statement reads, in order of appearance (function bodies included: they run later)."""
    seen: dict[str, None] = {}
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            seen.setdefault(node.id, None)
    return list(seen)


def _names_bound(stmt: ast.stmt) -> set[str]:
    """Top-level names the statement binds."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name.split(".")[0]) for a in stmt.names if a.name != "*"}
    bound = set()
    for node in _walk_outside_functions(stmt):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
    if isinstance(stmt, (ast.If, ast.For, ast.While, ast.With, ast.Try)):
        for child in ast.walk(stmt):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(child.name)
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                bound |= {(a.asname or a.name.split(".")[0]) for a in child.names if a.name != "*"}
    return bound


class _Analyser:
    def __init__(self) -> None:
        self.notebook_only: dict[str, str] = dict(IPYTHON_BUILTINS)
        self.bindings: dict[str, Binding] = {}
        self.launch_names: set[str] = set()
        self.nbagents_modules: set[str] = set()
        self.sites: list[Site] = []
        self.future_imports: list[str] = []
        self.drop_reasons: dict[str, str] = {}

    # -- statements ----------------------------------------------------------------------------------

    def plan_cell(self, cell: ParsedCell) -> list[Plan]:
        plans = [self._plan(cell, stmt) for stmt in cell.tree.body]
        if cell.agent is not None:
            opts = cell.agent
            entrypoint = self._resolve(opts.entrypoint, cell.cell.label, "%%agent", role="entrypoint")
            prewarm = self._resolve(opts.prewarm, cell.cell.label, "%%agent --prewarm", role="prewarm") if opts.prewarm else None
            options = {}
            if opts.timeout is not None:
                options["shutdown_process_timeout"] = opts.timeout
            if opts.agent_name is not None:
                options["agent_name"] = opts.agent_name
            self.sites.append(Site(cell.cell.label, "%%agent", entrypoint, prewarm, options))
        return plans

    def _plan(self, cell: ParsedCell, stmt: ast.stmt) -> Plan:
        first, last = _span(stmt)
        plan = Plan(stmt, first, last)
        if isinstance(stmt, ast.ImportFrom) and stmt.level == 0:
            module = stmt.module or ""
            if module == "__future__":
                self.future_imports.append(ast.unparse(stmt))
                plan.action = "hoist"
                return plan
            if module == "nbagents":
                return self._plan_nbagents_import(cell, stmt, plan)
            if _module_is_notebook_only(module):
                for alias in stmt.names:
                    self._mark_notebook_only(alias.asname or alias.name, f"from {module}, which exists only in a notebook")
                plan.action, plan.reason = "drop", f"{module} exists only in a notebook"
                return plan
        if isinstance(stmt, ast.Import):
            notebook_aliases = [a for a in stmt.names if _module_is_notebook_only(a.name)]
            if notebook_aliases:
                for alias in notebook_aliases:
                    bound = alias.asname or alias.name.split(".")[0]
                    if alias.name.split(".")[0] == "nbagents":
                        self.nbagents_modules.add(bound)
                        reason = "nbagents' notebook API"
                    else:
                        reason = f"{alias.name}, which exists only in a notebook"
                    self._mark_notebook_only(bound, reason)
                kept = [a for a in stmt.names if a not in notebook_aliases]
                if not kept:
                    plan.action, plan.reason = "drop", "notebook-only module"
                else:
                    plan.action = "replace"
                    plan.replacement = ["import " + ", ".join(_alias_text(a) for a in kept)]
                    plan.reason = "dropped " + ", ".join(a.name for a in notebook_aliases) + " (notebook only)"
                    for alias in kept:
                        self._bind(alias.asname or alias.name.split(".")[0], cell, stmt)
                return plan
        self._record_launches(cell, stmt)
        self._record_serves(cell, stmt)
        reasons = []
        if _awaits_at_top_level(stmt):
            reasons.append("top-level await")
        for name in _names_read(stmt):
            if name == "get_ipython" and name in self.notebook_only:
                reasons.append("an IPython magic or shell line")
                break
            if name in self.notebook_only:
                reasons.append(f"uses `{name}`: {self.notebook_only[name]}")
                break
        if reasons:
            plan.action, plan.reason = "drop", reasons[0]
            for name in _names_bound(stmt):
                self.drop_reasons[name] = reasons[0]
                self._mark_notebook_only(name, f"set by notebook-only code in cell {cell.cell.number}")
            return plan
        for name in _names_bound(stmt):
            self._bind(name, cell, stmt)
        return plan

    def _plan_nbagents_import(self, cell: ParsedCell, stmt: ast.ImportFrom, plan: Plan) -> Plan:
        if any(a.name == "*" for a in stmt.names):
            raise ExportError(
                f"{cell.cell.label}, line {cell.cell_line(stmt.lineno)}: `from nbagents import *` cannot be "
                "exported; import the names you use (e.g. `from nbagents import JobContext, AutoSubscribe`)"
            )
        mapped = [a for a in stmt.names if a.name in LIVEKIT_EQUIVALENTS]
        notebook = [a for a in stmt.names if a.name not in LIVEKIT_EQUIVALENTS]
        for alias in notebook:
            bound = alias.asname or alias.name
            if alias.name == "launch":
                self.launch_names.add(bound)
            self._mark_notebook_only(bound, f"nbagents.{alias.name}, part of nbagents' notebook API")
        for alias in mapped:
            self._bind(alias.asname or alias.name, cell, stmt)
        if not mapped:
            plan.action, plan.reason = "drop", "nbagents' notebook API"
            return plan
        plan.action = "replace"
        plan.replacement = ["from livekit.agents import " + ", ".join(_alias_text(a) for a in mapped)]
        plan.reason = "from nbagents: the same names in livekit.agents"
        if notebook:
            plan.reason += "; dropped " + ", ".join(a.name for a in notebook) + " (notebook only)"
        return plan

    def _why_dropped(self, name: str) -> str:
        reason = self.drop_reasons.get(name)
        return f" (its definition: {reason})" if reason else ""

    def _bind(self, name: str, cell: ParsedCell, stmt: ast.stmt) -> None:
        self.bindings[name] = Binding(name, cell, stmt)
        self.notebook_only.pop(name, None)

    def _mark_notebook_only(self, name: str, reason: str) -> None:
        self.notebook_only[name] = reason
        self.bindings.pop(name, None)

    # -- launch(...) calls and entrypoints -----------------------------------------------------------

    def _is_launch_call(self, node: ast.AST) -> bool:
        if not isinstance(node, ast.Call):
            return False
        func = node.func
        if isinstance(func, ast.Name):
            return func.id in self.launch_names
        return (
            isinstance(func, ast.Attribute)
            and func.attr == "launch"
            and isinstance(func.value, ast.Name)
            and func.value.id in self.nbagents_modules
        )

    def _record_launches(self, cell: ParsedCell, stmt: ast.stmt) -> None:
        for node in _walk_outside_functions(stmt):
            if not self._is_launch_call(node):
                continue
            assert isinstance(node, ast.Call)
            where = f"{cell.cell.label}, line {cell.cell_line(node.lineno)}"
            target = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "entrypoint"), None)
            if not isinstance(target, ast.Name):
                raise ExportError(
                    f"{where}: launch() needs the entrypoint as a plain function name "
                    "(e.g. `launch(entrypoint, room=\"demo\")`) so the export can register it with the worker"
                )
            entrypoint = self._resolve(target.id, where, "launch()", role="entrypoint")
            prewarm = None
            options: dict[str, Any] = {}
            for keyword in node.keywords:
                if keyword.arg == "prewarm":
                    if isinstance(keyword.value, ast.Constant) and keyword.value.value is None:
                        continue
                    if not isinstance(keyword.value, ast.Name):
                        raise ExportError(f"{where}: launch(prewarm=...) must be a function name or None")
                    prewarm = self._resolve(keyword.value.id, where, "launch(prewarm=...)", role="prewarm")
                elif keyword.arg in _LAUNCH_OPTION_TYPES:
                    value = keyword.value
                    expected = _LAUNCH_OPTION_TYPES[keyword.arg]
                    if not (isinstance(value, ast.Constant) and isinstance(value.value, expected) and not isinstance(value.value, bool)):
                        raise ExportError(
                            f"{where}: launch({keyword.arg}=...) must be a literal "
                            f"{' or '.join(t.__name__ for t in expected)} so the export can write it into the script"
                        )
                    options[keyword.arg] = value.value
            self.sites.append(Site(where, "launch()", entrypoint, prewarm, options))

    def _record_serves(self, cell: ParsedCell, stmt: ast.stmt) -> None:
        """``%agent serve [--agent-name N] [--timeout S] ...`` runs the entrypoint as a worker: its options count."""
        for node in _walk_outside_functions(stmt):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "run_line_magic" and len(node.args) == 2
                    and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args)):
                continue
            magic, line = node.args[0].value, node.args[1].value  # type: ignore[union-attr]
            words = line.split(None, 1)
            if magic != "agent" or not words or words[0] != "serve":
                continue
            arguments = words[1] if len(words) > 1 else ""
            if arguments.split()[:1] in (["stop"], ["status"]):
                continue
            opts = parse_agent_options(arguments, cell.cell)
            where = f"{cell.cell.label}, line {cell.cell_line(node.lineno)}"
            entrypoint = self._resolve(opts.entrypoint, where, "%agent serve", role="entrypoint")
            prewarm = self._resolve(opts.prewarm, where, "%agent serve --prewarm", role="prewarm") if opts.prewarm else None
            options: dict[str, Any] = {}
            if opts.timeout is not None:
                options["shutdown_process_timeout"] = opts.timeout
            if opts.agent_name is not None:
                options["agent_name"] = opts.agent_name
            self.sites.append(Site(where, "%agent serve", entrypoint, prewarm, options))

    def _resolve(self, name: str, where: str, how: str, *, role: str) -> Binding:
        if name in self.bindings:
            binding = self.bindings[name]
            self._check_function(binding, role)
            return binding
        if name in self.notebook_only:
            raise ExportError(
                f"{where}: the {role} `{name}` ({how}) cannot go into a worker script: `{name}` is "
                f"{self.notebook_only[name]}{self._why_dropped(name)}. Keep notebook-only code (nbagents.launch, "
                f"nbagents.sim, `await job`, display calls, magics, `import nbagents` — write "
                f"`from nbagents import JobContext, ...` instead) out of the {role}."
            )
        raise ExportError(
            f"{where}: {how} runs the {role} `{name}`, but no code cell up to this point defines it "
            f"(write `{'async def' if role == 'entrypoint' else 'def'} {name}(...)` in a cell that is not tagged nbagents-skip)"
        )

    @staticmethod
    def _check_function(binding: Binding, role: str) -> None:
        stmt = binding.stmt
        if role == "entrypoint" and isinstance(stmt, ast.FunctionDef):
            raise ExportError(
                f"{binding.where}: the entrypoint `{binding.name}` is a plain `def`; livekit-agents awaits it, "
                f"so write `async def {binding.name}(ctx: JobContext)`"
            )
        if role == "prewarm" and isinstance(stmt, ast.AsyncFunctionDef):
            raise ExportError(
                f"{binding.where}: the prewarm function `{binding.name}` is `async def`; livekit-agents calls it "
                f"synchronously in each new process, so write `def {binding.name}(proc: JobProcess)`"
            )

    def choose(self) -> tuple[Binding, Binding | None, dict[str, Any], list[Site]]:
        sites = self.sites
        if not sites:
            fallback = self.bindings.get("entrypoint")
            if fallback is None or not isinstance(fallback.stmt, ast.AsyncFunctionDef):
                raise ExportError(
                    "no entrypoint: no cell runs `%%agent`, calls `launch(...)` or defines `async def entrypoint(ctx)`. "
                    "Add a cell starting with `%%agent --room demo` that defines `async def entrypoint(ctx: JobContext)`."
                )
            sites = [Site(fallback.where, "definition", fallback, None, {})]
        distinct: dict[int, list[Site]] = {}
        for site in sites:
            distinct.setdefault(id(site.entrypoint.stmt), []).append(site)
        if len(distinct) > 1:
            listed = "; ".join(
                f"{group[0].kind} in {group[0].where} runs `{group[0].entrypoint.name}` defined in {group[0].entrypoint.where}"
                for group in distinct.values()
            )
            raise ExportError(
                f"{_NUMBER_WORDS.get(len(distinct), str(len(distinct)))} entrypoints: {listed}. A worker script has one entrypoint: tag the cells of the others "
                "nbagents-skip (or export each agent from its own notebook)."
            )
        chosen = sites[0].entrypoint
        options = dict(WORKER_OPTION_DEFAULTS)
        prewarm: Binding | None = None
        set_by: dict[str, str] = {}
        for site in sites:
            for key, value in site.options.items():
                if key in set_by and options[key] != value:
                    raise ExportError(
                        f"{site.where} runs `{chosen.name}` with {key}={value!r}, but {set_by[key]} uses "
                        f"{key}={options[key]!r}; make them agree or tag one cell nbagents-skip"
                    )
                options[key], set_by[key] = value, site.where
            if site.prewarm is not None:
                if prewarm is not None and prewarm.stmt is not site.prewarm.stmt:
                    raise ExportError(f"{site.where} uses a different prewarm function than an earlier cell; keep one")
                prewarm = site.prewarm
        for binding in (chosen, prewarm):
            if binding is None:
                continue
            final = self.bindings.get(binding.name)
            if final is None or final.stmt is not binding.stmt:
                later = final.where if final else "later notebook-only code"
                raise ExportError(
                    f"`{binding.name}` is run from {sites[0].where} but redefined afterwards ({later}); "
                    "in a script the last definition wins. Rename one or tag a cell nbagents-skip."
                )
        return chosen, prewarm, options, sites


def analyse(cells: list[ParsedCell], check: Callable[[dict[int, list[Plan]]], None] | None = None) -> Analysis:
    """Plan every kept cell, let ``check`` see the plans (the credential guard: it refuses or marks dropped
    statements before anything else is judged), then choose the one entrypoint; raises ExportError naming
    the cell."""
    analyser = _Analyser()
    plans = {cell.cell.number: analyser.plan_cell(cell) for cell in cells}
    if check is not None:
        check(plans)
    entrypoint, prewarm, options, sites = analyser.choose()
    return Analysis(
        plans=plans,
        future_imports=analyser.future_imports,
        entrypoint=entrypoint,
        prewarm=prewarm,
        options=options,
        sites=sites,
        module_names=set(analyser.bindings),
    )
