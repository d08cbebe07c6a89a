"""Candidate solutions as rows to label, split by problem; teacher step labels from cached step scores, with their
rejects and lineage; the validation suite's rules for thresholded labels; the teacher-labels profile on real data."""

import json
from pathlib import Path

import pytest
import yaml

from prmflow.config import IngestParams, LabelParams, ValidateParams, params_from_dict
from prmflow.data import ingest
from prmflow.data.ingest import build_splits
from prmflow.jsonl import read_jsonl
from prmflow.labeling import label
from prmflow.labeling.suites import rollout_frame, rollout_checks
from prmflow.labeling.teacher import combined_scores, read_teacher_scores, teacher_rows
from prmflow.labeling.validate import failed_checks, validate_datasets

from conftest import REPO

STRICTPRM = REPO.parent / "shared" / "data" / "strictprm"
needs_strictprm = pytest.mark.skipif(not (STRICTPRM / "teacher_step_scores_dev.jsonl").is_file(),
                                     reason="../shared/data/strictprm (QwQ-32B candidates, teacher scores) is absent")


def candidate(problem: int, k: int, steps: int = 2, correct: bool = True) -> dict:
    return {"id": f"p{problem}-{k}", "problem_id": f"p{problem}", "candidate_index": k,
            "problem": f"What is {problem} + {problem}?", "answer": str(2 * problem),
            "steps": [f"Step {i} of candidate {k}." for i in range(steps)], "predicted_answer": str(2 * problem),
            "correct": correct, "generator": "qwq"}


