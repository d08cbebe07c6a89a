"""The ingest stage: combined sources, duplicates, splits, rejects, incoming files, and the label pass-through."""

import json
from pathlib import Path

import pytest

from prmflow.config import IngestParams, LabelParams, params_from_dict
from prmflow.data.ingest import build_splits, hashed_split, main
from prmflow.data.sources import content_id
from prmflow.jsonl import RecordError, read_jsonl
from prmflow.labeling.label import rollout_rows

from conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "ingest"
GSM8K = REPO.parent / "shared" / "data" / "gsm8k"


def gsm8k_line(i: int) -> dict:
    return {"question": f"Sam has {i} pens and buys {i + 1} more. How many pens does Sam have?",
            "answer": f"Sam has {i} + {i + 1} = <<{i}+{i + 1}={2 * i + 1}>>{2 * i + 1} pens.\n#### {2 * i + 1}"}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_three_bad_lines_of_a_hundred_give_97_problems_and_3_rejects(tmp_path):
    lines = [json.dumps(gsm8k_line(i)) for i in range(100)]
    lines[10] = lines[10][:-5]  # cut JSON
    lines[50] = json.dumps({"question": "No answer here?"})
    lines[90] = json.dumps({"question": "Where are the steps?", "answer": "#### 4"})
    path = write_lines(tmp_path / "gsm.jsonl", lines)
    result = build_splits(IngestParams(sources=[{"format": "gsm8k", "path": str(path)}], test_fraction=0.2), seed=0)
    assert len(result.splits["train"]) + len(result.splits["test"]) == 97
    assert [(r["line"], r["reason"].split(" (")[0]) for r in result.rejects] == [
        (11, "not valid JSON: Invalid control character at"), (51, "answer: missing required field"),
        (91, "answer: empty steps before '####'")]
    stats = result.report["sources"]["gsm8k"]
    assert (stats["records"], stats["kept"], stats["rejects"], stats["reject_fraction"]) == (100, 97, 3, 0.03)
    assert stats["rejects_by_reason"]["answer: missing required field"] == 1
    assert stats["steps_per_problem"] == {"min": 1, "mean": 1.0, "max": 1}
    # `split: auto` is a function of the problem id alone.
    for split, rows in result.splits.items():
        assert {hashed_split(r["problem_id"], 0.2) for r in rows} == {split}
    assert 5 <= len(result.splits["test"]) <= 35


def test_near_duplicates_are_removed_and_a_problem_never_straddles_the_splits(tmp_path):
    original = gsm8k_line(1)
    shouty = {**original, "question": original["question"].upper().replace("?", " ?")}
    train = write_lines(tmp_path / "train.jsonl", [json.dumps(original), json.dumps(gsm8k_line(2))])
    test = write_lines(tmp_path / "test.jsonl", [json.dumps(shouty)])
    dropped = write_lines(tmp_path / "incoming.jsonl", [json.dumps(gsm8k_line(2))])
    sources = [{"format": "gsm8k", "path": str(train), "split": "train"},
               {"format": "gsm8k", "path": str(test), "split": "test", "name": "gsm8k-test"},
               {"format": "gsm8k", "path": str(dropped), "name": "dropped"}]
    # Every `auto` problem would go to test; the copy in the train file keeps its problem in train.
    result = build_splits(IngestParams(sources=sources, test_fraction=1.0), seed=0)
    assert [r["problem"] for r in result.splits["test"]] == [original["question"]]  # first copy kept, in test
    assert [r["problem"] for r in result.splits["train"]] == [gsm8k_line(2)["question"]]
    duplicate, repeat = result.rejects
    assert duplicate["kind"] == "duplicate" and duplicate["line"] == 1 and duplicate["source"] == "gsm8k-test"
    assert duplicate["reason"] == f"duplicate of {result.splits['test'][0]['id']} ({train}:1)"
    assert (repeat["source"], repeat["reason"]) == ("dropped", f"duplicate of {result.splits['train'][0]['id']} "
                                                               f"({train}:2)")
    assert result.report["duplicates"] == 2 and result.report["rejects"] == 0


