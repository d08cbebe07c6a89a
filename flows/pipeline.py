"""The Prefect flow: one task per dvc.yaml stage, each run through DVC so unchanged stages are skipped.

    python flows/pipeline.py                  # temporary local Prefect server, one run
    python flows/pipeline.py --project-dir /path/to/project
    PREFECT_API_URL=http://127.0.0.1:4200/api python flows/pipeline.py

DVC stays the only DAG: stage names are read from dvc.yaml, in order. Prefect adds retries
(labeling can fail against a remote policy server), a summary artifact, and grouping of the
stages' MLflow runs under one parent run.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

# Stages that talk to something that can fail transiently get retries.
RETRIES = {"label": 2}
RETRY_DELAYS_SECONDS = [5, 30]
OUTPUT_TAIL_CHARS = 4000


def stage_names(project_dir: str | Path = ".") -> list[str]:
    """Stage names in dvc.yaml order: the one DAG."""
    return list(yaml.safe_load(Path(project_dir, "dvc.yaml").read_text())["stages"])


class StageFailed(RuntimeError):
    pass


@task(task_run_name="{stage}")
def run_stage(stage: str, project_dir: str, env: dict[str, str]) -> str:
    logger = get_run_logger()
    proc = subprocess.run(["dvc", "repro", "--single-item", stage], cwd=project_dir, env=env,
                          capture_output=True, text=True)
    output = (proc.stdout + proc.stderr)[-OUTPUT_TAIL_CHARS:]
    if proc.returncode != 0:
        raise StageFailed(f"stage {stage} failed (exit {proc.returncode}):\n{output}")
    logger.info("stage %s done\n%s", stage, output)
    return output


def summary_markdown(project_dir: Path) -> str:
    reports = project_dir / "reports"
    lines = ["# prm-pipeline run", ""]
    if (reports / "metrics.json").exists():
        metrics = json.loads((reports / "metrics.json").read_text())
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, (int, float))]
    if (reports / "registry.json").exists():
        registry = json.loads((reports / "registry.json").read_text())
        lines += ["", f"Registered `{registry['model_name']}` version {registry['version']} as `@{registry['alias']}`."]
    return "\n".join(lines)


@flow(name="prm-pipeline")
def pipeline(project_dir: str = ".") -> list[str]:
    import mlflow

    from prmflow.config import load_params
    from prmflow.tracking import PARENT_RUN_ENV, configure

    root = Path(project_dir).resolve()
    cwd = os.getcwd()
    os.chdir(root)  # params paths (sqlite, artifacts) are relative to the project
    try:
        configure(load_params(root / "params.yaml").base)
        with mlflow.start_run(run_name="pipeline", tags={"prmflow.stage": "pipeline"}) as parent:
            env = {**os.environ, PARENT_RUN_ENV: parent.info.run_id}
            stages = stage_names(root)
            for stage in stages:
                run_stage.with_options(retries=RETRIES.get(stage, 0), retry_delay_seconds=RETRY_DELAYS_SECONDS)(
                    stage, str(root), env)
        create_markdown_artifact(summary_markdown(root), key="prm-pipeline-summary")
        return stages
    finally:
        os.chdir(cwd)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Run the prm-pipeline flow once.")
    parser.add_argument("--project-dir", default=str(Path(__file__).resolve().parent.parent),
                        help="project root holding dvc.yaml and params.yaml (default: this repository)")
    pipeline(project_dir=parser.parse_args().project_dir)
