"""Write the worker script: the kept cells in order (dropped code shown as comments) and a worker main
in the form livekit-agents 1.8 recommends: an ``AgentServer`` with its entrypoint registered through
``rtc_session``, started by ``cli.run_app`` (so ``python agent.py start`` works, and so does
``python -m livekit.agents start agent.py``, which discovers the module-level ``server``)."""

from __future__ import annotations

import ast
import json
from typing import Any

from nbagents import __version__
from nbagents.export._analyse import Analysis, Plan
from nbagents.export._cells import ParsedCell
from nbagents.export._read import CodeCell

MARK = "[nbagents]"


def _commented(lines: list[str]) -> list[str]:
    return [f"# {line}".rstrip() for line in lines]


def _not_shown(count: int, what: str) -> str:
    """What replaces shown-but-not-run code that holds a credential (see ``_credentials``)."""
    lines = f"{count} lines" if count != 1 else "1 line"
    return f"# ({lines} not shown: {'they hold' if count != 1 else 'it holds'} {what}; the worker reads credentials from the environment)"


def _render_group(cell: ParsedCell, group: list[Plan]) -> list[str]:
    first = min(p.first for p in group)
    last = max(p.last for p in group)
    if all(p.action == "keep" for p in group):
        return cell.lines[first - 1 : last]
    if len(group) == 1:
        plan = group[0]
        if plan.action == "hoist":
            return [f"# {MARK} moved to the top of the script: {ast.unparse(plan.stmt)}"]
        if plan.action == "replace":
            return [f"{line}  # {MARK} {plan.reason}" for line in plan.replacement]
        if plan.redacted:
            return [f"# {MARK} notebook only ({plan.reason}):", _not_shown(last - first + 1, plan.redacted)]
        return [f"# {MARK} notebook only ({plan.reason}):"] + _commented(cell.source_of(first, last))
    out: list[str] = []  # several statements on one line (`a; b`): render each on its own
    for plan in group:
        if plan.action == "keep":
            out.append(ast.unparse(plan.stmt))
        elif plan.action == "replace":
            out.extend(f"{line}  # {MARK} {plan.reason}" for line in plan.replacement)
        elif plan.action == "hoist":
            out.append(f"# {MARK} moved to the top of the script: {ast.unparse(plan.stmt)}")
        elif plan.redacted:
            out.append(f"# {MARK} notebook only ({plan.reason}): " + _not_shown(1, plan.redacted)[2:])
        else:
            out.append(f"# {MARK} notebook only ({plan.reason}): " + ast.unparse(plan.stmt))
    return out


def render_cell(cell: ParsedCell, plans: list[Plan]) -> list[str]:
    """The script lines for one kept cell."""
    header = f"# %% cell {cell.cell.number}"
    if cell.magic_line:
        header += f" ({cell.magic_line})"
    out = [header]
    if cell.agent is not None:
        if cell.agent.room:
            out.append(f"# {MARK} the notebook ran this agent in room {cell.agent.room!r}; a worker is dispatched to rooms")
        if cell.agent.ignored:
            out.append(f"# {MARK} notebook-only %%agent options left out: {' '.join(cell.agent.ignored)}")
    if cell.cell_magic and not cell.lines and cell.original is not None:
        out.append(f"# {MARK} notebook only (%%{cell.cell_magic} is a notebook cell magic):")
        out.extend([_not_shown(len(cell.original), cell.hidden)] if cell.hidden else _commented(cell.original))
        return out
    groups: list[list[Plan]] = []
    for plan in sorted(plans, key=lambda p: (p.first, p.stmt.col_offset)):
        if groups and plan.first <= max(p.last for p in groups[-1]):
            groups[-1].append(plan)
        else:
            groups.append([plan])
    line = 1
    for group in groups:
        first = min(p.first for p in group)
        out.extend(cell.lines[line - 1 : first - 1])
        out.extend(_render_group(cell, group))
        line = max(p.last for p in group) + 1
    out.extend(cell.lines[line - 1 :])
    while out and not out[-1].strip():
        out.pop()
    return out


def _free_name(wanted: str, taken: set[str]) -> str:
    name = wanted
    while name in taken:
        name = "_" + name
    return name


def _docstring(notebook_name: str, analysis: Analysis) -> list[str]:
    agent_name = analysis.options["agent_name"]
    if agent_name:
        dispatch = (
            f"agent_name {agent_name!r}: explicit dispatch only. Dispatch it with\n"
            f"AgentDispatchService.CreateDispatch(agent_name={agent_name!r}, room=...) or by a RoomAgentDispatch\n"
            "in a participant token's RoomConfiguration."
        )
    else:
        dispatch = "No agent_name: the server dispatches this agent automatically to every new room."
    return [
        '"""' + f"{notebook_name}, exported by nbagents {__version__} as a LiveKit Agents worker.",
        "",
        "Run it with livekit-agents 1.8 against any LiveKit server (nbagents' embedded server, livekit-server",
        "or LiveKit Cloud); it reads LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET from the environment:",
        "",
        "    python agent.py start    # production worker",
        "    python agent.py dev      # development mode (debug logging)",
        "",
        dispatch,
        '"""',
    ]


def _literal(value: Any) -> str:
    return repr(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)


def render_script(notebook_name: str, cells: list[ParsedCell], skipped: list[CodeCell], analysis: Analysis) -> str:
    """The whole worker script."""
    out = _docstring(notebook_name, analysis)
    if analysis.future_imports:
        out.append("")
        out.extend(dict.fromkeys(analysis.future_imports))
    by_number = {cell.cell.number: cell for cell in cells}
    skipped_numbers = {cell.number for cell in skipped}
    numbers = sorted(set(by_number) | skipped_numbers)
    for number in numbers:
        out += ["", ""]
        if number in skipped_numbers:
            out.append(f"# %% cell {number}: left out (tagged nbagents-skip)")
            continue
        out.extend(render_cell(by_number[number], analysis.plans[number]))

    taken = analysis.module_names
    server_cls = "AgentServer" if "AgentServer" not in taken else "_AgentServer"
    cli_name = "cli" if "cli" not in taken else "_cli"
    server = _free_name("server", taken)
    imports = [
        "AgentServer" if server_cls == "AgentServer" else "AgentServer as _AgentServer",
        "cli" if cli_name == "cli" else "cli as _cli",
    ]
    options = analysis.options
    prewarm = analysis.prewarm.name if analysis.prewarm else "None"
    out += [
        "",
        "",
        "# %% worker (written by nbagents export: every option explicit, so the worker behaves as the notebook did)",
        f"from livekit.agents import {', '.join(imports)}",
        "",
        f"{server} = {server_cls}(",
        f"    setup_fnc={prewarm},",
        f"    initialize_process_timeout={_literal(options['initialize_process_timeout'])},",
        f"    shutdown_process_timeout={_literal(options['shutdown_process_timeout'])},",
    ]
    if "num_idle_processes" in options:
        out.append(f"    num_idle_processes={options['num_idle_processes']!r},")
    out += [
        ")",
        f"{server}.rtc_session({analysis.entrypoint.name}, agent_name={json.dumps(options['agent_name'])})",
        "",
        'if __name__ == "__main__":',
        f"    {cli_name}.run_app({server})",
        "",
    ]
    return "\n".join(out)
