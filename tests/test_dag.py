"""dvc.yaml is the one DAG: the flow, the CLI and the stage modules must agree with it."""

import importlib
import sys

import yaml

from prmflow.cli import STAGE_MODULES, STAGES

from conftest import REPO

sys.path.insert(0, str(REPO / "flows"))
from pipeline import stage_names  # noqa: E402


def test_flow_reads_the_stages_from_dvc_yaml_in_order():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert stage_names(REPO) == list(dvc["stages"]) == list(STAGES)


def test_every_stage_runs_its_console_script_and_its_deps_exist():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, stage in dvc["stages"].items():
        assert stage["cmd"] == f"prmflow {name}"
        assert callable(importlib.import_module(STAGE_MODULES[name]).main)
        for dep in stage["deps"]:
            if dep.startswith("src/"):
                assert (REPO / dep).exists(), f"{name}: dep {dep} does not exist"
        for param in stage.get("params", []):
            section, _, key = param.partition(".")
            assert section in params and (not key or key in params[section]), f"{name}: unknown param {param}"
