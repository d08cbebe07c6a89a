"""The package layout keeps the pipeline's order: shared -> data -> labeling -> model -> evaluation -> serving
-> integrations (rewards for RL trainers, on top of the served model).

Imports are read from the source (ast), function-level ones included, so a lazy import that runs
against the order fails here as surely as a top-level one.
"""

import ast
import importlib

import pytest
import yaml

from prmflow.cli import STAGE_MODULES

from conftest import REPO

PACKAGE = REPO / "src" / "prmflow"
# Each module's rank; a module may import only modules of its own rank or below.
SHARED = {"prmflow.config", "prmflow.sections", "prmflow.sections_evaluation", "prmflow.param_rules", "prmflow.tracking", "prmflow.jsonl",
          "prmflow.devices"}
# Shared modules a stage's results do not rest on (params are DVC params, not code): left out of its deps.
# prmflow.devices is code that decides where and in what precision models run: a dep where it is imported.
NOT_CODE_DEPS = SHARED - {"prmflow.devices"}
ORDER = ("data", "labeling", "model", "evaluation", "serving", "integrations")


def module_name(path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, object]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path, known: set[str]) -> set[str]:
    """The prmflow modules `path` imports (`from prmflow.x import y` counts y when y is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("prmflow.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prmflow"):
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & known
            found |= submodules or {node.module}
    return found & known


def import_graph() -> dict[str, set[str]]:
    paths = modules()
    return {name: imported_modules(path, set(paths)) - {name} for name, path in paths.items()}


def rank(module: str) -> int:
    if module in SHARED:
        return 0
    part = module.split(".")[1] if "." in module else ""
    return ORDER.index(part) + 1 if part in ORDER else len(ORDER) + 1  # cli, the package facade: on top


def test_every_module_belongs_to_a_known_place():
    for name in modules():
        part = name.split(".")[1] if "." in name else ""
        assert name in SHARED | {"prmflow", "prmflow.cli"} or part in ORDER, f"{name}: not in a known subpackage"


def test_no_module_imports_one_to_its_right():
    wrong = [f"{module} imports {target}" for module, targets in import_graph().items() for target in targets
             if rank(target) > rank(module) and module != "prmflow"]  # the facade re-exports the public API
    assert not wrong, "imports against data -> labeling -> model -> evaluation -> serving -> integrations:\n" + "\n".join(wrong)


def test_nothing_imports_the_cli():
    importers = [module for module, targets in import_graph().items() if "prmflow.cli" in targets]
    assert not importers


def test_no_import_cycles():
    graph = {m: t - {"prmflow"} for m, t in import_graph().items() if m != "prmflow"}
    cycles = []
    for start in graph:  # depth-first search from each module back to itself
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            for target in graph[node]:
                if target == start:
                    cycles.append(" -> ".join(path + [start]))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, path + [target]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


def code_deps(stage_module: str) -> set[str]:
    """The source files a stage's behaviour rests on: its module and everything it imports, transitively,
    except the shared config, sections, param_rules, tracking and jsonl (params are DVC params, not code deps)."""
    graph, todo, closure = import_graph(), [stage_module], set()
    while todo:
        module = todo.pop()
        if module in closure or module in NOT_CODE_DEPS or module == "prmflow":
            continue
        closure.add(module)
        todo += graph[module]
    paths = modules()
    return {str(paths[m].relative_to(REPO)) for m in closure if not paths[m].name == "__init__.py"}


# Code a stage runs without importing it: the registered pyfunc is logged from this file.
EXTRA_CODE_DEPS = {"register": {"src/prmflow/serving/pyfunc_entry.py"}}


@pytest.mark.parametrize("stage", list(STAGE_MODULES))
def test_each_stage_depends_on_exactly_the_code_it_runs(stage):
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"]
    listed = {d for d in deps if d.startswith("src/")}
    expected = code_deps(STAGE_MODULES[stage]) | EXTRA_CODE_DEPS.get(stage, set())
    assert listed == expected, f"{stage}: missing {sorted(expected - listed)}, extra {sorted(listed - expected)}"


def test_modules_stay_small():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > 450}
    assert not long, f"modules over ~400 lines (split where a second job hides): {long}"


def test_public_api_is_importable_from_the_package():
    prmflow = importlib.import_module("prmflow")
    for name in prmflow.REWARD_API:
        assert callable(getattr(prmflow, name)), name
