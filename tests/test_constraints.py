"""Reproducible installs: constraints.txt pins an exact version of every requirement, each within the range the
requirement files and pyproject.toml allow, and the environment the tests run in is that environment."""
from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def _requirements(path: Path) -> list[Requirement]:
    lines = [ln.split("#", 1)[0].strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    return [Requirement(ln) for ln in lines if ln and not ln.startswith("-")]


def _pins() -> dict[str, str]:
    pins = {}
    for req in _requirements(REPO / "constraints.txt"):
        (spec,) = req.specifier  # exactly one exact pin per line
        assert spec.operator == "==", f"constraints.txt: {req} is not an exact pin"
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_every_requirement_is_pinned_within_its_range():
    pins = _pins()
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    # extras that `make` installs (the dashboard is for a watching machine, installed there by hand)
    declared += [Requirement(r) for extra in ("export", "test") for r in project["optional-dependencies"][extra]]
    declared += _requirements(REPO / "requirements.txt") + _requirements(REPO / "requirements-test.txt")
    problems = []
    for req in declared:
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req.name}: not pinned")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req.name}: pinned {pins[name]}, outside {req.specifier}")
    assert not problems, problems


def test_the_tests_run_in_the_pinned_environment():
    """What `make` installed is what constraints.txt says (a stale venv would test other versions)."""
    pins = _pins()
    differ = {}
    for name in ("torch", "numpy", "yolov5", "ultralytics", "optuna", "onnxruntime", "opencv-python", "pandas"):
        installed = metadata.version(name)
        if installed != pins[canonicalize_name(name)]:
            differ[name] = (installed, pins[canonicalize_name(name)])
    assert not differ, f"installed vs constraints.txt: {differ}"


def test_every_pin_installs_on_the_oldest_python_the_project_allows():
    """pyproject's requires-python may not promise a Python on which `make` cannot install constraints.txt.

    Checked for a current patch release of the oldest minor version allowed (a pin may need 3.11.5, not 3.11.0).
    """
    from packaging.specifiers import SpecifierSet

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    allowed = SpecifierSet(project["requires-python"])
    oldest = next(f"3.{minor}.99" for minor in range(8, 20) if f"3.{minor}.99" in allowed)
    refuse = {}
    for name in _pins():
        try:
            needs = metadata.metadata(name).get("Requires-Python")
        except metadata.PackageNotFoundError:  # a pin of another platform's environment marker
            continue
        if needs and oldest not in SpecifierSet(needs):
            refuse[name] = needs
    assert not refuse, f"pinned versions that do not install on Python {oldest[:-3]}: {refuse}"
