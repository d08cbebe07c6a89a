"""The package layout keeps the pipeline's order: shared -> data -> scoring -> labeling -> training -> evaluation -> serving
-> integrations (rewards for RL trainers, on top of the served model).

Imports are read from the source (ast), function-level ones included, so a lazy import that runs
against the order fails here as surely as a top-level one.
"""

import ast
import importlib
import sys

import pytest

from prmflow.cli import STAGE_MODULES

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from dvc_deps import DVC_YAML, SHARED, differences, fixed_text, import_graph, modules  # noqa: E402 (not a package)

# Each module's rank (SHARED below all): a module may import only modules of its own rank or below.
ORDER = ("data", "scoring", "labeling", "training", "evaluation", "serving", "integrations")


def rank(module: str) -> int:
    if module in SHARED:
        return 0
    part = module.split(".")[1] if "." in module else ""
    return ORDER.index(part) + 1 if part in ORDER else len(ORDER) + 1  # cli, the package facade: on top


def test_every_module_belongs_to_a_known_place():
    for name in modules():
        part = name.split(".")[1] if "." in name else ""
        # prmflow.model: the deprecated names of the modules now in scoring/training/labeling (one release)
        assert name in SHARED | {"prmflow", "prmflow.cli", "prmflow.model"} or part in ORDER, \
            f"{name}: not in a known subpackage"


def test_no_module_imports_one_to_its_right():
    wrong = [f"{module} imports {target}" for module, targets in import_graph().items() for target in targets
             if rank(target) > rank(module) and module != "prmflow"]  # the facade re-exports the public API
    assert not wrong, "imports against data -> scoring -> labeling -> training -> evaluation -> serving -> integrations:\n" + "\n".join(wrong)


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


@pytest.mark.parametrize("stage", list(STAGE_MODULES))
def test_each_stage_depends_on_exactly_the_code_it_runs(stage):
    """dvc.yaml's src/ deps of each stage are its import closure (scripts/dvc_deps.py; `--fix` rewrites them)."""
    missing, extra = differences().get(stage, ([], []))
    assert not missing and not extra, f"{stage}: missing {missing}, extra {extra}; run python scripts/dvc_deps.py --fix"



def test_the_fix_mode_rewrites_only_the_src_deps():
    """`scripts/dvc_deps.py --fix` restores a stage's dropped and stray src/ deps and leaves every other line."""
    text = DVC_YAML.read_text()
    broken = text.replace("      - src/prmflow/scoring/tokenization.py\n", "", 1).replace(
        "      - src/prmflow/data/answers.py\n", "      - src/prmflow/data/answers.py\n      - src/prmflow/gone.py\n", 1)
    assert broken != text and fixed_text(broken) == text == fixed_text(text)

def test_modules_stay_small():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > 450}
    assert not long, f"modules over ~400 lines (split where a second job hides): {long}"


def test_public_api_is_importable_from_the_package():
    prmflow = importlib.import_module("prmflow")
    for name in prmflow.REWARD_API:
        assert callable(getattr(prmflow, name)), name


# Ways to a PRM besides the door (prmflow.load), by the name called, and the only places outside scoring/ that
# call one: each says why the door's PRM is not enough there.
AROUND_THE_DOOR = {"load_prm", "StepTagScorer", "TokenClassificationPRM", "MathShepherdPRM", "ChatPRM",
                   "ZeroShotVerifier", "ProcessRewardModel", "load_reward_model", "LocalPRM", "ServedPRM", "PooledPRM",
                   "load_scorer"}
THROUGH_THE_SIDE = {
    ("src/prmflow/serving/scorer.py", "LocalPRM"),  # the server's PRM: the door's format scorer in its scoring loop
    ("src/prmflow/integrations/client.py", "ServedPRM"),  # the reward client's requests raise its RewardError
    ("src/prmflow/cli.py", "load_scorer"),  # `prmflow score`: the server's request rules over the door's PRM
}


def test_src_and_bench_reach_a_prm_only_through_the_door():
    scoring = REPO / "src" / "prmflow" / "scoring"
    files = [p for p in (REPO / "src").rglob("*.py") if scoring not in p.parents] + sorted((REPO / "bench").glob("*.py"))
    called = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                if name in AROUND_THE_DOOR:
                    called.add((path.relative_to(REPO).as_posix(), name))
    assert called - THROUGH_THE_SIDE == set(), "load these with prmflow.load (its `.scorer` for a format's kernel)"
    assert THROUGH_THE_SIDE - called == set(), "no longer called there: take it off THROUGH_THE_SIDE"
