"""The notebooks' set-up on Colab (livestock.colab): nothing anywhere else; on Colab one editable install of the clone,
with its pip constraints minus the packages Colab brings itself, and a clear error for a folder that is no clone."""
from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from livestock import colab

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(str(p.relative_to(REPO)) for p in REPO.glob("**/*.ipynb")
                   if not {".venv", "runs", ".ipynb_checkpoints"} & set(p.relative_to(REPO).parts))


@pytest.fixture
def pip_calls(monkeypatch) -> list[list[str]]:
    """subprocess.run replaced by a recorder: no pip runs in a test."""
    calls: list[list[str]] = []

    def fake_run(command, check=False, **kwargs):
        calls.append(list(command))
        constraints = command[command.index("-c") + 1] if "-c" in command else None
        if constraints:  # what pip would read, while the file still exists
            calls.append(Path(constraints).read_text().splitlines())
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(colab.subprocess, "run", fake_run)
    return calls


@pytest.fixture
def on_colab(monkeypatch) -> list[str]:
    """A fake ``google.colab`` (with ``drive.mount`` recording its mount points) in sys.modules."""
    mounts: list[str] = []
    google = types.ModuleType("google")
    module = types.ModuleType("google.colab")
    module.drive = types.SimpleNamespace(mount=mounts.append)
    google.colab = module
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", module)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return mounts


def _clone(tmp_path: Path, constraints: str | None = None) -> Path:
    root = tmp_path / "livestock"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'livestock'\n")
    if constraints is not None:
        (root / "constraints.txt").write_text(constraints)
    return root


def test_off_colab_it_does_nothing(tmp_path, pip_calls, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    path_before = list(sys.path)
    colab.setup_notebook(str(tmp_path / "not-a-clone"), mount_drive=True)
    assert pip_calls == [] and sys.path == path_before


def test_on_colab_it_installs_the_clone_and_puts_it_on_the_path(tmp_path, pip_calls, on_colab):
    root = _clone(tmp_path)
    colab.setup_notebook(str(root))
    assert pip_calls == [[sys.executable, "-m", "pip", "install", "-q", "-e", str(root)]]
    assert sys.path[0] == str(root)
    assert on_colab == []  # Drive only when asked


def test_on_colab_constraints_apply_only_to_what_colab_does_not_have(tmp_path, pip_calls, on_colab, monkeypatch):
    """A constraint on an installed package makes pip replace Colab's own (its kernel, numpy, its CUDA torch): the
    set-up pins only the packages it adds."""
    root = _clone(tmp_path, "numpy==1.26.4\ntorch==2.3.1\nTorchVision==0.18.1  # CUDA build on Colab\n"
                            "ipykernel==7.4.0\ntorchmetrics==1.4.0\nIterative_Stratification==0.1.9\nyolov5==7.0.14\n")
    installed = {"numpy", "Torch", "torchvision", "ipykernel", "iterative-stratification"}
    monkeypatch.setattr(colab, "installed_distributions", lambda: installed)
    colab.setup_notebook(str(root), mount_drive=True)
    command, constraints = pip_calls
    assert command[:7] == [sys.executable, "-m", "pip", "install", "-q", "-e", str(root)]
    assert command[7] == "-c" and not Path(command[8]).exists()  # a temporary file, removed after pip ran
    assert constraints == ["torchmetrics==1.4.0", "yolov5==7.0.14"]
    assert on_colab == ["/content/drive"]


def test_installed_distributions_are_this_environments_by_normalised_name():
    have = colab.installed_distributions()
    assert {"numpy", "torch", "pytest", "pytest-xdist", "iterative-stratification"} <= have
    assert "no-such-package" not in have and not any(n != n.lower() or "_" in n for n in have)


def test_on_colab_a_folder_that_is_no_clone_is_a_clear_error(tmp_path, pip_calls, on_colab):
    with pytest.raises(FileNotFoundError, match=r"is not a clone of this repository: run `!git clone"):
        colab.setup_notebook(str(tmp_path))
    assert pip_calls == []


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_notebook_sets_up_through_the_helper(notebook):
    nb = json.loads((REPO / notebook).read_text(encoding="utf-8"))
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    setup = code[1]
    assert "from livestock.colab import setup_notebook; setup_notebook(ROOT)" in setup
    assert len(setup.splitlines()) <= 7 and "MOUNT_DRIVE" in setup
    assert not any("subprocess" in c for c in code), "installing is the helper's job"
    assert "\nMOUNT_DRIVE = " in "\n" + code[0]
