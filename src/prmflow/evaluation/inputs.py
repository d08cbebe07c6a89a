"""What the evaluate stage reads besides the held-out rollouts: the `evaluate.external` files and the
registry's champion (the baseline it is compared with).
"""

from __future__ import annotations

import json
from pathlib import Path

from prmflow.config import EXTERNAL_FORMATS, Params


def external_records(path: Path, required: tuple[str, ...]) -> list[tuple[str, dict]]:
    """(where, record) of each record of a JSON-lines file, a JSON array (`.json`, as ProcessBench is published)
    or a parquet file (`.parquet`, as the hub serves it); `where` is `file:line` or `file[index]`."""
    from prmflow.jsonl import RecordError, read_jsonl

    suffix = path.suffix.lower()
    if suffix not in (".json", ".parquet"):
        return [(f"{path}:{n}", row) for n, row in enumerate(read_jsonl(path, required), start=1)]
    if suffix == ".parquet":
        import pyarrow.parquet

        records = pyarrow.parquet.read_table(path).to_pylist()
    else:
        try:
            records = json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RecordError(f"{path}: not a JSON array: {err}") from None
        if not isinstance(records, list):
            raise RecordError(f"{path}: expected a JSON array of records, got {type(records).__name__}")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise RecordError(f"{path}[{i}]: expected a JSON object, got {type(record).__name__}")
        missing = [field for field in required if field not in record]
        if missing:
            raise RecordError(f"{path}[{i}]: {missing[0]}: missing required field")
    return [(f"{path}[{i}]", record) for i, record in enumerate(records)]


def read_external(spec: dict) -> list[dict]:
    """An `evaluate.external` file (external_records; its first `problems` problems when the spec sets it); every
    bad record names the file, record and field."""
    from prmflow.jsonl import RecordError

    path = Path(spec["path"])
    if not path.is_file():
        raise FileNotFoundError(f"evaluate.external {spec['name']!r}: {path}: no such file")
    records = external_records(path, EXTERNAL_FORMATS[spec["format"]])
    for where, row in records:
        steps = row["steps"]
        if not (isinstance(steps, list) and steps and all(isinstance(s, str) and s.strip() for s in steps)):
            raise RecordError(f"{where}: steps: expected a non-empty list of non-empty strings")
        label = row.get("label")
        if spec["format"] == "processbench" and not (
                isinstance(label, int) and not isinstance(label, bool) and -1 <= label < len(steps)):
            raise RecordError(f"{where}: label: expected -1 or a step index below {len(steps)}, got {label!r}")
    rows = [row for _, row in records]
    if spec.get("problems"):  # the first n problems with every candidate of each: best-of-N groups stay whole
        kept = set(list(dict.fromkeys(problem_key(row) for row in rows))[: spec["problems"]])
        rows = [row for row in rows if problem_key(row) in kept]
    return rows


def problem_key(row: dict) -> str:
    """What groups an external file's candidates into problems: `problem_id`, else the problem text."""
    return str(row.get("problem_id", row["problem"]))


def load_champion(params: Params):
    """The registry's `<model_name>@<alias>` PRM (scoring.load.PRM), or None (with the reason) when there is none.

    Loaded through prmflow.load, which loads a registered model exactly as the server loads it, on the trained
    PRM's placement (model.device / model.dtype).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from prmflow.devices import Placement
    from prmflow.scoring.load import load

    name, alias = params.register.model_name, params.register.alias
    try:
        MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as err:
        return None, f"no {name}@{alias} in the registry ({err.error_code})"
    uri = f"models:/{name}@{alias}"
    return load(uri, placement=Placement.of(params.model)), uri
