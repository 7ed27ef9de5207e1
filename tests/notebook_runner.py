"""Run a repository notebook headless the way the main job does (``livestock.pipeline.run_notebook``)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from livestock.pipeline import run_notebook

REPO = Path(__file__).resolve().parents[1]


def execute_notebook(notebook: str, out: Path, parameters: dict, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Execute ``REPO / notebook`` into ``out`` with papermill ``parameters``; the executed notebook as JSON."""
    # the kernel is a child process: let it import the package from this checkout
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    out.parent.mkdir(parents=True, exist_ok=True)
    run_notebook(REPO / notebook, out, parameters, cwd=cwd)
    return json.loads(out.read_text())
