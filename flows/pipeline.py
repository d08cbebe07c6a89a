"""The Prefect flow: one task per dvc.yaml stage, each run through DVC so unchanged stages are skipped.

    python flows/pipeline.py                  # temporary local Prefect server, one run
    python flows/pipeline.py --project-dir /path/to/project --push
    PREFECT_API_URL=http://127.0.0.1:4200/api python flows/pipeline.py
    python flows/schedule.py                  # the nightly retraining deployment (flow.serve)

DVC stays the only DAG: stage names are read from dvc.yaml, in order, and each task runs
`dvc repro --single-item STAGE`, so a rerun after a failure resumes where it stopped. Prefect
adds retries with exponential backoff (labeling can fail against a remote policy server), an
early, successful end when a retraining run finds no new problems (`dvc status ingest`), a
summary artifact, grouping of the stages' MLflow runs under one parent run, and an optional
`dvc push` of the results. Flow parameters are orchestration knobs only; hyperparameters
live in params.yaml.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed
from prefect.tasks import exponential_backoff

# Stages that talk to something that can fail transiently get retries.
RETRIES = {"label": 3}
RETRY_JITTER_FACTOR = 0.2
OUTPUT_TAIL_CHARS = 4000
ARTIFACT_KEY = "prm-pipeline-summary"


def stage_names(project_dir: str | Path = ".") -> list[str]:
    """Stage names in dvc.yaml order: the one DAG."""
    return list(yaml.safe_load(Path(project_dir, "dvc.yaml").read_text())["stages"])


class StageFailed(RuntimeError):
    pass


def tool_env(parent_run_id: str | None = None) -> dict[str, str]:
    """The environment of `dvc` and of the stages' `prmflow` commands.

    The interpreter's bin directory goes first on PATH: a stage `cmd` runs whatever `prmflow`
    is first there, and a worker or `flow.serve` process is not always started from an
    activated venv.
    """
    from prmflow.tracking import PARENT_RUN_ENV

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if parent_run_id:
        env[PARENT_RUN_ENV] = parent_run_id
    return env


def run_dvc(args: list[str], project_dir: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=project_dir, env=env, capture_output=True, text=True)


def failure_message(stage: str, proc: subprocess.CompletedProcess) -> str:
    """The stage's own message first (`prmflow STAGE: ...` on stderr), then the tail of the output."""
    own = f"prmflow {stage}:"
    lines = proc.stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(own)), None)
    if start is not None:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("ERROR:")), len(lines))
        headline = "\n".join(lines[start:end]).removeprefix(own).strip()
    else:  # a crash rather than a reported failure: DVC's last error line says which command died
        headline = next((line for line in reversed(lines) if line.startswith("ERROR:")), "no error message")
    tail = (proc.stdout + proc.stderr)[-OUTPUT_TAIL_CHARS:]
    return f"stage {stage} failed (exit {stage_exit_code(proc)}): {headline}\n--- output tail ---\n{tail}"


def stage_exit_code(proc: subprocess.CompletedProcess) -> int:
    """The stage command's own exit status, which DVC reports as `..., exited with N`; DVC's (255) otherwise."""
    found = re.search(r"exited with (-?\d+)", proc.stderr)
    return int(found.group(1)) if found else proc.returncode


@task(task_run_name="{stage}", cache_policy=NO_CACHE)
def run_stage(stage: str, project_dir: str, parent_run_id: str | None) -> str:
    """`dvc repro --single-item STAGE`; returns "ran" or "skipped" (DVC found it up to date)."""
    logger = get_run_logger()
    proc = run_dvc(["repro", "--single-item", stage], project_dir, tool_env(parent_run_id))
    if proc.returncode != 0:
        raise StageFailed(failure_message(stage, proc))
    status = "ran" if "Running stage" in proc.stdout else "skipped"
    logger.info("stage %s %s\n%s", stage, status, (proc.stdout + proc.stderr)[-OUTPUT_TAIL_CHARS:])
    return status


def stage_task(stage: str, retry_backoff_seconds: float):
    """The task for one stage, with exponential backoff (b, 2b, 4b, ...) where retries are allowed."""
    retries = RETRIES.get(stage, 0)
    return run_stage.with_options(
        retries=retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=retry_backoff_seconds)(retries) if retries else 0,
        retry_jitter_factor=RETRY_JITTER_FACTOR if retries else None,
    )


