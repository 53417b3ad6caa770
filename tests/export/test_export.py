"""The exporter's transformation, its errors for notebooks it cannot export, and its two front ends
(`nbagents export` and `jupyter nbconvert --to nbagents`). Exported scripts are imported for real, so the
worker they build is livekit-agents' own AgentServer with the options the notebook set."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from nbagents.export import ExportError, export_notebook, export_notebook_node

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

IMPORTS = "from nbagents import JobContext, JobProcess, AutoSubscribe"
AGENT = "async def entrypoint(ctx: JobContext):\n    await ctx.connect()\n"


def notebook(*cells: str | tuple[str, list[str]]) -> nbformat.NotebookNode:
    """A notebook of code cells; a (source, tags) pair makes a tagged cell."""
    built = [new_markdown_cell("# title")]
    for cell in cells:
        source, tags = cell if isinstance(cell, tuple) else (cell, [])
        built.append(new_code_cell(source, metadata={"tags": tags} if tags else {}))
    return new_notebook(cells=built)


def export(*cells: str | tuple[str, list[str]]) -> str:
    return export_notebook_node(notebook(*cells), name="test.ipynb").source


def load_worker(source: str, tmp_path: Path):
    """Import an exported script as a module (not as __main__, so it builds the worker without running it)."""
    path = tmp_path / "agent_under_test.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("agent_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export_error(*cells: str | tuple[str, list[str]]) -> str:
    with pytest.raises(ExportError) as info:
        export(*cells)
    return str(info.value)


# -- what the script contains -------------------------------------------------------------------------------


def test_quickstart_becomes_a_livekit_agents_worker_with_every_option_explicit(tmp_path):
    from livekit.agents import AgentServer, JobContext

    script = export_notebook(ROOT / "notebooks" / "quickstart.ipynb")
    source = script.source
    assert "from livekit.agents import AutoSubscribe, JobContext" in source
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(ast.parse(source)) if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    ]
    assert not [name for name in imported if name and name.startswith("nbagents")]
    assert "shutdown_process_timeout=60.0" in source and "initialize_process_timeout=10.0" in source
    assert 'rtc_session(entrypoint, agent_name="")' in source
    assert source.rstrip().endswith("cli.run_app(server)")
    module = load_worker(source, tmp_path)
    assert isinstance(module.server, AgentServer)
    assert module.server._entrypoint_fnc is module.entrypoint
    assert module.server._shutdown_process_timeout == 60.0
    assert module.server._agent_name == ""
    assert module.JobContext is JobContext
    assert not hasattr(module, "job") and not hasattr(module, "result")


def test_agent_cell_options_become_worker_options(tmp_path):
    source = export(
        IMPORTS,
        "def warm(proc: JobProcess):\n    proc.userdata['x'] = 1\n",
        f"%%agent --room r --entrypoint my_agent --timeout 7.5 --agent-name greeter --prewarm warm --unknown-flag\n"
        "async def my_agent(ctx: JobContext):\n    pass\n",
    )
    server = load_worker(source, tmp_path).server
    assert server._shutdown_process_timeout == 7.5
    assert server._agent_name == "greeter"
    assert server._setup_fnc.__name__ == "warm"
    assert server._entrypoint_fnc.__name__ == "my_agent"
    assert "notebook-only %%agent options left out: --unknown-flag" in source
    assert "room 'r'" in source


def test_launch_call_names_the_entrypoint_and_its_options(tmp_path):
    source = export(
        "from nbagents import JobContext, launch",
        "async def agent(ctx: JobContext):\n    pass\n",
        "job = launch(agent, room='demo', shutdown_process_timeout=5)",
        "result = await job\nprint(result.persisted)",
    )
    server = load_worker(source, tmp_path).server
    assert server._entrypoint_fnc.__name__ == "agent"
    assert server._shutdown_process_timeout == 5.0
    assert "# job = launch(agent, room='demo', shutdown_process_timeout=5)" in source
    assert "notebook only (top-level await)" in source
    assert "uses `result`" in source


def test_a_plain_entrypoint_definition_exports_with_the_defaults(tmp_path):
    server = load_worker(export(IMPORTS, AGENT), tmp_path).server
    assert server._entrypoint_fnc.__name__ == "entrypoint"
    assert server._shutdown_process_timeout == 60.0


def test_cells_tagged_nbagents_skip_are_left_out(tmp_path):
    source = export(IMPORTS, ("raise SystemExit('scratch')", ["nbagents-skip"]), f"%%agent\n{AGENT}")
    assert "scratch" not in source
    assert "cell 3: left out (tagged nbagents-skip)" in source
    load_worker(source, tmp_path)  # importing it does not run the skipped cell


def test_magics_shell_lines_and_what_depends_on_them_are_dropped(tmp_path):
    source = export(
        "%load_ext nbagents\n!pip list\nfiles = !ls\nprint(files)\n%matplotlib inline\nx = 1",
        "%%bash\necho hi",
        "%%time\ny = x + 1",
        IMPORTS,
        f"%%agent\n{AGENT}",
    )
    module = load_worker(source, tmp_path)
    assert module.x == 1 and module.y == 2
    for dropped in ("# %load_ext nbagents", "# !pip list", "# files = !ls", "# print(files)", "# echo hi"):
        assert dropped in source
    assert "get_ipython" not in source


def test_notebook_only_names_cascade_and_display_calls_are_dropped(tmp_path):
    source = export(
        "import nbagents\nimport nbagents.sim as sim\nfrom IPython.display import Markdown",
        IMPORTS,
        f"%%agent\n{AGENT}",
        "handle = nbagents.jobs()[-1]\nstate = handle.state\ndisplay(Markdown(state))\nkept = 3",
        "async with sim.join('demo', 'alice') as alice:\n    await alice.play_tone()",
    )
    module = load_worker(source, tmp_path)
    assert module.kept == 3
    assert not hasattr(module, "handle") and not hasattr(module, "state")
    assert "uses `display`" in source and "uses `handle`" in source


def test_future_imports_move_to_the_top(tmp_path):
    source = export(IMPORTS, "from __future__ import annotations\n" + AGENT)
    assert source.split('"""')[2].lstrip().startswith("from __future__ import annotations")
    load_worker(source, tmp_path)


