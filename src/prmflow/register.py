"""Stage `register`: log the PRM as an MLflow pyfunc (models-from-code) and register it.

    prmflow register          # reads params.yaml: base, register, evaluate

Registers a new version of `register.model_name` with the test metrics as tags, points the
alias `register.alias` at it, and writes `reports/registry.json`. Serve it with
`mlflow models serve -m models:/prm@champion --env-manager local`.
"""

from __future__ import annotations

import json
from pathlib import Path

from prmflow.config import Params

# Gives the served model a signature that declares `params`, so MLflow passes them to predict.
INPUT_EXAMPLE_ROWS = [{"problem": "Ava has 3 apples. She buys 2 more. How many apples does she have?",
                       "steps": ["Ava has 3 + 2 = <<3+2=5>>5 apples."]}]
INPUT_EXAMPLE_PARAMS = {"aggregation": "min"}


def requirements() -> list[str]:
    """What the served model needs, pinned to what trained it (MLflow's inference would load the model)."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in ("torch", "transformers", "mlflow", "pydantic")]


def main(params: Params) -> None:
    import mlflow
    from mlflow import MlflowClient

    import prmflow
    from prmflow.jsonl import write_json
    from prmflow.tracking import stage_run

    reports = Path(params.base.reports_dir)
    metrics = json.loads((reports / "metrics.json").read_text())
    name, alias = params.register.model_name, params.register.alias
    with stage_run(params.base, "register", params.register) as run:
        info = mlflow.pyfunc.log_model(
            name="prm",
            python_model=str(Path(prmflow.__file__).parent / "pyfunc_entry.py"),
            artifacts={"model_dir": str(Path(params.base.models_dir) / "prm")},
            model_config={"threshold": params.evaluate.threshold},
            input_example=(INPUT_EXAMPLE_ROWS, INPUT_EXAMPLE_PARAMS),
            pip_requirements=requirements(),
            registered_model_name=name,
        )
        version = str(info.registered_model_version)
        client = MlflowClient()
        client.set_registered_model_alias(name, alias, version)
        for key in ("step_auroc", "negative_f1", "first_error_f1", "best_of_n_prm_min"):
            if key in metrics:
                client.set_model_version_tag(name, version, f"metric.{key}", f"{metrics[key]:.4f}")
        record = {"model_name": name, "version": int(version), "alias": alias, "model_uri": f"models:/{name}@{alias}",
                  "run_id": run.info.run_id, "source": info.model_uri}
        write_json(reports / "registry.json", record)
        print(f"register: {name} version {version} -> @{alias}")
