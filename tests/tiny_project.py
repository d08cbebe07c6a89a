"""A tiny prmflow project in a temporary folder, and how to run the real tools in it.

Every end-to-end test builds its project here, so they all run the repository's dvc.yaml and
code on the same small configuration, with the venv's tools first on PATH.
"""

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from conftest import BIN, REPO

TINY = {
    "ingest": {"num_train": 40, "num_test": 12},
    "label": {"trajectories_per_problem": 4, "completions_per_step": 4},
    "model": {"vocab_size": 320, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
    "train": {"epochs": 2.0, "batch_size": 8},
    "train_orm": {"epochs": 2.0},
}


def tool_env(project: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "PREFECT_HOME": str(project / ".prefect"), "MLFLOW_TRACKING_URI": "sqlite:///mlflow/mlflow.db",
            # a temporary Prefect server sets up a fresh database first: 20 s (the default) is not enough on
            # busy shared cores ("Timed out while attempting to connect to ephemeral Prefect API server")
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}


def run(cmd: list[str], project: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=project, env=tool_env(project), capture_output=True, text=True, timeout=timeout)


def make_project(root: Path, overrides: dict | None = None) -> Path:
    """Copy dvc.yaml and the sources (stage deps) into `root`, write a tiny params.yaml, git + dvc init."""
    shutil.copy(REPO / "dvc.yaml", root)
    shutil.copytree(REPO / "src" / "prmflow", root / "src" / "prmflow", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in (overrides or TINY).items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "data" / "incoming").mkdir(parents=True)  # the ingest stage's drop folder, a dvc.yaml dep
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        proc = run(cmd, root)
        assert proc.returncode == 0, proc.stderr
    return root


def run_flow(project: Path) -> subprocess.CompletedProcess:
    """`python flows/pipeline.py --project-dir PROJECT`: the flow on a temporary local Prefect server."""
    return run([str(BIN / "python"), str(REPO / "flows" / "pipeline.py"), "--project-dir", str(project)], project)
