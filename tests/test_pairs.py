"""Step-level preference pairs: shared correct prefix, a `+` next step chosen over a `-` one."""

import json

from prmflow.cli import main
from prmflow.labeling.pairs import step_pairs


def rollout(problem_id, steps, labels):
    return {"problem_id": problem_id, "problem": f"problem {problem_id}", "steps": steps, "labels": labels}


def test_pairs_come_from_the_first_divergent_step_after_a_correct_prefix():
    rows = [
        rollout("p", ["a", "b", "c"], ["+", "+", "+"]),
        rollout("p", ["a", "b", "x"], ["+", "+", "-"]),
        rollout("p", ["a", "y", "z"], ["+", "-", "-"]),
        rollout("p", ["a", "b", "x"], ["+", "+", "-"]),  # a duplicate rollout gives no duplicate pair
        rollout("q", ["a", "w"], ["+", "-"]),  # another problem: never paired with p's rollouts
    ]
    pairs = step_pairs(rows)
    assert pairs == [
        {"prompt": "problem p\na\nb\n", "chosen": "c", "rejected": "x", "problem_id": "p", "step": 2},
        {"prompt": "problem p\na\n", "chosen": "b", "rejected": "y", "problem_id": "p", "step": 1},
    ]


def test_no_pair_after_an_incorrect_prefix_or_between_equal_labels():
    rows = [rollout("p", ["a", "b", "c"], ["-", "-", "+"]), rollout("p", ["a", "b", "d"], ["-", "-", "-"]),
            rollout("p", ["a", "e"], ["-", "+"]), rollout("p", ["a", "f"], ["-", "+"])]
    assert step_pairs(rows) == []


def test_pairs_command_writes_dpo_rows(tmp_path, capsys):
    source = tmp_path / "rollouts.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in [
        rollout("p", ["s1", "good"], ["+", "+"]), rollout("p", ["s1", "bad"], ["+", "-"])]))
    out = tmp_path / "pairs" / "train.jsonl"
    main(["pairs", str(source), "--output", str(out), "--separator", " | "])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [{"prompt": "problem p | s1 | ", "chosen": "good", "rejected": "bad", "problem_id": "p", "step": 1}]
    assert "1 step-level preference pairs" in capsys.readouterr().out
