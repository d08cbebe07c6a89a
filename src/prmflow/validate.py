"""Stage `validate`: Great Expectations suites that stop bad data before it trains a model.

    prmflow validate          # reads params.yaml: base, validate

Three suites, each built in code from the `validate` params:
  problems  one row per problem: fields present, ids unique per split, reference steps in
            bounds and non-empty, answers parseable by math-verify, no problem in both splits;
  rollouts  one row per labeled solution: fields present, ids unique per split, one `+`/`-`
            label per step, values in [0, 1] and consistent with the labels and `first_error`,
            steps per solution in bounds, no empty step, answers parseable, no leakage, and
            identical solutions of a problem labeled alike (beyond Monte-Carlo noise);
  steps     one row per step: text length, label balance.
Per-list rules become derived per-row columns, so each GX expectation names one rule and its
unexpected rows are the offending solutions. A derived column is None where its inputs are
missing or malformed, and GX skips None, so one defect fails one expectation.

Checks with severity `warning` are reported but do not fail. Writes `reports/validation.json`
and HTML data docs under `reports/validation_docs/`; on failure exits non-zero with a summary
naming each failing check and example rows. Great Expectations and math-verify are imported
inside this stage's functions only: GX takes seconds to import.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from prmflow.config import Params, ValidateParams
from prmflow.policy import SimulatedPolicy

SPLITS = ("train", "test")
PROBLEM_FIELDS = ("id", "problem", "answer", "reference_steps", "source")
ROLLOUT_FIELDS = ("id", "problem_id", "problem", "steps", "labels", "values", "answer", "predicted_answer",
                  "correct", "first_error", "policy")
LABELING_COLUMNS = ("num_steps", "no_empty_step", "one_label_per_step", "labels_are_plus_minus",
                    "values_in_unit_interval", "values_match_labels", "first_error_matches_labels")
ROLLOUT_COLUMNS = ("split", *ROLLOUT_FIELDS, *LABELING_COLUMNS, "answer_parses", "in_both_splits",
                   "repeats_earlier_solution", "labels_differ_from_twin")
DOCS_DIR = "validation_docs"
REPORT_EXAMPLES = 5   # example rows per check in validation.json
MESSAGE_EXAMPLES = 3  # example rows per check in the failure message (it must fit a flow log tail)
EXAMPLE_CHARS = 160


class ValidationFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Check:
    """One named rule: a GX expectation class and its arguments, plus what an example row shows."""

    name: str
    expectation: str                    # class in great_expectations.expectations
    kwargs: dict
    shows: tuple[str, ...] = ()         # source fields printed beside the key of an example row
    warning: bool = False               # reported, never fails the stage
    flagged_by: str | None = None       # aggregate checks: rows where this column is True are the examples


@dataclass
class Suite:
    name: str
    frame: pd.DataFrame
    checks: list[Check]
    key: tuple[str, ...] = ("split", "id")


# ---------------------------------------------------------------- derived columns (pure pandas)

def _list(value: object) -> list | None:
    return value if isinstance(value, list) else None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def answers_parse(answers: Iterable[object]) -> dict[str, bool]:
    """math-verify verdict per distinct answer; each is parsed once (the first parse warms sympy up)."""
    from prmflow.answers import parse_answer

    return {answer: parse_answer(answer) is not None for answer in {a for a in answers if isinstance(a, str)}}


def _answer_verdict(row: dict, parses: dict[str, bool], labeled: bool) -> bool | None:
    """math-verify's verdict; None (not judged) for a pre-labeled row that carries no reference answer."""
    if labeled and not row.get("answer"):
        return None
    return parses.get(row.get("answer"))


def _normalized(row: dict, keys: tuple[str, ...]) -> set[str]:
    """Ids and problem text, case and whitespace folded, so a re-spaced copy still counts as the same problem."""
    return {" ".join(str(row[k]).split()).lower() for k in keys if row.get(k)}


