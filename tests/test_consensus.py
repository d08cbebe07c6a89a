"""Consensus filtering against a second source's first errors, in the label stage; ProcessBench's first-error
layout as a labeled source."""

import json

from prmflow.data.sources import read_source
from prmflow.jsonl import read_jsonl
from prmflow.labeling.consensus import agreeing, read_first_errors

from conftest import REPO
from test_teacher_labels import candidate, stage_params, write_lines


def labeled(row_id: str, labels: list[str]) -> dict:
    return {"id": row_id, "steps": ["a"] * len(labels), "labels": labels,
            "first_error": next((i for i, x in enumerate(labels) if x == "-"), -1),
            "label_source": {"method": "teacher"}}


def test_a_solution_is_kept_only_where_the_second_source_puts_the_first_error_on_the_same_step(tmp_path):
    second = write_lines(tmp_path / "mc.jsonl", [
        {"id": "agree", "first_error": 1}, {"id": "disagree", "label": -1},
        {"id": "short", "labels": ["+", "-"]}, {"id": "bad", "first_error": "2"}, "{"])
    found, bad_lines = read_first_errors(second)
    assert sorted(found) == ["agree", "disagree", "short"]
    assert [(r["line"], r["field"]) for r in bad_lines] == [(4, "first_error"), (5, "(line)")]
    rows = [labeled("agree", ["+", "-", "-"]), labeled("disagree", ["-", "-"]), labeled("short", ["+", "+", "-"]),
            labeled("alone", ["+"])]
    kept, dropped, counts = agreeing(rows, found, second)
    assert [r["id"] for r in kept] == ["agree"] and kept[0]["label_source"]["consensus_with"] == str(second)
    assert counts == {"kept": 1, "unlabeled": 1, "step_count": 1, "disagree": 1}
    assert [(r["id"], r["line"], r["reason"]) for r in dropped] == [
        ("disagree", 2, "label: first error -1, this source's 0 ('disagree')"),
        ("short", 3, "labels: 2 labels for 3 steps of 'short'"),
        ("alone", 0, "id: 'alone': the second source labels no such solution")]


def test_label_stage_filters_train_by_consensus_keeps_test_whole_and_reports_why(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pool = write_lines(tmp_path / "pool.jsonl", [candidate(p, k) for p in range(8) for k in range(2)])
    scores = write_lines(tmp_path / "scores.jsonl", [
        {"id": f"p{p}-{k}", "step_scores": {"t": [0.9, 0.1 if k else 0.9]}} for p in range(8) for k in range(2)])
    folder = tmp_path / "second"  # a folder of first errors, as another run's data/rollouts
    folder.mkdir()
    write_lines(folder / "train.jsonl", [{"id": f"p{p}-{k}", "first_error": -1} for p in range(8) for k in range(2)])
    params = stage_params(tmp_path, [{"format": "candidates", "path": str(pool)}],
                          {"method": "teacher", "teacher_file": str(scores), "teacher_models": ["t"],
                           "consensus_file": str(folder)})
    from prmflow.data import ingest
    from prmflow.labeling import label

    ingest.main(params)
    label.main(params)
    rollouts = {s: read_jsonl(tmp_path / "data" / "rollouts" / f"{s}.jsonl") for s in ("train", "test")}
    problems = {s: read_jsonl(tmp_path / "data" / "problems" / f"{s}.jsonl") for s in ("train", "test")}
    assert len(rollouts["test"]) == len(problems["test"]) > 0
    assert [r["id"] for r in rollouts["train"]] == [r["id"] for r in problems["train"] if r["id"].endswith("-0")]
    report = json.loads((tmp_path / "reports" / "labeling.json").read_text())
    train_candidates = len(problems["train"])
    assert report["consensus"] == {"file": str(folder), "rejected_lines": 0, "kept": train_candidates // 2,
                                   "unlabeled": 0, "step_count": 0, "disagree": train_candidates // 2}
    rejects = read_jsonl(tmp_path / "data" / "rollouts" / "rejects.jsonl")
    assert {r["kind"] for r in rejects} == {"consensus"} and len(rejects) == train_candidates // 2


def test_processbench_first_errors_are_labels_that_carry_forward(tmp_path):
    records, rejects = read_source({"format": "processbench",
                                    "path": str(REPO / "tests" / "fixtures" / "evaluate" / "processbench.jsonl")}, 0)
    assert [r.row["labels"] for r in records][:2] == [["+", "-"], ["+", "+"]] and rejects == []
    bad = write_lines(tmp_path / "pb.jsonl", [{"problem": "q", "steps": ["a", "b"], "label": 2}])
    assert read_source({"format": "processbench", "path": str(bad)}, 0)[1][0]["reason"] == \
        "label: 2 is not -1 or a step index below 2"
