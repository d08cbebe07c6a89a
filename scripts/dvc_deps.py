"""Each dvc.yaml stage's `src/` deps, computed from the code: the stage module and every prmflow module it
imports, transitively (imports read from the source with ast, function-level ones included).

    python scripts/dvc_deps.py --check    # exit 1 and list each stage's missing and extra files
    python scripts/dvc_deps.py --fix      # rewrite the src/ lines of each stage's deps in dvc.yaml

The closure is prmflow.codebase's (the label stage's resume key is computed from the same one).
tests/test_layout.py checks the layering and the deps with the functions here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "src" / "prmflow"
DVC_YAML = REPO / "dvc.yaml"
# Code a stage runs without importing it: the registered pyfunc is logged from this file; the params check
# is the shared params code itself.
EXTRA_CODE_DEPS = {"register": {"src/prmflow/serving/pyfunc_entry.py"},
                   "check": {"src/prmflow/config.py", "src/prmflow/sections.py", "src/prmflow/sections_evaluation.py",
                             "src/prmflow/param_rules.py"}}

if str(PACKAGE.parent) not in sys.path:  # this checkout's prmflow, not an installed one
    sys.path.insert(0, str(PACKAGE.parent))
from prmflow.codebase import SHARED, code_closure, import_graph, modules  # noqa: E402, F401 (test_layout's too)


def code_deps(stage_module: str) -> set[str]:
    """The source files (repo-relative) a stage module's behaviour rests on (prmflow.codebase.code_closure)."""
    return {f"src/prmflow/{path}" for path in code_closure(stage_module, PACKAGE)}


def stage_modules() -> dict[str, str]:
    """Stage name -> its module (prmflow.cli.STAGE_MODULES, from this checkout's src/)."""
    from prmflow.cli import STAGE_MODULES

    return STAGE_MODULES


def expected_deps(stage: str) -> set[str]:
    return code_deps(stage_modules()[stage]) | EXTRA_CODE_DEPS.get(stage, set())


def listed_deps(stage: str, dvc_yaml: Path = DVC_YAML) -> set[str]:
    deps = yaml.safe_load(dvc_yaml.read_text())["stages"][stage]["deps"]
    return {d for d in deps if isinstance(d, str) and d.startswith("src/")}


def differences(dvc_yaml: Path = DVC_YAML) -> dict[str, tuple[list[str], list[str]]]:
    """stage -> (missing, extra) src/ deps, for the stages whose dvc.yaml deps differ from their code."""
    found = {}
    for stage in stage_modules():
        listed, expected = listed_deps(stage, dvc_yaml), expected_deps(stage)
        if listed != expected:
            found[stage] = (sorted(expected - listed), sorted(listed - expected))
    return found


def fixed_text(text: str) -> str:
    """dvc.yaml's text with each stage's `src/` deps lines replaced by the computed ones (sorted, in place of
    the first src/ line, or after the stage's other deps); every other line and comment is kept."""
    lines, out, stage, in_deps, indent, pending = text.splitlines(keepends=True), [], None, False, "", []

    def flush():
        nonlocal pending
        out.extend(f"{indent}- {dep}\n" for dep in pending)
        pending = []

    for line in lines:
        stripped, depth = line.split("#")[0].strip(), len(line) - len(line.lstrip())
        if depth == 2 and stripped.endswith(":"):
            flush()
            stage, in_deps = stripped[:-1], False
        elif stage in stage_modules() and depth == 4 and stripped.endswith(":"):
            flush()
            in_deps = stripped == "deps:"
            if in_deps:
                out.append(line)
                indent, pending = " " * 6, sorted(expected_deps(stage))
                continue
        if in_deps and stripped.startswith("- src/"):
            flush()
            continue
        out.append(line)
    flush()
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="list the stages whose src/ deps differ; exit 1 if any")
    mode.add_argument("--fix", action="store_true", help="rewrite the src/ deps in dvc.yaml")
    args = parser.parse_args(argv)
    if args.fix:
        text = DVC_YAML.read_text()
        fixed = fixed_text(text)
        if fixed != text:
            DVC_YAML.write_text(fixed)
            print(f"{DVC_YAML.name}: src/ deps rewritten")
        return 0
    wrong = differences()
    for stage, (missing, extra) in wrong.items():
        print(f"{stage}: missing {missing}, extra {extra}")
    if wrong:
        print("fix: python scripts/dvc_deps.py --fix", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