def _leaked(rows_by_split: dict[str, list[dict]], keys: tuple[str, ...]) -> dict[str, set]:
    """Per split, the values of `keys` that also occur in another split."""
    seen = {split: set().union(*(_normalized(r, keys) for r in rows)) for split, rows in rows_by_split.items()}
    return {split: set().union(*(values & seen[other] for other in seen if other != split))
            for split, values in seen.items()}


def _step_columns(steps: list | None) -> dict:
    return {"num_steps": len(steps) if steps is not None else None,
            "no_empty_step": all(isinstance(s, str) and s.strip() for s in steps) if steps is not None else None}


def problem_frame(problems: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per problem, both splits, with the derived columns the problems suite checks."""
    parses = answers_parse(r.get("answer") for rows in problems.values() for r in rows)
    leaked = _leaked(problems, ("id", "problem"))
    records = []
    for split, rows in problems.items():
        for row in rows:
            # Pre-labeled rows (PRM800K, Math-Shepherd, ...) bring their own steps and labels: they have
            # no reference solution, and some formats carry no reference answer to parse.
            labeled = "labels" in row
            records.append({
                "split": split, **{k: row.get(k) for k in PROBLEM_FIELDS},
                **(_step_columns(None) if labeled else _step_columns(_list(row.get("reference_steps")))),
                "answer_parses": _answer_verdict(row, parses, labeled),
                "in_both_splits": bool(_normalized(row, ("id", "problem")) & leaked[split]),
            })
    return pd.DataFrame(records, columns=["split", *PROBLEM_FIELDS, "num_steps", "no_empty_step", "answer_parses",
                                          "in_both_splits"])


def _labeling_columns(row: dict) -> dict:
    """Per-solution booleans about steps, labels and values; None where the inputs cannot be judged."""
    steps, labels, values = _list(row.get("steps")), _list(row.get("labels")), _list(row.get("values"))
    present = steps is not None and labels is not None and values is not None
    aligned = present and len(steps) == len(labels) == len(values)
    # Consistency rules judge aligned lists and well-formed entries only: a bad label or value fails its own rule.
    pairs = [(v, x) for v, x in zip(values, labels) if _is_number(v) and 0 <= v <= 1 and x in ("+", "-")] \
        if aligned else []
    signs_only = aligned and all(x in ("+", "-") for x in labels)
    first_minus = next((i for i, x in enumerate(labels) if x == "-"), -1) if signs_only else None
    return {
        **_step_columns(steps),
        "one_label_per_step": aligned if present else None,
        "labels_are_plus_minus": all(x in ("+", "-") for x in labels) if labels is not None else None,
        "values_in_unit_interval": all(_is_number(v) and 0 <= v <= 1 for v in values) if values is not None else None,
        "values_match_labels": all((v > 0) == (x == "+") for v, x in pairs) if aligned else None,
        "first_error_matches_labels": row.get("first_error") == first_minus
        if signs_only and row.get("first_error") is not None else None,
    }


def _twin_columns(rows: list[dict]) -> list[dict]:
    """Identical solutions of one problem (same problem_id, same steps) within a split.

    The policy legitimately samples the same trajectory more than once (every slip-free sample
    of a problem is identical) and best-of-N needs those samples, so a repeat is not an error;
    a share of repeats above a bound is a warning. Twins whose hard labels differ are labeling
    noise at best (Monte-Carlo estimates of a step near 0) and a labeling bug when common.
    """
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        steps = _list(row.get("steps"))
        if row.get("problem_id") is not None and steps is not None:
            groups[(row["problem_id"], json.dumps(steps))].append(i)
    columns = [{"repeats_earlier_solution": None, "labels_differ_from_twin": None} for _ in rows]
    for members in groups.values():
        labelings = {json.dumps(rows[i].get("labels")) for i in members}
        for rank, i in enumerate(members):
            columns[i] = {"repeats_earlier_solution": rank > 0, "labels_differ_from_twin": len(labelings) > 1}
    return columns


def rollout_frame(rollouts: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per labeled solution, both splits, with the derived columns the rollouts suite checks."""
    parses = answers_parse(r.get("answer") for rows in rollouts.values() for r in rows)
    leaked = _leaked(rollouts, ("problem_id", "problem"))
    records = []
    for split, rows in rollouts.items():
        for row, twins in zip(rows, _twin_columns(rows)):
            records.append({
                "split": split, **{k: row.get(k) for k in ROLLOUT_FIELDS}, **_labeling_columns(row),
                "answer_parses": _answer_verdict(row, parses, row.get("policy") != SimulatedPolicy.name),
                "in_both_splits": bool(_normalized(row, ("problem_id", "problem")) & leaked[split]),
                **twins,
            })
    return pd.DataFrame(records, columns=list(ROLLOUT_COLUMNS))


def step_frame(rollouts: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per step: its text length (stripped) and whether its label is `-`."""
    records = []
    for split, rows in rollouts.items():
        for row in rows:
            labels = _list(row.get("labels")) or []
            for i, text in enumerate(_list(row.get("steps")) or []):
                label = labels[i] if i < len(labels) else None
                records.append({"split": split, "id": row.get("id"), "step": i, "text": text,
                                "step_chars": len(text.strip()) if isinstance(text, str) else None,
                                "is_negative": float(label == "-") if label in ("+", "-") else None})
    return pd.DataFrame(records, columns=["split", "id", "step", "text", "step_chars", "is_negative"])


# ---------------------------------------------------------------- the suites, built from params

def _present(fields: Iterable[str]) -> list[Check]:
    """The table has rows (every other check passes vacuously on none) and each field is set."""
    return [Check("not_empty", "ExpectTableRowCountToBeBetween", {"min_value": 1}),
            *(Check(f"{name}_present", "ExpectColumnValuesToNotBeNull", {"column": name}) for name in fields)]


def _true(name: str, column: str, shows: tuple[str, ...]) -> Check:
    return Check(name, "ExpectColumnValuesToBeInSet", {"column": column, "value_set": [True]}, shows)


def _unique_ids() -> Check:
    return Check("unique_id_within_split", "ExpectCompoundColumnsToBeUnique", {"column_list": ["split", "id"]})


def _no_leakage(shows: tuple[str, ...]) -> Check:
    return Check("no_problem_in_both_splits", "ExpectColumnValuesToBeInSet",
                 {"column": "in_both_splits", "value_set": [False]}, shows)


def problem_checks(params: ValidateParams) -> list[Check]:
    return [
        *_present(PROBLEM_FIELDS),
        _unique_ids(),
        Check("reference_steps_in_bounds", "ExpectColumnValuesToBeBetween",
              {"column": "num_steps", "min_value": params.min_steps, "max_value": params.max_steps},
              ("reference_steps",)),
        _true("no_empty_reference_step", "no_empty_step", ("reference_steps",)),
        _true("answer_parses_with_math_verify", "answer_parses", ("answer",)),
        _no_leakage(("problem",)),
    ]


def rollout_checks(params: ValidateParams) -> list[Check]:
    labeling = ("steps", "labels", "values")
    return [
        *_present(ROLLOUT_FIELDS),
        _unique_ids(),
        Check("steps_per_solution_in_bounds", "ExpectColumnValuesToBeBetween",
              {"column": "num_steps", "min_value": params.min_steps, "max_value": params.max_steps}, ("steps",)),
        _true("one_label_per_step", "one_label_per_step", labeling),
        _true("labels_are_plus_minus", "labels_are_plus_minus", ("labels",)),
        _true("values_in_unit_interval", "values_in_unit_interval", ("values",)),
        _true("values_match_labels", "values_match_labels", ("labels", "values")),
        _true("first_error_matches_labels", "first_error_matches_labels", ("labels", "first_error")),
        _true("no_empty_step", "no_empty_step", ("steps",)),
        _true("answer_parses_with_math_verify", "answer_parses", ("answer",)),
        _no_leakage(("problem_id", "problem")),
        Check("identical_solutions_labeled_alike", "ExpectColumnMeanToBeBetween",
              {"column": "labels_differ_from_twin", "max_value": params.max_label_conflict_fraction},
              ("problem_id", "labels"), flagged_by="labels_differ_from_twin"),
        Check("repeated_solution_share", "ExpectColumnMeanToBeBetween",
              {"column": "repeats_earlier_solution", "max_value": params.max_duplicate_fraction},
              ("problem_id",), warning=True, flagged_by="repeats_earlier_solution"),
    ]


def step_checks(params: ValidateParams) -> list[Check]:
    return [
        Check("step_length_in_bounds", "ExpectColumnValuesToBeBetween",
              {"column": "step_chars", "max_value": params.max_step_chars}, ("text",)),
        Check("label_balance", "ExpectColumnMeanToBeBetween",
              {"column": "is_negative", "min_value": params.min_negative_fraction,
               "max_value": params.max_negative_fraction}),
        Check("label_balance_skew", "ExpectColumnMeanToBeBetween",
              {"column": "is_negative", "min_value": params.warn_min_negative_fraction,
               "max_value": params.warn_max_negative_fraction}, warning=True),
    ]


def build_suites(problems: dict[str, list[dict]], rollouts: dict[str, list[dict]],
                 params: ValidateParams) -> list[Suite]:
    return [Suite("problems", problem_frame(problems), problem_checks(params)),
            Suite("rollouts", rollout_frame(rollouts), rollout_checks(params)),
            Suite("steps", step_frame(rollouts), step_checks(params), key=("split", "id", "step"))]


# ---------------------------------------------------------------- running them with Great Expectations

def _plain(value: object) -> object:
    """JSON-safe and short: numpy scalars become Python ones, long values are cut."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:  # NaN from a missing cell
        return None
    text = json.dumps(value, ensure_ascii=False, default=str)
    return value if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "..."


def _examples(suite: Suite, check: Check, details: dict) -> list[dict]:
    if check.flagged_by is not None:
        index = list(suite.frame.index[suite.frame[check.flagged_by] == True])  # noqa: E712 (object column)
    else:
        index = details.get("partial_unexpected_index_list") or []
    columns = [*suite.key, *check.shows]
    return [{c: _plain(suite.frame.at[i, c]) for c in columns} for i in index[:REPORT_EXAMPLES]]


def _context(docs_dir: Path | None):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # keeps stage logs readable
    if docs_dir is not None:
        context.add_data_docs_site(site_name="prmflow", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    return context


def run_suites(suites: list[Suite], docs_dir: Path | None = None) -> list[dict]:
    """Run each suite through a GX Checkpoint; with `docs_dir`, its action writes HTML data docs there."""
    import great_expectations as gx

    context = _context(docs_dir)
    actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["prmflow"])] if docs_dir else []
    results = []
    for suite in suites:
        batch = (context.data_sources.add_pandas(suite.name).add_dataframe_asset(suite.name)
                 .add_batch_definition_whole_dataframe(suite.name))
        gx_suite = context.suites.add(gx.ExpectationSuite(name=suite.name))
        by_name = {check.name: check for check in suite.checks}
        for check in suite.checks:
            gx_suite.add_expectation(getattr(gx.expectations, check.expectation)(
                **check.kwargs, meta={"check": check.name}, severity="warning" if check.warning else "critical"))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=suite.name, data=batch, suite=gx_suite))
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=suite.name, validation_definitions=[definition], actions=actions,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": REPORT_EXAMPLES}))
        outcome = checkpoint.run(batch_parameters={"dataframe": suite.frame})
        for item in next(iter(outcome.run_results.values())).results:
            check, details = by_name[item.expectation_config.meta["check"]], item.result or {}
            results.append({
                "suite": suite.name, "check": check.name, "severity": "warning" if check.warning else "critical",
                "expectation": item.expectation_config.type,
                "kwargs": check.kwargs,
                "success": bool(item.success),
                "element_count": details.get("element_count", len(suite.frame)),
                "unexpected_count": details.get("unexpected_count"),
                "observed_value": _plain(details.get("observed_value")),
                "examples": [] if item.success else _examples(suite, check, details),
            })
    return results


