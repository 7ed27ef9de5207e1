"""The package's layout rules, checked from the source (``ast``, nothing imported):

- only the YOLOv5 engine (``livestock/model/yolov5/``) imports ``yolov5``, at any depth;
- no module is over 700 lines;
- the ``livestock`` modules import each other without a cycle, function-level imports included.

``KNOWN_VIOLATIONS`` lists the breaches that exist today, so that the rules hold for everything else now. The list
can only shrink: a listed entry that is no longer a breach fails the test until it is removed from the list.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "livestock"
MAX_LINES = 700

KNOWN_VIOLATIONS: frozenset[str] = frozenset()


def _files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_names(path: Path) -> list[str]:
    """Every module name an import statement in ``path`` names, at any depth, relative imports made absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]  # `from pkg import submodule`
    return names


def _check(kind: str, found: set[str]) -> None:
    known = {v for v in KNOWN_VIOLATIONS if v.startswith(kind)}
    new, fixed = sorted(found - known), sorted(known - found)
    message = []
    if new:
        message.append("new layout violations:\n  " + "\n  ".join(new))
    if fixed:
        message.append("fixed, remove from KNOWN_VIOLATIONS:\n  " + "\n  ".join(fixed))
    assert not message, "\n".join(message)


@pytest.mark.parametrize("engine", ["yolov5", "ultralytics"])
def test_only_its_engine_package_imports_an_engine(engine):
    """Stages talk to the engine interface; only livestock/model/<engine>/ imports the engine's own package."""
    found = set()
    for path in _files():
        if path.parent == PACKAGE / "model" / engine:
            continue
        if any(name == engine or name.startswith(f"{engine}.") for name in _imported_names(path)):
            found.add(f"imports {engine}: {_relative(path)}")
    _check(f"imports {engine}", found)


def test_no_module_is_over_the_line_limit():
    found = set()
    for path in _files():
        if len(path.read_text(encoding="utf-8").splitlines()) > MAX_LINES:
            found.add(f"over {MAX_LINES} lines: {_relative(path)}")
    _check(f"over {MAX_LINES} lines", found)


def _import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in _files()}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imported_names(path) if m in modules and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def _one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A concrete import loop through ``component``, for the failure message."""
    inside = set(component)
    path, seen = [component[0]], {component[0]}
    while True:
        step = sorted(graph[path[-1]] & inside)
        back = [w for w in step if w in seen]
        if back:
            return path[path.index(back[0]):] + [back[0]]
        path.append(step[0])
        seen.add(step[0])


def test_imports_have_no_cycle():
    graph = _import_graph()
    components = _cycles(graph)
    found = {"import cycle: " + ", ".join(c) for c in components}
    try:
        _check("import cycle", found)
    except AssertionError as e:
        loops = "\n  ".join(" -> ".join(_one_cycle(graph, c)) for c in components)
        raise AssertionError(f"{e}\nloops:\n  {loops}") from None


@pytest.mark.parametrize("source, expected", [
    ("import yolov5.utils.general\n", {"yolov5.utils.general"}),
    ("def f():\n    from yolov5.export import run\n", {"yolov5.export", "yolov5.export.run"}),
    ("from . import onnx_file\n", {"livestock.model", "livestock.model.onnx_file"}),
    ("from ..records import CLASS_NAMES\n", {"livestock.records", "livestock.records.CLASS_NAMES"}),
])
def test_imports_are_found_at_any_depth(tmp_path, monkeypatch, source, expected):
    fake = tmp_path / "livestock" / "model" / "fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "livestock")
    assert set(_imported_names(fake)) == expected


def test_a_cycle_is_found_and_shown():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _one_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _public_functions(path: Path):
    """Module-level functions and public methods of public classes, with their owner's name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and not item.name.startswith("_"):
                    yield f"{node.name}.{item.name}", item


def _signature_problems(fn: ast.FunctionDef) -> list[str]:
    problems = []
    if not ast.get_docstring(fn):
        problems.append("no docstring")
    args = [a for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs if a.arg not in ("self", "cls")]
    args += [a for a in (fn.args.vararg, fn.args.kwarg) if a is not None]
    if any(a.annotation is None for a in args):
        problems.append("an argument without a type")
    if fn.returns is None:
        problems.append("no return type")
    return problems


def test_public_functions_have_a_typed_signature_and_a_docstring():
    found = set()
    for path in _files():
        for name, fn in _public_functions(path):
            for problem in _signature_problems(fn):
                found.add(f"signature: {_relative(path)} {name}: {problem}")
    _check("signature", found)


def test_readme_layout_names_every_module():
    """The README's layout section has a line for every module and sub-package of the package."""
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout"):]
    missing = []
    for path in _files():
        if path.name == "__init__.py":
            entry = f"{path.parent.name}/"  # a sub-package is named as a folder
            if path.parent == PACKAGE:
                continue
        else:
            entry = path.name
        if f" {entry} " not in layout.replace("\n", " \n "):
            missing.append(_relative(path))
    assert not missing, f"README layout section lacks: {missing}"