def test_generator_and_prelabeled_sources_combine_with_stable_ids():
    sources = [{"format": "generator"}, {"format": "math_shepherd", "path": str(FIXTURES / "math_shepherd.jsonl"),
                                         "split": "test"}]
    result = build_splits(IngestParams(num_train=20, num_test=5, sources=sources), seed=3)
    assert build_splits(IngestParams(num_train=20, num_test=5, sources=sources), seed=3).splits == result.splits
    assert (len(result.splits["train"]), len(result.splits["test"])) == (20, 7)
    shepherd = [r for r in result.splits["test"] if r["source"] == "math_shepherd"]
    # Two solutions of one problem: one problem_id, two ids.
    assert len({r["problem_id"] for r in shepherd}) == 1 and len({r["id"] for r in shepherd}) == 2
    assert set(result.report["sources"]) == {"generator", "math_shepherd"}
    assert result.report["sources"]["math_shepherd"]["labeled"] == 2


def test_prelabeled_rows_pass_through_label_unchanged():
    sources = [{"format": "prm800k", "path": str(FIXTURES / "prm800k.jsonl"), "name": "prm800k-phase2"}]
    rows = build_splits(IngestParams(sources=sources, test_fraction=0.0), seed=0).splits["train"]
    rollouts = rollout_rows(rows, LabelParams(), seed=0)
    assert rollouts[1] == {
        "id": rows[1]["id"], "problem_id": rows[1]["problem_id"], "problem": "Solve $2x = 10$ for $x$.",
        "steps": ["Divide both sides by 2.", "So $x = 4$."], "labels": ["+", "-"], "values": [1.0, 0.0],
        "answer": "5", "predicted_answer": "", "correct": False, "first_error": 1, "true_first_error": 1,
        "policy": "prm800k-phase2", "label_source": {"method": "given", "source": "prm800k-phase2"},
    }
    assert rollouts[0]["correct"] is True and rollouts[0]["first_error"] == -1


def test_unusable_reference_solutions_are_rejected_with_their_reason(tmp_path):
    wrong_end = {"question": "q1?", "answer": "Half is 8/2 = <<8/2=4>>4.\nSo 5 in all.\n#### 5"}
    path = write_lines(tmp_path / "g.jsonl", [json.dumps(wrong_end), json.dumps(gsm8k_line(3))])
    result = build_splits(IngestParams(sources=[{"format": "gsm8k", "path": str(path)}]), seed=0)
    (rejected,) = result.rejects
    assert rejected["kind"] == "unusable" and rejected["line"] == 1
    assert rejected["reason"] == "reference_steps: the last calculator result 4 is not the answer 5"


def stage_params(tmp_path: Path, **ingest) -> object:
    return params_from_dict({
        "base": {"data_dir": str(tmp_path / "data"), "reports_dir": str(tmp_path / "reports"),
                 "mlflow_tracking_uri": f"sqlite:///{tmp_path}/mlflow/mlflow.db",
                 "mlflow_artifacts_dir": str(tmp_path / "mlflow" / "artifacts")},
        "ingest": {"num_train": 10, "num_test": 4, **ingest},
    })