def test_credentials_never_reach_the_script():
    source = export("%env LIVEKIT_API_SECRET=topsecret", IMPORTS, AGENT)
    assert "topsecret" not in source
    message = export_error("import os\nos.environ['LIVEKIT_API_SECRET'] = 'topsecret'", IMPORTS, AGENT)
    assert 'cell 2 ("import os"), line 2' in message
    assert "environment" in message


# -- clear errors that name the cell ------------------------------------------------------------------------


def test_no_entrypoint():
    message = export_error(IMPORTS, "x = 1")
    assert message.startswith("no entrypoint") and "%%agent" in message


def test_an_agent_cell_that_defines_no_entrypoint_is_named():
    message = export_error(IMPORTS, "%%agent --room demo\nasync def agent(ctx):\n    pass")
    assert 'cell 3 ("%%agent --room demo")' in message and "`entrypoint`" in message


def test_two_entrypoints_name_both_cells():
    message = export_error(IMPORTS, f"%%agent\n{AGENT}", f"%%agent --room other\n{AGENT}")
    assert message.startswith("two entrypoints") and "cell 3" in message and "cell 4" in message
    assert "nbagents-skip" in message


def test_two_entrypoints_from_an_agent_cell_and_a_launch_call():
    message = export_error(
        "from nbagents import JobContext, launch",
        f"%%agent\n{AGENT}",
        "async def other(ctx):\n    pass\njob = launch(other, room='x')",
    )
    assert message.startswith("two entrypoints") and "cell 3" in message and "cell 4" in message


def test_a_syntax_error_names_the_cell_and_line():
    message = export_error(IMPORTS, "%%agent\nasync def entrypoint(ctx):\n    return (")
    assert 'cell 3 ("%%agent"), line 3: syntax error' in message


