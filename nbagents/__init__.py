"""nbagents: build, run and inspect LiveKit voice agents from Jupyter notebooks."""

__version__ = "0.1.0"
