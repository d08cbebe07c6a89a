"""The package's own import graph, read from the source with ast (function-level imports included): what a
module's behaviour rests on, for the label stage's resume key (labeling/label.py) and dvc.yaml's code deps
(scripts/dvc_deps.py).

    code_closure("prmflow.labeling.label")   # -> {"labeling/label.py", "data/answers.py", "devices.py", ...}

The shared config, sections, param_rules, tracking, jsonl and this module are left out of a closure (params
are DVC params, not code); prmflow.devices stays in where it is imported (it decides where and in what
precision models run).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SHARED = {"prmflow.config", "prmflow.sections", "prmflow.sections_evaluation", "prmflow.param_rules",
          "prmflow.tracking", "prmflow.jsonl", "prmflow.devices", "prmflow.codebase",
          "prmflow.http_retry"}
# Shared modules a stage's results do not rest on (params are DVC params, not code): left out of its deps.
NOT_CODE_DEPS = SHARED - {"prmflow.devices"}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Each module of the package by its dotted name -> its file."""
    return {module_name(path, package): path for path in sorted(package.rglob("*.py"))}


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The prmflow modules `path` imports (`from prmflow.x import y` counts y when y is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("prmflow.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prmflow"):
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & known
            found |= submodules or {node.module}
    return found & known


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Each prmflow module -> the prmflow modules it imports (itself left out)."""
    paths = modules(package)
    return {name: imported_modules(path, set(paths)) - {name} for name, path in paths.items()}


def code_closure(module: str, package: Path = PACKAGE) -> set[str]:
    """The source files (relative to the package folder) `module`'s behaviour rests on: it and its import
    closure, minus NOT_CODE_DEPS, the package facade and `__init__.py` files."""
    graph, todo, closure = import_graph(package), [module], set()
    while todo:
        name = todo.pop()
        if name in closure or name in NOT_CODE_DEPS or name == "prmflow":
            continue
        closure.add(name)
        todo += graph[name]
    paths = modules(package)
    return {paths[name].relative_to(package).as_posix() for name in closure if paths[name].name != "__init__.py"}