def write_lines(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_candidates_are_rows_to_label_split_by_problem_with_bad_records_rejected(tmp_path):
    good = [candidate(p, k) for p in range(12) for k in range(3)]
    no_grade = {**candidate(99, 0), "correct": "yes"}
    no_steps = {**candidate(98, 0), "steps": []}
    path = write_lines(tmp_path / "pool.jsonl", [*good, no_grade, no_steps, "{torn"])
    result = build_splits(IngestParams(sources=[{"format": "candidates", "path": str(path), "name": "pool"}],
                                       test_fraction=0.5), seed=0)
    rows = result.splits["train"] + result.splits["test"]
    assert sorted(r["id"] for r in rows) == sorted(c["id"] for c in good)  # the source's ids are the row ids
    row = next(r for r in rows if r["id"] == "p3-1")
    assert row["steps"] == good[10]["steps"] and row["source_problem_id"] == "p3" and row["correct"] is True
    assert row["reference_steps"] == [] and "labels" not in row and row["generator"] == "qwq"
    split_of = {}
    for split, members in result.splits.items():
        for r in members:
            assert split_of.setdefault(r["problem_id"], split) == split  # all candidates of a problem together
    assert set(split_of.values()) == {"train", "test"}
    assert [(r["line"], r["reason"]) for r in result.rejects] == [
        (37, "correct: expected true or false, got 'yes'"), (38, "steps: empty steps"),
        (39, "not valid JSON: Expecting property name enclosed in double quotes (char 2)")]


def test_a_chat_transcript_at_the_head_of_the_steps_is_cut_and_its_step_scores_dropped(tmp_path):
    transcript = {**candidate(1, 0), "steps": ["system\nYou are Qwen.", "You are helpful.\nuser\nWhat is 1 + 1?",
                                               "\nassistant\nAdd the numbers.", "So 2."]}
    first_step = {**candidate(1, 1), "steps": ["system\nBe kind.\nuser\nWhat is 1 + 1?\nassistant\nAdd them.",
                                               "So 2."]}
    turn_ends_step = {**candidate(1, 2), "steps": ["system\nBe kind.\nuser\nWhat is 1 + 1?\nassistant\n", "So 2."]}
    no_solution = {**candidate(1, 3), "steps": ["system\nBe kind.", "user\nWhat is 1 + 1?\nassistant"]}
    pool = write_lines(tmp_path / "pool.jsonl", [transcript, first_step, turn_ends_step, no_solution])
    result = build_splits(IngestParams(sources=[{"format": "candidates", "path": str(pool)}], test_fraction=0.0), 0)
    rows = {r["id"]: r for r in result.splits["train"]}
    assert rows["p1-0"]["steps"] == ["Add the numbers.", "So 2."] and rows["p1-0"]["leading_steps_dropped"] == 2
    assert rows["p1-1"]["steps"] == ["Add them.", "So 2."] and rows["p1-1"]["leading_steps_dropped"] == 0
    assert rows["p1-2"]["steps"] == ["So 2."] and rows["p1-2"]["leading_steps_dropped"] == 1
    assert rows["p1-0"]["chat_transcript_removed"] and rows["p1-1"]["chat_transcript_removed"]
    (rejected,) = result.rejects
    assert rejected["reason"] == "steps: a chat transcript and no solution steps after its assistant turn"
    scores = {"p1-0": {"line": 1, "scores": {"t": [0.1, 0.2, 0.9, 0.3]}},
              "p1-1": {"line": 2, "scores": {"t": [0.9, 0.8, 0.7]}}}
    params = LabelParams(method="teacher", teacher_file="scores.jsonl", teacher_models=["t"])
    labeled, rejects = teacher_rows([rows["p1-0"], rows["p1-1"]], scores, params, "train.jsonl")
    assert labeled[0]["values"] == [0.9, 0.3] and labeled[0]["labels"] == ["+", "-"]
    assert [r["reason"] for r in rejects] == ["step_scores: 3 scores for 2 steps of 'p1-1'"]


def test_teacher_file_lines_and_candidates_it_cannot_label_are_rejects_with_file_line_and_field(tmp_path):
    scores = write_lines(tmp_path / "scores.jsonl", [
        {"id": "p1-0", "step_scores": {"a": [0.9, 0.2], "b": [0.7, 0.6]}},
        {"id": "p1-1", "step_scores": {"a": [0.9, 0.8, 0.1], "b": [0.9, 0.9, 0.9]}},  # 3 scores for 2 steps
        "not json",
        {"id": "p1-0", "step_scores": {"a": [1.0, 1.0], "b": [1.0, 1.0]}},             # repeats line 1
        {"id": "p2-0", "step_scores": {"a": [0.9, 1.5], "b": [0.5, 0.5]}},             # outside [0, 1]
        {"id": "p2-1", "step_scores": {"a": [0.9, 0.9]}},                              # teacher b missing
    ])
    read, bad_lines = read_teacher_scores(scores, ["a", "b"])
    assert sorted(read) == ["p1-0", "p1-1"]
    assert [(r["line"], r["field"]) for r in bad_lines] == [(3, "(line)"), (4, "id"), (5, "step_scores.a"),
                                                            (6, "step_scores.b")]
    assert bad_lines[2]["reason"] == "step_scores.a: score 1 is 1.5, not a number in [0, 1]"

    problems = [{**candidate(1, k), "problem_id": "h1", "source": "pool"} for k in range(3)]
    problems.append({"id": "gen", "problem_id": "gen", "problem": "q", "answer": "1", "reference_steps": ["s"],
                     "source": "generator"})
    params = LabelParams(method="teacher", teacher_file=str(scores), teacher_models=["a", "b"],
                         teacher_combine="min", teacher_threshold=0.5)
    rows, rejects = teacher_rows(problems, read, params, "data/problems/train.jsonl")
    assert [r["id"] for r in rows] == ["p1-0"]
    assert rows[0]["labels"] == ["+", "-"] and rows[0]["values"] == [0.7, 0.2] and rows[0]["first_error"] == 1
    assert rows[0]["label_source"] == {"method": "teacher", "file": str(scores), "models": ["a", "b"],
                                       "combine": "min", "labels": "soft", "threshold": 0.5}
    assert [(r["file"], r["line"], r["field"], r["id"]) for r in rejects] == [
        (str(scores), 2, "step_scores", "p1-1"),                       # step count differs: the teacher's line
        ("data/problems/train.jsonl", 3, "id", "p1-2"),                # no scores for this id
        ("data/problems/train.jsonl", 4, "steps", "gen")]              # a problem without a solution
    assert rejects[0]["reason"] == "step_scores: 3 scores for 2 steps of 'p1-1'"


@pytest.mark.parametrize("combine, labels, expected_values, expected_labels", [
    ("mean", "soft", [0.8, 0.4], ["+", "-"]),
    ("max", "soft", [0.9, 0.6], ["+", "+"]),
    ("min", "hard", [1.0, 0.0], ["+", "-"]),
])
def test_several_teachers_are_combined_step_by_step(combine, labels, expected_values, expected_labels):
    per_model = {"a": [0.9, 0.2], "b": [0.7, 0.6]}
    params = LabelParams(method="teacher", teacher_file="f", teacher_models=["a", "b"], teacher_combine=combine,
                         teacher_labels=labels)
    scores = {"p1-0": {"line": 1, "scores": per_model}}
    (row,), _ = teacher_rows([{**candidate(1, 0), "source": "pool"}], scores, params, "f")
    assert row["values"] == pytest.approx(expected_values) and row["labels"] == expected_labels
    assert combined_scores(per_model, combine) == pytest.approx(
        expected_values if labels == "soft" else [0.7, 0.2])


def test_thresholded_values_match_their_labels_by_the_rows_own_threshold_and_unknown_methods_fail():
    teacher = {"method": "teacher", "threshold": 0.5}
    base = {"problem_id": "p", "problem": "q", "steps": ["a", "b"], "answer": "1", "predicted_answer": "1",
            "correct": True, "policy": "qwq"}
    rows = [{**base, "id": "ok", "labels": ["+", "-"], "values": [0.7, 0.3], "first_error": 1,
             "label_source": teacher},
            {**base, "id": "flipped", "labels": ["+", "+"], "values": [0.7, 0.3], "first_error": -1,
             "label_source": teacher},
            {**base, "id": "mc", "labels": ["+", "-"], "values": [0.25, 0.0], "first_error": 1,
             "label_source": {"method": "mc"}},
            {**base, "id": "odd", "labels": ["+", "+"], "values": [1.0, 1.0], "first_error": -1,
             "label_source": {"method": "guess"}}]
    frame = rollout_frame({"train": rows, "test": []})
    assert list(frame["values_match_labels"]) == [True, False, True, True]
    assert list(frame["label_method"]) == ["teacher", "teacher", "mc", "guess"]
    assert "label_method_known" in [c.name for c in rollout_checks(ValidateParams())]


def stage_params(tmp_path: Path, sources: list[dict], label_section: dict) -> object:
    return params_from_dict({
        "base": {"data_dir": str(tmp_path / "data"), "reports_dir": str(tmp_path / "reports"),
                 "mlflow_tracking_uri": f"sqlite:///{tmp_path}/mlflow/mlflow.db",
                 "mlflow_artifacts_dir": str(tmp_path / "mlflow" / "artifacts")},
        "ingest": {"sources": sources, "test_fraction": 0.5},
        "label": label_section,
    })


def test_label_stage_writes_teacher_rows_rejects_and_their_counts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pool = write_lines(tmp_path / "pool.jsonl", [candidate(p, k) for p in range(6) for k in range(2)])
    scores = write_lines(tmp_path / "scores.jsonl", [
        {"id": f"p{p}-{k}", "step_scores": {"t": [0.9, 0.1 if k else 0.9]}} for p in range(6) for k in range(2)
        if (p, k) != (0, 1)])
    params = stage_params(tmp_path, [{"format": "candidates", "path": str(pool)}],
                          {"method": "teacher", "teacher_file": str(scores), "teacher_models": ["t"]})
    ingest.main(params)
    label.main(params)
    rollouts = [r for split in ("train", "test") for r in read_jsonl(tmp_path / "data" / "rollouts" / f"{split}.jsonl")]
    assert len(rollouts) == 11 and all(r["label_source"]["method"] == "teacher" for r in rollouts)
    assert {r["id"]: r["first_error"] for r in rollouts}["p3-1"] == 1
    (rejected,) = read_jsonl(tmp_path / "data" / "rollouts" / "rejects.jsonl")
    assert rejected["id"] == "p0-1" and rejected["field"] == "id"
    report = json.loads((tmp_path / "reports" / "labeling.json").read_text())
    assert report["rejects"] == 1 and report["rejects_by_field"] == {"id": 1}
    assert report["teacher"]["scored_solutions"] == 11
    assert report["train"]["solutions"] + report["test"]["solutions"] == 11


@needs_strictprm
def test_real_candidates_teacher_labeled_pass_the_profiles_validation_limits():
    profile = yaml.safe_load((REPO / "profiles" / "teacher-labels.yaml").read_text())["params"]
    sources = [{**s, "path": str(REPO / s["path"]), "limit": 320} for s in profile["ingest"]["sources"]]
    splits = build_splits(IngestParams(sources=sources, test_fraction=profile["ingest"]["test_fraction"]), 0).splits
    section = {**profile["label"], "teacher_file": str(REPO / profile["label"]["teacher_file"])}
    params = params_from_dict({"label": section}).label
    scores, bad_lines = read_teacher_scores(Path(params.teacher_file), params.teacher_models)
    assert bad_lines == [] and len(scores) == 8000
    rollouts = {}
    for split, problems in splits.items():
        rollouts[split], rejects = teacher_rows(problems, scores, params, split)
        assert rejects == []
    assert sum(map(len, rollouts.values())) == 640  # 20 problems x 16 candidates of each pool
    negative = [x for rows in rollouts.values() for r in rows for x in r["labels"]]
    assert 0 < negative.count("-") < len(negative)
    limits = ValidateParams(**profile["validate"])
    assert failed_checks(validate_datasets(splits, rollouts, limits)) == []
    too_tight = [r["check"] for r in failed_checks(validate_datasets(splits, rollouts, ValidateParams()))]
    assert "step_length_in_bounds" in too_tight  # the defaults fit the bundled generator, not real output
