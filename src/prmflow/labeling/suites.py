"""The validation suites as data: derived per-row columns (pure pandas) and the checks over them.

Per-list rules become derived per-row columns, so each Great Expectations expectation names one
rule and its unexpected rows are the offending solutions. A derived column is None where its inputs
are missing or malformed, and GX skips None, so one defect fails one expectation. validate.py runs
these suites; nothing here imports Great Expectations.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from prmflow.config import ValidateParams
from prmflow.data.contract import PROBLEM_FIELDS
from prmflow.labeling.simulated import SimulatedPolicy

ROLLOUT_FIELDS = ("id", "problem_id", "problem", "steps", "labels", "values", "answer", "predicted_answer",
                  "correct", "first_error", "policy")
LABELING_COLUMNS = ("num_steps", "no_empty_step", "one_label_per_step", "labels_are_plus_minus",
                    "values_in_unit_interval", "values_match_labels", "first_error_matches_labels")
# label_source.method of the label stage's rows: policy completions, a teacher's scores, or labels a source gave.
LABEL_METHODS = ("mc", "binary_search", "relative_progress", "teacher", "given")
ROLLOUT_COLUMNS = ("split", *ROLLOUT_FIELDS, "label_method", *LABELING_COLUMNS, "answer_parses", "in_both_splits",
                   "repeats_earlier_solution", "labels_differ_from_twin")


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
    from prmflow.data.answers import parse_answer

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
            # Pre-labeled rows (PRM800K, Math-Shepherd, ...) and candidate solutions bring their own steps: they
            # have no reference solution, and some formats carry no reference answer to parse.
            labeled = "labels" in row or "steps" in row  # a candidate solution brings its steps too
            records.append({
                "split": split, **{k: row.get(k) for k in PROBLEM_FIELDS},
                **(_step_columns(None) if labeled else _step_columns(_list(row.get("reference_steps")))),
                "answer_parses": _answer_verdict(row, parses, labeled),
                "in_both_splits": bool(_normalized(row, ("id", "problem")) & leaked[split]),
            })
    return pd.DataFrame(records, columns=["split", *PROBLEM_FIELDS, "num_steps", "no_empty_step", "answer_parses",
                                          "in_both_splits"])


def _label_threshold(row: dict) -> float | None:
    """The score at or above which a step is `+`, where the row's labels are thresholded scores (a teacher's);
    None where a value above 0 means `+` (Monte-Carlo: any completion reached the answer)."""
    source = row.get("label_source")
    threshold = source.get("threshold") if isinstance(source, dict) else None
    return threshold if _is_number(threshold) else None


def _label_method(row: dict) -> str | None:
    source = row.get("label_source")
    return source.get("method") if isinstance(source, dict) else None


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
    threshold = _label_threshold(row)
    return {
        **_step_columns(steps),
        "one_label_per_step": aligned if present else None,
        "labels_are_plus_minus": all(x in ("+", "-") for x in labels) if labels is not None else None,
        "values_in_unit_interval": all(_is_number(v) and 0 <= v <= 1 for v in values) if values is not None else None,
        "values_match_labels": all(((v > 0) if threshold is None else (v >= threshold)) == (x == "+")
                                   for v, x in pairs) if aligned else None,
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
                "split": split, **{k: row.get(k) for k in ROLLOUT_FIELDS}, "label_method": _label_method(row),
                **_labeling_columns(row),
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
        Check("label_method_known", "ExpectColumnValuesToBeInSet",
              {"column": "label_method", "value_set": list(LABEL_METHODS)}, ("label_method",)),
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
