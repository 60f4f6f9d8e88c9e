"""The dependency rules of DESIGN.md, read from the code: arrows point one way, clients -> stream -> model.

Every import counts, wherever it is written (module top, inside a function, under TYPE_CHECKING) and
`importlib.import_module("samstream...")` with a literal name too: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVE = "samstream.clients.cli.serve"


def package_dirs() -> dict[str, Path]:
    """pyproject's package-dir mapping: import name -> folder (e.g. samstream.model -> model/)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {name: ROOT / folder for name, folder in config["tool"]["setuptools"]["package-dir"].items()}


def module_files() -> dict[str, Path]:
    """Every project module by import name. A folder mapped to its own name (clients/cli/root -> samstream)
    is left out of its parent's walk."""
    dirs = package_dirs()
    mapped = set(dirs.values())
    modules = {}
    for package, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder)
            nested = [parent for parent in path.parents if parent in mapped and parent.is_relative_to(folder)]
            if nested != [folder] or "__pycache__" in relative.parts:
                continue
            parts = [*package.split("."), *relative.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules (or packages) `name` imports, by import name."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, one level up per extra dot
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets.add(module)
            targets.update(f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in known)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
            targets.add(node.args[0].value)
    return {target for target in targets if target == "samstream" or target.startswith("samstream.")}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def back_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Every import that breaks a rule, as 'importer -> imported (rule)'."""
    rules = [  # (importers, what they must not import, why)
        ("samstream.model", "samstream.stream", "a separator knows no transport"),
        ("samstream.model", "samstream.clients", "a separator knows no transport"),
        ("samstream.stream", "samstream.clients", "the engine and its servers sit below what users run"),
    ]
    found = []
    for importer, targets in sorted(graph.items()):
        for target in sorted(targets):
            for low, high, why in rules:
                if under(importer, low) and under(target, high):
                    found.append(f"{importer} -> {target} ({why})")
            # The Python clients talk to a server over the wire; only the command line (which runs the server) sees it.
            if (under(importer, "samstream.clients") and not under(importer, "samstream.clients.cli")
                    and under(target, "samstream.stream.server")):
                found.append(f"{importer} -> {target} (a client uses the protocol, not the server's internals)")
    return found


def reachable(graph: dict[str, set[str]], start: list[str]) -> set[str]:
    """Modules imported, directly or not, from `start` (importing a.b.c also runs a and a.b)."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(graph.get(module, ()))
    return seen


def serving_path(graph: dict[str, set[str]]) -> set[str]:
    """The engine, its servers and the serve command, with everything they import."""
    return reachable(graph, [SERVE, *(name for name in graph if under(name, "samstream.stream"))])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between modules (a package's __init__ importing its own modules is not one)."""
    found, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if target not in graph or under(module, target) or under(target, module):
                continue
            if state.get(target) == "open":
                found.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    return found


# ------------------------------------------------------------------------------------------- the rules


def test_the_walk_sees_every_floor():
    graph = import_graph()
    for module in ("samstream", "samstream.model.anchors", "samstream.model.training.train", "samstream.stream.media",
                   "samstream.stream.server.app", "samstream.clients.webrtc_client", "samstream.clients.cli", SERVE):
        assert module in graph, module
    assert "samstream.stream.media" in graph["samstream.clients.webrtc_client"]
    assert "samstream.stream.server.app" in graph[SERVE]


def test_arrows_point_down():
    assert back_arrows(import_graph()) == []


def test_serving_path_imports_no_training_code():
    graph = import_graph()
    path = serving_path(graph)
    assert SERVE in path and "samstream.stream.server.ws" in path and "samstream.model.registry" in path
    assert sorted(module for module in path if under(module, "samstream.model.training")) == []


def test_no_import_cycles_in_engine_and_clients():
    graph = import_graph()
    assert [cycle for cycle in cycles(graph) if not all(under(m, "samstream.model") for m in cycle)] == []


def test_samstream_serve_command_line_loads_no_training_module():
    """The dispatcher imports only the command it runs: `samstream serve` never loads model/training."""
    code = ("import sys; from samstream.clients.cli import build_parser; "
            "args = build_parser(['serve', '--port', '0']).parse_args(['serve', '--port', '0']); "
            "print(args.command, sorted(m for m in sys.modules if m.startswith('samstream.model.training')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["serve", "[]"], done.stdout + done.stderr


# --------------------------------------------------------------------------- the checks catch what they must


def test_a_back_arrow_is_caught():
    graph = import_graph()
    graph["samstream.stream.session"] = graph["samstream.stream.session"] | {"samstream.clients.ws_client"}
    graph["samstream.model.anchors"] = graph["samstream.model.anchors"] | {"samstream.stream.processor"}
    graph["samstream.clients.webrtc_client"] = graph["samstream.clients.webrtc_client"] | {"samstream.stream.server.webrtc"}
    assert back_arrows(graph) == [
        "samstream.clients.webrtc_client -> samstream.stream.server.webrtc (a client uses the protocol, not the "
        "server's internals)",
        "samstream.model.anchors -> samstream.stream.processor (a separator knows no transport)",
        "samstream.stream.session -> samstream.clients.ws_client (the engine and its servers sit below what users run)",
    ]


def test_training_on_the_serving_path_is_caught():
    graph = import_graph()
    graph["samstream.model.embedded"] = graph["samstream.model.embedded"] | {"samstream.model.training.train"}
    assert "samstream.model.training.train" in serving_path(graph)


def test_a_cycle_is_caught():
    graph = import_graph()
    graph["samstream.stream.server.ws"] = graph["samstream.stream.server.ws"] | {"samstream.stream.server.app"}
    # The walk may enter the cycle at either module: compare the cycles' module sets.
    assert {"samstream.stream.server.app", "samstream.stream.server.ws"} in [set(cycle) for cycle in cycles(graph)]