def validate_datasets(problems: dict[str, list[dict]], rollouts: dict[str, list[dict]], params: ValidateParams,
                      docs_dir: Path | None = None) -> list[dict]:
    """Every check over problems and labeled rollouts (each a mapping split -> rows); one dict per check."""
    return run_suites(build_suites(problems, rollouts, params), docs_dir)


def failed_checks(results: list[dict]) -> list[dict]:
    return [r for r in results if not r["success"] and r["severity"] == "critical"]


def warned_checks(results: list[dict]) -> list[dict]:
    return [r for r in results if not r["success"] and r["severity"] == "warning"]


def _describe(result: dict) -> str:
    if result["unexpected_count"] is not None:
        what = f"{result['unexpected_count']} of {result['element_count']} rows unexpected"
    else:
        bounds = {k: v for k, v in result["kwargs"].items() if k in ("min_value", "max_value")}
        observed = result["observed_value"]
        what = f"observed {observed:.4g}" if isinstance(observed, float) else f"observed {observed}"
        what += f", expected {bounds}"
    return f"{result['suite']}.{result['check']} ({result['expectation']}): {what}"


def summary(results: list[dict]) -> str:
    """Short enough for a flow log: each failing check, a few example rows, then the warnings."""
    failed, warned = failed_checks(results), warned_checks(results)
    lines = [f"validation failed: {len(failed)} of {len(results)} checks" if failed
             else f"validation passed: {len(results)} checks"]
    for result in failed:
        lines.append(f"  FAILED {_describe(result)}")
        lines += [f"      e.g. {json.dumps(e, ensure_ascii=False)}" for e in result["examples"][:MESSAGE_EXAMPLES]]
    lines += [f"  warning {_describe(result)}" for result in warned]
    return "\n".join(lines)