@task(cache_policy=NO_CACHE)
def new_problem_changes(project_dir: str) -> dict:
    """What DVC reports changed in the ingest stage (`dvc status ingest`): its params, its
    source files and its input data (`data/incoming/` where declared). Empty: nothing new."""
    proc = run_dvc(["status", "--json", "ingest"], project_dir, tool_env())
    if proc.returncode != 0:
        raise StageFailed(f"dvc status ingest failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout or "{}")


@task(cache_policy=NO_CACHE)
def push_outputs(project_dir: str, remote: str | None) -> str:
    """`dvc push` of every stage output to the DVC remote (the project's default one unless named)."""
    proc = run_dvc(["push", *(["--remote", remote] if remote else [])], project_dir, tool_env())
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise StageFailed(f"dvc push failed (exit {proc.returncode}): {output[-OUTPUT_TAIL_CHARS:]}")
    get_run_logger().info("dvc push: %s", output)
    return output


def mlflow_run_reference(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"[{run_id}]({tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id})"
    return (f"`{run_id}` in `{tracking_uri}` (`mlflow ui --backend-store-uri {tracking_uri}`, then "
            f"`/#/experiments/{experiment_id}/runs/{run_id}`)")


def registry_decision(registry: dict) -> str:
    """One line from reports/registry.json: which version, and whether it became the served alias."""
    name, version = registry.get("model_name"), registry.get("version")
    if registry.get("registered") is False:  # the latest version already held these inputs
        return f"Registered nothing: {registry.get('reason', '').removeprefix('nothing registered: ')}."
    if "promoted" not in registry:
        return f"Registered `{name}` version {version} as `@{registry.get('alias')}`."
    verdict = (f"promoted to `@{registry.get('alias')}`" if registry["promoted"]
               else f"kept as `@{registry.get('challenger_alias')}`; `@{registry.get('alias')}` stayed "
                    f"version {registry.get('gate', {}).get('champion_version')}")
    reason = f" ({registry['reason']})" if registry.get("reason") else ""
    return f"Registered `{name}` version {version}: {verdict}{reason}."


def registry_now(project_dir: Path) -> str:
    """What the registry holds now, read from it (not from a report a later promote or rollback may have
    outdated): the champion, its history and the last move, and the challenger."""
    from mlflow import MlflowClient

    from prmflow.config import load_params
    from prmflow.serving.registry import registry_state

    register = load_params(project_dir / "params.yaml").register
    client = MlflowClient()
    if client.search_registered_models(f"name = '{register.model_name}'") == []:
        return f"No model `{register.model_name}` is registered."
    state = registry_state(client, register.model_name, register.alias, register.challenger_alias)
    moved = state["champion_set"]
    warnings = ([f" Unfinished alias moves (the next `prmflow registry` completes them): {state['unfinished_moves']}."]
                if state["unfinished_moves"] else [])
    warnings += [f" Orphan versions (registered, never gated): {state['orphan_versions']}."] \
        if state["orphan_versions"] else []
    return (f"Now `{register.model_name}@{register.alias}` is version {state['champion_version']} (set by "
            f"{moved.get('set_by')} at {moved.get('set_at')}: {moved.get('reason')}; history "
            f"{state['champion_history']}); `@{register.challenger_alias}` is version "
            f"{state['challenger_version']}." + "".join(warnings))


def summary_markdown(project_dir: Path, statuses: dict[str, str], mlflow_run: str | None, pushed: str | None) -> str:
    """The run's summary artifact: stages, metrics, the registry as it is now (and this run's register decision
    when the stage ran), the MLflow parent run (None: nothing ran, so none was made)."""
    from prmflow.param_rules import HEADLINE_METRICS

    reports = project_dir / "reports"
    lines = ["# prm-pipeline run", "", "| stage | status |", "|---|---|"]
    lines += [f"| {stage} | {status} |" for stage, status in statuses.items()]
    if (reports / "metrics.json").exists():
        metrics = json.loads((reports / "metrics.json").read_text())
        lines += ["", "## Headline metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {metrics[key]:.4f} |" for key in HEADLINE_METRICS if key in metrics]
    lines += ["", "## Registry", ""]
    if statuses.get("register") == "ran" and (reports / "registry.json").exists():
        lines += [registry_decision(json.loads((reports / "registry.json").read_text())), ""]
    lines += [registry_now(project_dir)]
    lines += ["", "## MLflow", "", f"Pipeline run {mlflow_run}; each stage's run is nested under it." if mlflow_run
              else "Every stage was up to date: no MLflow run was made."]
    if pushed is not None:
        lines += ["", "## DVC remote", "", f"`dvc push`: {pushed.splitlines()[-1] if pushed else 'done'}"]
    return "\n".join(lines)


@task(cache_policy=NO_CACHE)
def pipeline_up_to_date(project_dir: str) -> bool:
    """Whether `dvc status` finds every stage up to date, so the run would only skip (and needs no MLflow run)."""
    proc = run_dvc(["status", "--json"], project_dir, tool_env())
    if proc.returncode != 0:
        raise StageFailed(f"dvc status failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return not json.loads(proc.stdout or "{}")


@flow(name="prm-pipeline")
def pipeline(project_dir: str = ".", only_if_new_problems: bool = False, push: bool = False,
             remote: str | None = None, retry_backoff_seconds: float = 10.0):
    """Run every dvc.yaml stage in order.

    only_if_new_problems: end early, successfully, when `dvc status ingest` reports nothing
        new (what the scheduled retraining deployment sets).
    push: `dvc push` the outputs at the end, to `remote` or the project's default DVC remote.
    retry_backoff_seconds: first retry delay of a stage with retries; doubles each retry.
    """
    import mlflow

    from prmflow.config import load_params
    from prmflow.tracking import configure

    logger = get_run_logger()
    root = Path(project_dir).resolve()
    if only_if_new_problems:
        changes = new_problem_changes(str(root))
        if not changes:
            message = f"No new problems: `dvc status ingest` reports the ingest inputs unchanged in {root}; " \
                      "nothing to retrain."
            logger.info(message)
            create_markdown_artifact(f"# prm-pipeline: nothing new\n\n{message}", key=ARTIFACT_KEY)
            return Completed(message=message)
        logger.info("new problems, retraining: %s", json.dumps(changes))

    cwd = os.getcwd()
    os.chdir(root)  # params paths (sqlite, artifacts) are relative to the project
    try:
        base = load_params(root / "params.yaml").base
        experiment_id = configure(base)

        def run_stages(parent_run_id: str | None) -> dict[str, str]:
            return {stage: stage_task(stage, retry_backoff_seconds)(stage, str(root), parent_run_id)
                    for stage in stage_names(root)}

        if pipeline_up_to_date(str(root)):  # every stage skips: no empty parent run in MLflow
            statuses, run_reference = run_stages(None), None
        else:
            with mlflow.start_run(run_name="pipeline", tags={"prmflow.stage": "pipeline"}) as parent:
                statuses = run_stages(parent.info.run_id)
            run_reference = mlflow_run_reference(mlflow.get_tracking_uri(), experiment_id, parent.info.run_id)
        pushed = push_outputs(str(root), remote) if push else None
        create_markdown_artifact(summary_markdown(root, statuses, run_reference, pushed), key=ARTIFACT_KEY)
        return statuses
    finally:
        os.chdir(cwd)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Run the prm-pipeline flow once.")
    parser.add_argument("--project-dir", default=str(Path(__file__).resolve().parent.parent),
                        help="project root holding dvc.yaml and params.yaml (default: this repository)")
    parser.add_argument("--only-if-new-problems", action="store_true",
                        help="end early, successfully, when `dvc status ingest` reports nothing new")
    parser.add_argument("--push", action="store_true", help="`dvc push` the outputs at the end")
    parser.add_argument("--remote", default=None, help="DVC remote for --push (default: the project's default)")
    args = parser.parse_args()
    try:
        pipeline(project_dir=args.project_dir, only_if_new_problems=args.only_if_new_problems, push=args.push,
                 remote=args.remote)
    except StageFailed as err:  # Prefect has logged it with its traceback; the command ends with one line
        sys.exit(f"prm-pipeline: {str(err).splitlines()[0]}")
