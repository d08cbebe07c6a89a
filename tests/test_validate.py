"""The Great Expectations gate: a clean dataset passes, each defect fails its own expectation."""

import copy
import json
import subprocess

import pytest

from prmflow.config import ValidateParams
from prmflow.validate import failure_summary, validate_rollouts

from conftest import BIN


def failed(results):
    return {(r["expectation"], r["column"]) for r in results if not r["success"]}


def test_clean_rollouts_pass(labeled_rows):
    results = validate_rollouts(labeled_rows, ValidateParams())
    assert failed(results) == set()


@pytest.mark.parametrize("corrupt, expected", [
    (lambda row: row.update(labels=row["labels"][:-1]), ("expect_column_values_to_be_in_set", "one_label_per_step")),
    (lambda row: row["labels"].__setitem__(0, "?"), ("expect_column_values_to_be_in_set", "labels_are_plus_minus")),
    (lambda row: row["values"].__setitem__(0, 1.5), ("expect_column_values_to_be_in_set", "values_in_unit_interval")),
    (lambda row: row.update(answer=None), ("expect_column_values_to_not_be_null", "answer")),
])
def test_each_defect_fails_exactly_its_expectation(labeled_rows, corrupt, expected):
    rows = copy.deepcopy(labeled_rows)
    corrupt(rows[3])
    results = validate_rollouts(rows, ValidateParams())
    assert expected in failed(results)
    (failure,) = [r for r in results if (r["expectation"], r["column"]) == expected]
    assert failure["example_ids"] == [rows[3]["id"]]
    assert rows[3]["id"] in failure_summary(results)


def test_all_plus_labels_fail_the_balance_check(labeled_rows):
    rows = copy.deepcopy(labeled_rows)
    for row in rows:
        row["labels"], row["values"] = ["+"] * len(row["steps"]), [1.0] * len(row["steps"])
    assert failed(validate_rollouts(rows, ValidateParams())) == {("expect_column_mean_to_be_between", "is_negative")}


def test_the_stage_exits_nonzero_and_names_the_failure(labeled_rows, tmp_path):
    rollouts = tmp_path / "data" / "rollouts"
    rollouts.mkdir(parents=True)
    rows = copy.deepcopy(labeled_rows)
    rows[0]["labels"][0] = "?"
    (rollouts / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (rollouts / "test.jsonl").write_text("")
    (tmp_path / "params.yaml").write_text("base:\n  seed: 1\n")
    proc = subprocess.run([str(BIN / "prmflow"), "validate"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "labels_are_plus_minus" in proc.stderr and rows[0]["id"] in proc.stderr
    report = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert report["success"] is False