def report(results: list[dict], counts: dict[str, int]) -> dict:
    return {"success": not failed_checks(results), "failed": [f"{r['suite']}.{r['check']}" for r in failed_checks(results)],
            "warnings": [f"{r['suite']}.{r['check']}" for r in warned_checks(results)], "rows": counts,
            "expectations": results}


def main(params: Params) -> None:
    import mlflow

    from prmflow.jsonl import read_jsonl, write_json
    from prmflow.tracking import stage_run

    data, reports = Path(params.base.data_dir), Path(params.base.reports_dir)
    problems = {split: read_jsonl(data / "problems" / f"{split}.jsonl") for split in SPLITS}
    rollouts = {split: read_jsonl(data / "rollouts" / f"{split}.jsonl") for split in SPLITS}
    docs = reports / DOCS_DIR
    shutil.rmtree(docs, ignore_errors=True)  # the site indexes every run it holds: keep only this one
    with stage_run(params.base, "validate", params.validate):
        results = validate_datasets(problems, rollouts, params.validate, docs)
        counts = {f"{name}_{split}": len(rows[split]) for name, rows in (("problems", problems), ("rollouts", rollouts))
                  for split in SPLITS}
        path = reports / "validation.json"
        write_json(path, report(results, counts))
        mlflow.log_artifact(str(path))
        mlflow.log_metrics({"validation_success": float(not failed_checks(results)),
                            "failed_expectations": float(len(failed_checks(results))),
                            "warned_expectations": float(len(warned_checks(results)))})
        mlflow.set_tag("prmflow.validation_docs", str((docs / "index.html").resolve()))
        if failed_checks(results):
            raise ValidationFailed(f"{summary(results)}\n  data docs: {docs / 'index.html'}")
        print(f"{summary(results)}\n  on {counts}\n  data docs: {docs / 'index.html'}")