def test_stage_adds_only_new_incoming_problems_and_fails_above_the_reject_threshold(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    incoming = tmp_path / "data" / "incoming"
    problems = tmp_path / "data" / "problems"
    write_lines(incoming / "gsm8k" / "batch1.jsonl", [json.dumps(gsm8k_line(i)) for i in range(6)])
    main(stage_params(tmp_path, test_fraction=0.5))
    first = {split: read_jsonl(problems / f"{split}.jsonl") for split in ("train", "test")}
    assert sum(r["source"] == "incoming/gsm8k" for rows in first.values() for r in rows) == 6
    assert sum(map(len, first.values())) == 20 and read_jsonl(problems / "rejects.jsonl") == []
    report = json.loads((tmp_path / "reports" / "ingest.json").read_text())
    assert report["sources"]["incoming/gsm8k"]["kept"] == 6 and report["sources"]["generator"]["kept"] == 14

    # A second drop: two repeats, three new problems, one bad line, and a file in no format folder.
    write_lines(incoming / "gsm8k" / "batch2.jsonl", [json.dumps(gsm8k_line(i)) for i in range(4, 9)] + ["{oops"])
    write_lines(incoming / "notes.txt", ["what format is this?"])
    with pytest.raises(RecordError) as err:
        main(stage_params(tmp_path, test_fraction=0.5, max_reject_fraction=0.05))
    assert "source 'incoming/gsm8k': 1 of 12 records rejected (8.3%)" in str(err.value)
    assert f"source 'incoming': 1 of 1 records rejected (100.0%), above ingest.max_reject_fraction 0.05; " \
           f"first: {incoming / 'notes.txt'}:0: not under a format folder" in str(err.value)
    second = {split: read_jsonl(problems / f"{split}.jsonl") for split in ("train", "test")}
    assert sum(map(len, second.values())) == 23  # the rejects are written before the stage fails
    for split in ("train", "test"):  # earlier problems kept their split
        assert {r["id"] for r in first[split]} <= {r["id"] for r in second[split]}
    rejects = read_jsonl(problems / "rejects.jsonl")
    assert sorted((r["kind"], r["line"]) for r in rejects) == [("duplicate", 1), ("duplicate", 2),
                                                               ("malformed", 0), ("malformed", 6)]


@pytest.mark.skipif(not GSM8K.is_dir(), reason="GSM8K is not in ../shared/data/gsm8k")
def test_gsm8k_from_the_shared_folder():
    sources = [{"format": "gsm8k", "path": str(GSM8K / "train.jsonl"), "split": "train"},
               {"format": "gsm8k", "path": str(GSM8K / "test.jsonl"), "split": "test", "name": "gsm8k-test"}]
    result = build_splits(IngestParams(sources=sources), seed=0)
    first, raw = result.splits["train"][0], json.loads((GSM8K / "train.jsonl").read_text().splitlines()[0])
    *steps, answer = raw["answer"].split("\n")
    assert first == {"id": first["problem_id"], "problem_id": content_id(raw["question"]), "problem": raw["question"],
                     "answer": answer.removeprefix("#### "), "reference_steps": steps, "source": "gsm8k"}
    train, test = result.report["sources"]["gsm8k"], result.report["sources"]["gsm8k-test"]
    assert (train["records"], test["records"]) == (7473, 1319)
    for stats, split in ((train, "train"), (test, "test")):
        assert stats["kept"] + stats["rejects"] + stats["duplicates"] == stats["records"] == stats[split] + \
            stats["rejects"] + stats["duplicates"]
        assert stats["reject_fraction"] < 0.1
        assert set(stats["rejects_by_reason"]) <= {
            "reference_steps: the last calculator result N is not the answer N",
            "reference_steps: the last calculator result N is not the answer -N",
            "reference_steps: the last calculator result N.N is not the answer N",
            "reference_steps: the last calculator result -N is not the answer N",
            "reference_steps[N]: unreadable calculator annotation",
        }
    assert not {r["problem_id"] for r in result.splits["train"]} & {r["problem_id"] for r in result.splits["test"]}
    assert all(r["answer"].lstrip("-").replace(".", "").isdigit() for rows in result.splits.values() for r in rows)
    labeled = rollout_rows(result.splits["test"][:20], LabelParams(trajectories_per_problem=2,
                                                                    completions_per_step=2), seed=0)
    assert len(labeled) == 40 and all(len(r["labels"]) == len(r["steps"]) for r in labeled)


def test_prelabeled_sources_pass_validation_without_reference_solutions():
    from prmflow.config import ValidateParams
    from prmflow.labeling.validate import failed_checks, validate_datasets

    sources = [{"format": fmt, "path": str(FIXTURES / f"{fmt}.jsonl")}
               for fmt in ("prm800k", "math_shepherd", "trl_stepwise", "input_value_label")]
    result = build_splits(IngestParams(sources=sources, test_fraction=0.0), seed=0)
    rollouts = {split: rollout_rows(rows, LabelParams(), seed=0) for split, rows in result.splits.items()}
    results = validate_datasets(result.splits, rollouts, ValidateParams(min_negative_fraction=0.0))
    assert failed_checks(results) == []
