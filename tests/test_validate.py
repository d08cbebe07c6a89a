"""The Great Expectations gate: a clean dataset passes, each defect fails exactly its own check."""

import copy
import json
import re
import subprocess
import sys

import pytest

from prmflow.config import ConfigError, ValidateParams, params_from_dict
from prmflow.labeling.validate import failed_checks, summary, validate_datasets, warned_checks

from conftest import BIN, REPO


@pytest.fixture(scope="module")
def clean():
    """Problems and labeled rollouts of both splits, from the real generator and simulated policy."""
    from prmflow.config import IngestParams, LabelParams
    from prmflow.data.ingest import build_splits
    from prmflow.labeling.label import rollout_rows

    problems = build_splits(IngestParams(num_train=30, num_test=8), seed=7).splits
    label = LabelParams(trajectories_per_problem=3, completions_per_step=8)
    rollouts = {split: rollout_rows(rows, label, seed=7) for split, rows in problems.items()}
    return problems, rollouts


def names(results):
    return {f"{r['suite']}.{r['check']}" for r in results}


def example_ids(result):
    return {e["id"] for e in result["examples"]}


def test_clean_data_passes_without_warnings(clean):
    results = validate_datasets(*clean, ValidateParams())
    assert failed_checks(results) == [] and warned_checks(results) == []
    assert {"problems", "rollouts", "steps"} == {r["suite"] for r in results}
    assert summary(results).startswith("validation passed")


def _with_twin(rows):
    """Index of a solution with a `+` step that repeats an earlier one of its problem (the policy resamples
    slip-free paths; a repeated misconception is often `-` throughout, which relabeling would not change)."""
    seen = set()
    for i, row in enumerate(rows):
        key = (row["problem_id"], json.dumps(row["steps"]))
        if key in seen and "+" in row["labels"]:
            return i
        seen.add(key)
    raise AssertionError("no repeated solution in the fixture")


def _relabel_all_minus(row):
    row.update(labels=["-"] * len(row["steps"]), values=[0.0] * len(row["steps"]), first_error=0)


def _first_plus(row):
    return row["labels"].index("+")


# Each defect breaks train row 3 (or makes it leak into test); the check named beside it must be the only failure.
ROLLOUT_DEFECTS = {
    "rollouts.one_label_per_step": lambda r: r["train"][3].update(labels=r["train"][3]["labels"][:-1]),
    "rollouts.labels_are_plus_minus": lambda r: r["train"][3]["labels"].__setitem__(0, "?"),
    "rollouts.values_in_unit_interval": lambda r: r["train"][3]["values"].__setitem__(0, 1.5),
    "rollouts.values_match_labels": lambda r: r["train"][3]["values"].__setitem__(_first_plus(r["train"][3]), 0.0),
    "rollouts.first_error_matches_labels": lambda r: r["train"][3].update(first_error=7),
    "rollouts.answer_present": lambda r: r["train"][3].update(answer=None),
    "rollouts.policy_present": lambda r: r["train"][3].pop("policy"),
    "rollouts.no_empty_step": lambda r: r["train"][3]["steps"].__setitem__(0, "   "),
    "rollouts.answer_parses_with_math_verify": lambda r: r["train"][3].update(answer="\\frac{"),
    "rollouts.steps_per_solution_in_bounds": lambda r: r["train"][3].update(
        steps=r["train"][3]["steps"] * 11, labels=r["train"][3]["labels"] * 11, values=r["train"][3]["values"] * 11),
    "steps.step_length_in_bounds": lambda r: r["train"][3]["steps"].__setitem__(0, "7 + 5 = 12. " * 40),
    "rollouts.unique_id_within_split": lambda r: r["train"][4].update(id=r["train"][3]["id"]),
    "rollouts.no_problem_in_both_splits": lambda r: r["test"][0].update(
        problem_id=r["train"][3]["problem_id"], problem=r["train"][3]["problem"]),
}


@pytest.mark.parametrize("check", sorted(ROLLOUT_DEFECTS))
def test_each_rollout_defect_fails_exactly_its_check(clean, check):
    problems, rollouts = copy.deepcopy(clean)
    ROLLOUT_DEFECTS[check](rollouts)
    broken = rollouts["train"][3]
    results = validate_datasets(problems, rollouts, ValidateParams())
    assert names(failed_checks(results)) == {check}
    (failure,) = failed_checks(results)
    assert broken["id"] in example_ids(failure)
    assert check in summary(results) and broken["id"] in summary(results)


def test_identical_solutions_with_different_labels_fail(clean):
    problems, rollouts = copy.deepcopy(clean)
    twin = rollouts["train"][_with_twin(rollouts["train"])]
    _relabel_all_minus(twin)
    assert failed_checks(validate_datasets(problems, rollouts, ValidateParams())) == []  # one conflict is MC-noise sized
    results = validate_datasets(problems, rollouts, ValidateParams(max_label_conflict_fraction=0.0))
    assert names(failed_checks(results)) == {"rollouts.identical_solutions_labeled_alike"}
    assert twin["id"] in example_ids(failed_checks(results)[0])


