"""``jupyter nbconvert --to nbagents``: the exporter as an nbconvert plugin (registered in pyproject.toml
under ``nbconvert.exporters``), also offered by JupyterLab's "Save and Export Notebook As" menu."""

from __future__ import annotations

from typing import Any

from nbconvert.exporters import Exporter

from nbagents.export import export_notebook_node


class NbagentsExporter(Exporter):
    """Turn a notebook into a livekit-agents worker script."""

    export_from_notebook = "LiveKit Agents worker (nbagents)"
    output_mimetype = "text/x-python"

    def _file_extension_default(self) -> str:
        return ".py"

    def from_notebook_node(self, nb: Any, resources: dict | None = None, **kw: Any) -> tuple[str, dict]:
        nb_copy, resources = super().from_notebook_node(nb, resources, **kw)
        name = resources.get("metadata", {}).get("name") or "notebook"
        script = export_notebook_node(nb_copy, name=f"{name}.ipynb")
        resources["output_extension"] = ".py"
        return script.source, resources
