"""Stage `validate`: Great Expectations suites over the labeled rollouts; failure stops the pipeline.

    prmflow validate          # reads params.yaml: base, validate

Two tables are checked: one row per solution (fields present, one label per step, labels
only `+`/`-`, values in [0, 1] and consistent with the labels, step counts in bounds, no
empty steps) and one row per step (text length, label balance). Writes
`reports/validation.json`; exits non-zero naming each failed expectation and example rows.
Great Expectations is imported here only: it takes seconds to import.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from prmflow.config import Params, ValidateParams

REQUIRED = ("id", "problem_id", "problem", "steps", "labels", "values", "answer", "predicted_answer", "correct",
            "first_error")
EXAMPLES = 5


class ValidationFailed(RuntimeError):
    pass


def solution_frame(rows: list[dict]) -> pd.DataFrame:
    """One row per solution; derived columns turn per-list rules into per-row booleans."""
    def steps(row: dict) -> list:
        return row.get("steps") if isinstance(row.get("steps"), list) else []

    def labels(row: dict) -> list:
        return row.get("labels") if isinstance(row.get("labels"), list) else []

    def values(row: dict) -> list:
        return row.get("values") if isinstance(row.get("values"), list) else []

    frame = pd.DataFrame([{key: row.get(key) for key in REQUIRED} for row in rows], columns=list(REQUIRED))
    frame["num_steps"] = [len(steps(r)) for r in rows]
    frame["one_label_per_step"] = [len(labels(r)) == len(steps(r)) == len(values(r)) for r in rows]
    frame["labels_are_plus_minus"] = [all(x in ("+", "-") for x in labels(r)) for r in rows]
    frame["values_in_unit_interval"] = [
        all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in values(r)) for r in rows
    ]
    frame["values_match_labels"] = [
        all((v > 0) == (x == "+") for v, x in zip(values(r), labels(r)) if isinstance(v, (int, float)))
        for r in rows
    ]
    frame["no_empty_step"] = [all(isinstance(s, str) and s.strip() for s in steps(r)) for r in rows]
    return frame


def step_frame(rows: list[dict]) -> pd.DataFrame:
    records = []
    for row in rows:
        labels = row.get("labels") if isinstance(row.get("labels"), list) else []
        steps = row.get("steps") if isinstance(row.get("steps"), list) else []
        for i, text in enumerate(steps):
            negative = float(labels[i] == "-") if i < len(labels) else None
            records.append({"id": row.get("id"), "step_index": i, "step_chars": len(str(text)),
                            "is_negative": negative})
    return pd.DataFrame(records, columns=["id", "step_index", "step_chars", "is_negative"])


def solution_expectations(params: ValidateParams) -> list:
    import great_expectations as gx

    e = gx.expectations
    expectations = [e.ExpectColumnValuesToNotBeNull(column=column) for column in REQUIRED]
    expectations += [
        e.ExpectColumnValuesToBeInSet(column=column, value_set=[True])
        for column in ("one_label_per_step", "labels_are_plus_minus", "values_in_unit_interval",
                       "values_match_labels", "no_empty_step")
    ]
    expectations.append(
        e.ExpectColumnValuesToBeBetween(column="num_steps", min_value=params.min_steps, max_value=params.max_steps)
    )
    expectations.append(e.ExpectColumnValuesToBeUnique(column="id"))
    return expectations


def step_expectations(params: ValidateParams) -> list:
    import great_expectations as gx

    e = gx.expectations
    return [
        e.ExpectColumnValuesToBeBetween(column="step_chars", min_value=1, max_value=params.max_step_chars),
        e.ExpectColumnMeanToBeBetween(column="is_negative", min_value=params.min_negative_fraction,
                                      max_value=params.max_negative_fraction),
    ]


def run_suite(name: str, frame: pd.DataFrame, expectations: list) -> list[dict]:
    """Validate `frame` with an ephemeral GX context; one summary dict per expectation."""
    import great_expectations as gx

    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # keeps stage logs readable
    batch = context.data_sources.add_pandas(name).add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    for expectation in expectations:
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    result = definition.run(
        batch_parameters={"dataframe": frame},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["id"]},
    )
    summaries = []
    for item in result.results:
        config, details = item.expectation_config, item.result or {}
        column = config.kwargs.get("column")
        ids = [i.get("id") if isinstance(i, dict) else i for i in details.get("unexpected_index_list") or []]
        summaries.append({
            "suite": name,
            "expectation": config.type,
            "column": column,
            "success": bool(item.success),
            "unexpected_count": details.get("unexpected_count", 0 if item.success else None),
            "observed_value": details.get("observed_value"),
            "example_ids": ids[:EXAMPLES],
        })
    return summaries


def validate_rollouts(rows: list[dict], params: ValidateParams) -> list[dict]:
    return (run_suite("solutions", solution_frame(rows), solution_expectations(params))
            + run_suite("steps", step_frame(rows), step_expectations(params)))


def failure_summary(results: list[dict]) -> str:
    failed = [r for r in results if not r["success"]]
    lines = [f"validation failed: {len(failed)} of {len(results)} expectations"]
    for r in failed:
        what = f"{r['unexpected_count']} unexpected" if r["unexpected_count"] is not None else f"observed {r['observed_value']}"
        lines.append(f"  - {r['suite']}: {r['expectation']}({r['column']}): {what}; examples: {r['example_ids']}")
    return "\n".join(lines)


def main(params: Params) -> None:
    import mlflow

    from prmflow.jsonl import read_jsonl, write_json
    from prmflow.tracking import stage_run

    rollouts = Path(params.base.data_dir) / "rollouts"
    rows = read_jsonl(rollouts / "train.jsonl") + read_jsonl(rollouts / "test.jsonl")
    with stage_run(params.base, "validate", params.validate):
        results = validate_rollouts(rows, params.validate)
        passed = all(r["success"] for r in results)
        report = {"success": passed, "solutions": len(rows), "expectations": results}
        path = Path(params.base.reports_dir) / "validation.json"
        write_json(path, report)
        mlflow.log_artifact(str(path))
        mlflow.log_metrics({"validation_success": float(passed),
                            "failed_expectations": float(sum(not r["success"] for r in results))})
        if not passed:
            raise ValidationFailed(failure_summary(results))
        print(f"validate: {len(results)} expectations passed on {len(rows)} solutions")
