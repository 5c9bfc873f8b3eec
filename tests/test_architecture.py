"""The shape of the code: one installed namespace, and layers whose imports only point down."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Source folder (or file) -> its layer; a module may import its own layer and those below.
LAYERS = {"semhash": 0, "index": 1, "pipelines": 2, "server": 3, "cli.py": 4}
PACKAGE_OF = {"semhash": "semhash", "index": "semhash.index", "pipelines": "semhash.pipelines",
              "server": "semhash.server", "cli.py": "semhash.cli"}


def _modules() -> dict[str, tuple[Path, int]]:
    """Every module of the package, by its installed dotted name: (file, layer)."""
    found = {"semhash.cli": (REPO / "cli.py", LAYERS["cli.py"])}
    for folder in ("semhash", "index", "pipelines", "server"):
        for path in sorted((REPO / folder).glob("*.py")):
            name = PACKAGE_OF[folder] if path.stem == "__init__" else f"{PACKAGE_OF[folder]}.{path.stem}"
            found[name] = (path, LAYERS[folder])
    return found


def _imports(path: Path, module: str) -> set[str]:
    """Dotted names a module imports, at the top or inside functions."""
    names = set()
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {other for other in _imports(path, name) if other in modules and other != name}
            for name, (path, _) in modules.items()}


def test_no_module_imports_a_layer_above_its_own():
    modules = _modules()
    upward = [f"{name} -> {other}" for name, targets in _graph().items() for other in targets
              if modules[other][1] > modules[name][1]]
    assert upward == []


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name, path):
        state[name] = 1
        for other in sorted(graph[name]):
            if state.get(other) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(other):] + [other]))
            if other not in state:
                visit(other, path + [other])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_nothing_imports_the_source_folders_by_their_bare_names():
    bare = [f"{path.relative_to(REPO)} imports {other}"
            for path in [*REPO.glob("*.py"), *REPO.glob("*/*.py")] if ".venv" not in path.parts
            for other in _imports(path, "x")
            if other.split(".")[0] in ("index", "pipelines", "server", "cli")]
    assert bare == []


def test_the_graph_sees_imports_inside_functions():
    graph = _graph()
    assert "semhash.pipelines.images" in graph["semhash.cli"]  # imported lazily by the commands
    assert "semhash.index.search" in graph["semhash.pipelines.images"]


def test_a_build_installs_only_the_semhash_namespace(tmp_path):
    """What `pip install .` copies into site-packages (setuptools' build_py step)."""
    out = tmp_path / "lib"
    run = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["semhash"]
    for part in ("cli.py", "index/search.py", "index/models.py", "pipelines/images.py", "vectorize.py",
                 "server/app.py", "server/static/index.html", "server/static/app.js"):
        assert (out / "semhash" / part).is_file(), part


def test_installed_names_resolve_and_generic_ones_do_not(tmp_path):
    code = ("import importlib.util as u, semhash.cli, semhash.index.search, semhash.pipelines.indexing, semhash.server.app\n"
            "print([u.find_spec(n) is None for n in ('index', 'pipelines', 'server', 'cli')])")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[True, True, True, True]"
