"""What the evaluate stage reads besides the held-out rollouts: the `evaluate.external` files and the
registry's champion (the baseline it is compared with).
"""

from __future__ import annotations

from pathlib import Path

from prmflow.config import EXTERNAL_FORMATS, Params


def read_external(spec: dict) -> list[dict]:
    """An `evaluate.external` file (its first `problems` problems when the spec sets it); every bad record names
    the file, line and field."""
    from prmflow.jsonl import RecordError, read_jsonl

    path = Path(spec["path"])
    if not path.is_file():
        raise FileNotFoundError(f"evaluate.external {spec['name']!r}: {path}: no such file")
    rows = read_jsonl(path, required=EXTERNAL_FORMATS[spec["format"]])
    for lineno, row in enumerate(rows, start=1):  # record number (blank lines are not counted)
        steps = row["steps"]
        if not (isinstance(steps, list) and steps and all(isinstance(s, str) and s.strip() for s in steps)):
            raise RecordError(f"{path}:{lineno}: steps: expected a non-empty list of non-empty strings")
        if spec["format"] == "processbench" and not (
                isinstance(row["label"], int) and -1 <= row["label"] < len(steps)):
            raise RecordError(f"{path}:{lineno}: label: expected -1 or a step index below {len(steps)}, "
                              f"got {row['label']!r}")
    if spec.get("problems"):  # the first n problems with every candidate of each: best-of-N groups stay whole
        kept = set(list(dict.fromkeys(problem_key(row) for row in rows))[: spec["problems"]])
        rows = [row for row in rows if problem_key(row) in kept]
    return rows


def problem_key(row: dict) -> str:
    """What groups an external file's candidates into problems: `problem_id`, else the problem text."""
    return str(row.get("problem_id", row["problem"]))


def load_champion(params: Params):
    """The registry's `<model_name>@<alias>` PRM, or None (with the reason) when there is none.

    Loaded through MLflow exactly as the server loads it; evaluation imports nothing from serving.
    """
    import mlflow.pyfunc
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name, alias = params.register.model_name, params.register.alias
    try:
        MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as err:
        return None, f"no {name}@{alias} in the registry ({err.error_code})"
    uri = f"models:/{name}@{alias}"
    placement = {"device": params.model.device, "dtype": params.model.dtype}  # as the trained PRM's
    return mlflow.pyfunc.load_model(uri, model_config=placement).unwrap_python_model().scorer.prm, uri