PROBLEM_DEFECTS = {
    "problems.answer_present": lambda p: p["train"][2].update(answer=None),
    "problems.answer_parses_with_math_verify": lambda p: p["train"][2].update(answer="?"),
    "problems.no_empty_reference_step": lambda p: p["train"][2]["reference_steps"].append(""),
    "problems.reference_steps_in_bounds": lambda p: p["train"][2].update(reference_steps=["1 + 1 = 2"] * 21),
    "problems.unique_id_within_split": lambda p: p["train"][3].update(id=p["train"][2]["id"]),
    "problems.no_problem_in_both_splits": lambda p: p["test"].append(dict(p["train"][2], id="x" + p["train"][2]["id"])),
}


@pytest.mark.parametrize("check", sorted(PROBLEM_DEFECTS))
def test_each_problem_defect_fails_exactly_its_check(clean, check):
    problems, rollouts = copy.deepcopy(clean)
    PROBLEM_DEFECTS[check](problems)
    results = validate_datasets(problems, rollouts, ValidateParams())
    assert names(failed_checks(results)) == {check}
    assert clean[0]["train"][2]["id"] in example_ids(failed_checks(results)[0])


def test_all_plus_labels_fail_the_balance_check(clean):
    problems, rollouts = copy.deepcopy(clean)
    for row in rollouts["train"] + rollouts["test"]:
        row.update(labels=["+"] * len(row["steps"]), values=[1.0] * len(row["steps"]), first_error=-1)
    results = validate_datasets(problems, rollouts, ValidateParams())
    assert names(failed_checks(results)) == {"steps.label_balance"}
    assert "observed 0" in summary(results)


def test_skewed_balance_and_many_repeats_warn_without_failing(clean):
    params = ValidateParams(warn_max_negative_fraction=0.1, max_duplicate_fraction=0.0)
    results = validate_datasets(*clean, params)
    assert failed_checks(results) == []
    assert names(warned_checks(results)) == {"steps.label_balance_skew", "rollouts.repeated_solution_share"}
    repeat = next(r for r in warned_checks(results) if r["check"] == "repeated_solution_share")
    assert repeat["examples"] and "warning steps.label_balance_skew" in summary(results)


def test_crossing_bounds_are_a_config_error():
    with pytest.raises(ConfigError, match="validate.warn_max_negative_fraction: 0.6 is below"):
        params_from_dict({"validate": {"warn_min_negative_fraction": 0.7}})


def _write_project(root, problems, rollouts):
    for name, splits in (("problems", problems), ("rollouts", rollouts)):
        (root / "data" / name).mkdir(parents=True)
        for split, rows in splits.items():
            (root / "data" / name / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "params.yaml").write_text("base:\n  seed: 1\n")


def test_the_stage_exits_nonzero_names_the_failure_and_writes_reports(clean, tmp_path):
    problems, rollouts = copy.deepcopy(clean)
    rollouts["train"][0]["labels"][0] = "?"
    _write_project(tmp_path, problems, rollouts)
    proc = subprocess.run([str(BIN / "prmflow"), "validate"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "rollouts.labels_are_plus_minus" in proc.stderr and rollouts["train"][0]["id"] in proc.stderr
    report = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert report["success"] is False and report["failed"] == ["rollouts.labels_are_plus_minus"]
    failed = next(r for r in report["expectations"] if not r["success"])
    assert failed["examples"][0]["labels"][0] == "?"
    docs = tmp_path / "reports" / "validation_docs"
    assert (docs / "index.html").exists()
    pages = {p.name for p in (docs / "validations").rglob("*.html")}
    assert pages == {"problems-problems.html", "rollouts-rollouts.html", "steps-steps.html"}
    assert "labels_are_plus_minus" in (docs / "expectations" / "rollouts.html").read_text()
    index = (docs / "index.html").read_text()
    assert '<td>rollouts</td><td><span class="failed">failed</span>' in index
    assert 'href="validations/rollouts/__none__/latest/rollouts-rollouts.html"' in index


def _site(docs):
    return {p.relative_to(docs).as_posix(): p.read_bytes() for p in sorted(docs.rglob("*")) if p.is_file()}


def test_data_docs_open_offline_and_are_identical_for_the_same_data(clean, tmp_path):
    sites = []
    for run in ("first", "second"):
        validate_datasets(*clean, ValidateParams(), tmp_path / run)
        sites.append(_site(tmp_path / run))
    assert sites[0].keys() == sites[1].keys() and sites[0] == sites[1]
    remote = re.compile(r"<(?:script|link|img)\b[^>]*(?:src|href)=[\"']?https?://|url\(\s*['\"]?https?://", re.I)
    pages = {name: body.decode() for name, body in sites[0].items() if name.endswith(".html")}
    assert len(pages) == 7 and not [name for name, page in pages.items() if remote.search(page)]
    assert not [name for name, page in pages.items() if "<script" in page]  # nothing left that needs a CDN library
    # every local link resolves inside the site
    for name, page in pages.items():
        for target in re.findall(r'(?:href|src)="(?!https?:|#|mailto:)([^"#?]+)', page):
            assert (tmp_path / "first" / name).parent.joinpath(target).resolve().exists(), (name, target)


def test_great_expectations_and_math_verify_load_only_in_the_validate_stage():
    code = ("import importlib, sys\n"
            "from prmflow.cli import STAGE_MODULES\n"
            "for module in STAGE_MODULES.values():\n"
            "    importlib.import_module(module)\n"
            "print(sorted({'great_expectations', 'math_verify'} & set(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_no_rollouts_at_all_fail_not_empty(clean):
    results = validate_datasets(clean[0], {"train": [], "test": []}, ValidateParams())
    assert "rollouts.not_empty" in names(failed_checks(results))