def test_a_plain_def_entrypoint_is_refused():
    message = export_error(IMPORTS, "%%agent\ndef entrypoint(ctx):\n    pass")
    assert "cell 3" in message and "async def entrypoint" in message


def test_an_entrypoint_that_uses_notebook_only_code_is_refused():
    message = export_error(IMPORTS, "%%agent\nasync def entrypoint(ctx):\n    display(ctx)")
    assert "cell 3" in message and "`display`" in message


def test_redefining_the_entrypoint_after_running_it_is_refused():
    message = export_error(IMPORTS, f"%%agent\n{AGENT}", "async def entrypoint(ctx):\n    pass")
    assert "redefined" in message and "cell 4" in message


def test_malformed_json(tmp_path):
    path = tmp_path / "broken.ipynb"
    path.write_text('{"cells": [,]}')
    with pytest.raises(ExportError, match=r"broken.ipynb is not a notebook: malformed JSON at line 1, column 12"):
        export_notebook(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[1, 2]", "has no 'nbformat' and 'cells'"),
        ('{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": "x"}', "is not a valid notebook"),
        (b"\xff\xfe\x00", "not UTF-8"),
    ],
    ids=["json-not-a-notebook", "invalid-schema", "not-utf8"],
)
def test_files_that_are_not_notebooks(tmp_path, content, expected):
    path = tmp_path / "x.ipynb"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ExportError, match=expected):
        export_notebook(path)


def test_missing_file(tmp_path):
    with pytest.raises(ExportError, match="no such file"):
        export_notebook(tmp_path / "nope.ipynb")


# -- the command line and nbconvert ------------------------------------------------------------------------------


def test_cli_writes_the_script(tmp_path):
    out = tmp_path / "agent.py"
    done = subprocess.run(
        [BIN / "nbagents", "export", ROOT / "notebooks" / "quickstart.ipynb", "-o", out], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text() == export_notebook(ROOT / "notebooks" / "quickstart.ipynb").source
    assert f"wrote {out}" in done.stdout


def test_cli_reports_errors_on_stderr(tmp_path):
    path = tmp_path / "empty.ipynb"
    nbformat.write(notebook("x = 1"), path)
    done = subprocess.run([BIN / "nbagents", "export", path], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith("nbagents export: no entrypoint")
    assert not path.with_suffix(".py").exists()


def test_nbconvert_entry_point(tmp_path):
    source = ROOT / "tests" / "export" / "notebooks" / "greeter.ipynb"
    done = subprocess.run(
        [BIN / "jupyter", "nbconvert", "--to", "nbagents", source, "--output-dir", tmp_path, "--output", "agent"],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "agent.py").read_text() == export_notebook(source).source


def test_nbconvert_shows_the_export_error(tmp_path):
    path = tmp_path / "two.ipynb"
    nbformat.write(notebook(IMPORTS, f"%%agent\n{AGENT}", f"%%agent\n{AGENT}"), path)
    done = subprocess.run([BIN / "jupyter", "nbconvert", "--to", "nbagents", path], capture_output=True, text=True)
    assert done.returncode != 0
    assert "two entrypoints" in done.stderr


def test_agent_serve_options_become_worker_options():
    exported = export_notebook_node(
        notebook("%load_ext nbagents", f"{IMPORTS}\n\n{AGENT}", "%agent serve --agent-name greeter --timeout 7",
                 "%agent serve stop"),
        name="test.ipynb",
    )
    assert exported.options["agent_name"] == "greeter"
    assert exported.options["shutdown_process_timeout"] == 7.0
    assert 'agent_name="greeter"' in exported.source


def test_agent_serve_of_an_undefined_entrypoint_is_refused():
    message = export_error("%load_ext nbagents", f"{IMPORTS}\n\n{AGENT}", "%agent serve --entrypoint greet")
    assert "%agent serve runs the entrypoint `greet`" in message and message.startswith("cell 4")
