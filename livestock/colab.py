"""The set-up cell every notebook runs: on Google Colab, install this repository's package from the clone at
``ROOT``; anywhere else (a local Jupyter, papermill in the main job) do nothing, since the package is installed.

A notebook imports this module before the package is installed (its set-up cell puts ``ROOT`` on ``sys.path``
first), so it uses only the standard library; the package's ``__init__`` needs numpy, which Colab has.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from typing import Iterable

DRIVE_MOUNT = "/content/drive"
CONSTRAINTS_FILE = "constraints.txt"
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def on_colab() -> bool:
    """Whether this Python runs in a Google Colab kernel."""
    return "google.colab" in sys.modules


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503: Torch_Vision and torch-vision are one project


def installed_distributions() -> set[str]:
    """The names (normalised) of every distribution installed in this interpreter's environment."""
    from importlib import metadata

    return {_normalised(d.metadata["Name"]) for d in metadata.distributions() if d.metadata["Name"]}


def colab_constraints(constraints: str | os.PathLike, installed: Iterable[str]) -> str:
    """The lines of a pip constraints file for the packages not ``installed``: those come at the versions the test
    suite passed with, and what Colab ships stays as Colab ships it.

    A constraint on an installed package makes pip replace it whenever the versions differ, and Colab's own are
    what its notebooks run on: its kernel (ipykernel, IPython, jupyter_client, tornado, pyzmq), numpy (already
    loaded: importing this module runs the package's ``__init__``), pandas, its CUDA build of torch, and the
    packages built against them. Left unconstrained, pip keeps each one that meets
    the package's requirements. Measured with pip's resolver on Colab's published package list
    (``results/colab_install/``): 63 of Colab's packages replaced when only torch was left unconstrained, kernel
    and numpy included; now 1, huggingface-hub, which ``yolov5`` 7.0.14 itself requires below 0.25."""
    have = {_normalised(n) for n in installed}
    kept = []
    with open(constraints, encoding="utf-8") as f:
        for line in f:
            m = _REQUIREMENT_NAME.match(line)
            if m and not line.lstrip().startswith("-") and _normalised(m.group(1)) in have:
                continue
            kept.append(line)
    return "".join(kept)


def pip_install_command(root: str, constraints: str | None = None) -> list[str]:
    """``python -m pip install -q -e ROOT`` (with ``-c CONSTRAINTS`` when given), for the running interpreter."""
    command = [sys.executable, "-m", "pip", "install", "-q", "-e", root]
    if constraints:
        command += ["-c", constraints]
    return command


def setup_notebook(root: str, mount_drive: bool = False) -> None:
    """On Colab: mount Google Drive if asked, check ``root`` is a clone, ``pip install -e`` it, put it on
    ``sys.path``; elsewhere nothing."""
    if not on_colab():
        return
    if mount_drive:
        from google.colab import drive

        drive.mount(DRIVE_MOUNT)
    if not os.path.isfile(os.path.join(root, "pyproject.toml")):
        raise FileNotFoundError(f"ROOT={root!r} is not a clone of this repository: run `!git clone <its URL>` "
                                "(under /content/drive/MyDrive to keep the outputs) and set ROOT to that folder")
    constraints = os.path.join(root, CONSTRAINTS_FILE)
    if os.path.isfile(constraints):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="colab-constraints-", delete=False,
                                         encoding="utf-8") as f:
            f.write(colab_constraints(constraints, installed_distributions()))
        try:
            subprocess.run(pip_install_command(root, f.name), check=True)
        finally:
            os.unlink(f.name)
    else:
        subprocess.run(pip_install_command(root), check=True)
    if root not in sys.path:
        sys.path.insert(0, root)  # the editable install is seen by this kernel only after a restart
