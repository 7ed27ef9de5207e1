"""What the notebooks' Colab set-up cell would make pip change in a Colab runtime: pip's own resolver, run with
``--dry-run`` against an environment that holds Colab's packages at Colab's versions.

    python results/colab_install/resolve_on_colab.py REPO OUT

REPO: a checkout of this repository (its pyproject.toml, constraints.txt and livestock/colab.py are what is
measured). OUT: a folder for ``result.json``. No network: pip reads the package index configured
on this machine.

Colab cannot be reached from here, so its environment is stood in for: a fresh virtual environment whose
site-packages holds, for every line of ``colab_gpu_pip_freeze.txt`` (Colab's GPU runtime as published in
github.com/googlecolab/backend-info, file pip-freeze.gpu.txt at commit 03a89033), a ``.dist-info`` folder with the
name and version only. pip's resolver keeps an installed distribution that satisfies every requirement and
constraint and replaces it otherwise, which is the decision measured here; the stand-ins declare no dependencies
of their own, and the interpreter is the one this script runs under (a Python 3.12 stands in for Colab's).
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FREEZE = HERE / "colab_gpu_pip_freeze.txt"
# Packages a Colab notebook's kernel runs on: replacing one under a live kernel breaks it or needs a restart.
KERNEL_STACK = ("ipykernel", "ipython", "jupyter-client", "jupyter-core", "tornado", "pyzmq", "traitlets", "numpy")


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def colab_versions() -> dict[str, str]:
    """Colab's distributions, normalised name -> version (the ``@ URL`` lines carry no version: left out)."""
    versions = {}
    for line in FREEZE.read_text(encoding="utf-8").splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            versions[normalised(name)] = version.strip()
    return versions


def stand_in_environment(folder: Path, versions: dict[str, str]) -> Path:
    """A virtual environment (no pip) whose site-packages lists ``versions`` as installed; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    for name, version in versions.items():
        info = Path(purelib) / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "INSTALLER").write_text("pip\n")
        (info / "RECORD").write_text("")
    return python


def setup_cell_constraints(repo: Path, installed: set[str]) -> str:
    """The constraints the repository's set-up cell hands to pip, from its own ``livestock/colab.py``."""
    spec = importlib.util.spec_from_file_location("colab_under_test", repo / "livestock" / "colab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    accepts_installed = "installed" in inspect.signature(module.colab_constraints).parameters
    args = (installed,) if accepts_installed else ()
    return module.colab_constraints(repo / "constraints.txt", *args)


def main(repo: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    versions = colab_versions()
    with tempfile.TemporaryDirectory(prefix="colab-standin-") as tmp:
        python = stand_in_environment(Path(tmp) / "env", versions)
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text(setup_cell_constraints(repo, set(versions)), encoding="utf-8")
        report = Path(tmp) / "pip_report.json"  # over 1 MB: only what it says is kept
        command = [sys.executable, "-m", "pip", "--python", str(python), "install", "--dry-run", "--quiet",
                   "--report", str(report), "-e", str(repo), "-c", str(constraints)]
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"pip could not resolve the install:\n{run.stderr[-3000:]}")
        installs = {normalised(i["metadata"]["name"]): i["metadata"]["version"]
                    for i in json.loads(report.read_text())["install"]}
    installs.pop("livestock", None)
    replaced = {n: {"colab": versions[n], "after": v} for n, v in sorted(installs.items()) if n in versions}
    added = {n: v for n, v in sorted(installs.items()) if n not in versions}
    result = {
        "repo_commit": subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                                      capture_output=True, text=True).stdout.strip(),
        "date": time.strftime("%Y-%m-%d"), "python": sysconfig.get_python_version(),
        "pip": subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True,
                              text=True).stdout.split()[1],
        "colab_packages": len(versions),
        "replaced": replaced, "kernel_stack_replaced": sorted(set(replaced) & set(KERNEL_STACK)),
        "added": added,
    }
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    changes = ", ".join(f"{n} {r['colab']} -> {r['after']}" for n, r in replaced.items())
    print(f"{result['repo_commit']}: {len(replaced)} of Colab's packages replaced ({changes}); {len(added)} added; "
          f"the kernel's own: {result['kernel_stack_replaced'] or 'none'}")
    return result


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]))
