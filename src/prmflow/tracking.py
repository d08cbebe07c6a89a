"""MLflow tracking: one run per stage, nested under the pipeline run when the flow sets one."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prmflow.config import BaseParams

# Set by flows/pipeline.py so that the stages of one flow run group under one parent run.
PARENT_RUN_ENV = "PRMFLOW_PARENT_RUN_ID"
# What a stage measures about the machine and the run itself (durations, speed, memory, run ids): logged to
# MLflow and printed, never written into a DVC-tracked report, which must come out the same on every
# machine that runs the same code, params and data (else `make run` on a fresh clone changes tracked files).
RUN_ONLY_KEYS = ("seconds", "tokens_per_second", "peak_memory_mb", "mlflow_run_id", "zero_shot_seconds")


def tracked_report(report: dict) -> dict:
    """`report` without its RUN_ONLY_KEYS: the part that belongs in a DVC-tracked (git-committed) report."""
    return {key: value for key, value in report.items() if key not in RUN_ONLY_KEYS}


def summary_line(prefix: str, values: dict) -> str:
    """`prefix: key value, key value, ...` of a stage's flat summary: what a stage prints, one readable line
    (numbers to 4 significant digits; nested dicts and lists are left to the report file)."""
    def shown(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    kept = [f"{key.replace('_', ' ')} {shown(value)}" for key, value in values.items()
            if not isinstance(value, (dict, list))]
    return f"{prefix}: {', '.join(kept)}"


def store_lock(tracking_uri: str, scope: str, timeout_s: float = 600.0):
    """A file lock (context manager) named `scope` for the MLflow store at `tracking_uri`: beside a SQLite
    database, so it serialises the processes of the machine that opens it; for another store (a tracking
    server) in the temp folder, so it serialises this machine's processes only. Raises filelock.Timeout."""
    from filelock import FileLock

    if tracking_uri.startswith("sqlite:///"):
        path = Path(f"{tracking_uri.removeprefix('sqlite:///')}.{scope}.lock")
    else:
        path = Path(tempfile.gettempdir()) / f"prmflow-{hashlib.md5(tracking_uri.encode()).hexdigest()}.{scope}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=timeout_s)


def configure(base: BaseParams) -> str:
    """Point MLflow at the project's store; create the experiment with an explicit artifact root.

    Under `store_lock`: the first process to open a new SQLite store creates its schema (MLflow's migrations),
    and two doing it at once crash ("duplicate column name"); the second waits and finds it made."""
    import mlflow

    if base.mlflow_tracking_uri.startswith("sqlite:///"):
        Path(base.mlflow_tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(base.mlflow_tracking_uri)
    with store_lock(base.mlflow_tracking_uri, "setup"):
        experiment = mlflow.get_experiment_by_name(base.mlflow_experiment)
        if experiment is None:
            artifacts = Path(base.mlflow_artifacts_dir).resolve()
            artifacts.mkdir(parents=True, exist_ok=True)
            experiment_id = mlflow.create_experiment(base.mlflow_experiment, artifact_location=artifacts.as_uri())
        else:
            experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


@contextlib.contextmanager
def stage_run(base: BaseParams, stage: str, params: object | None = None) -> Iterator[object]:
    """Start the MLflow run of one stage and log its params section, flattened."""
    import dataclasses

    import mlflow

    configure(base)
    parent = os.environ.get(PARENT_RUN_ENV) or None
    with mlflow.start_run(run_name=stage, parent_run_id=parent, tags={"prmflow.stage": stage}) as run:
        if params is not None:
            mlflow.log_params({f"{stage}.{k}": v for k, v in dataclasses.asdict(params).items()})
        yield run
