"""Final answers as real generators state them: the strict and flexible readings on a table of sentence styles
and traps (tests/fixtures/answers/sentences.jsonl), the targets on QwQ-32B's real candidates, and the same
reading behind serving's ranking, evaluate's best-of-N and the TRL reward."""

import json
from collections import defaultdict
from pathlib import Path

import pytest

from prmflow.data.answers import extract_final_answer, reading_agreement, states_final_answer
from prmflow.jsonl import read_jsonl

TABLE = [json.loads(line) for line in (Path(__file__).parent / "fixtures/answers/sentences.jsonl").open()]
STRICTPRM = Path(__file__).resolve().parents[2] / "shared" / "data" / "strictprm"
needs_strictprm = pytest.mark.skipif(not (STRICTPRM / "gsm8k_bon16_dev.jsonl").exists(),
                                     reason=f"the real QwQ-32B candidates are not at {STRICTPRM}")


@pytest.mark.parametrize("row", TABLE, ids=lambda row: row["style"])
def test_sentence_table(row):
    assert extract_final_answer(row["text"], "strict") == row["strict"]
    assert extract_final_answer(row["text"], "flexible") == row["flexible"]


def test_an_unknown_reading_is_named():
    with pytest.raises(ValueError, match="answer reading 'loose' is not one of strict, flexible"):
        extract_final_answer("#### 3", "loose")


@needs_strictprm
def test_the_targets_hold_on_the_real_candidates():
    gsm8k = reading_agreement(read_jsonl(STRICTPRM / "gsm8k_bon16_dev.jsonl"), "flexible")
    assert gsm8k["right_read_right"] >= 0.97 and gsm8k["wrong_read_right_net"] <= 0.005, gsm8k
    math500 = reading_agreement(read_jsonl(STRICTPRM / "math500_bon16_dev.jsonl"), "flexible")
    assert math500["agrees_with_source"] >= 0.95, math500


def teacher_rows(limit: int) -> tuple[list[dict], list[list[float]]]:
    """The first `limit` GSM8K candidates and their Qwen2.5-Math-PRM step scores, as the source cached them."""
    rows = read_jsonl(STRICTPRM / "gsm8k_bon16_dev.jsonl")[:limit]
    scores = {r["id"]: r["step_scores"]["qwen_prm"] for r in read_jsonl(STRICTPRM / "teacher_step_scores_dev.jsonl")}
    return rows, [scores[row["id"]] for row in rows]


@needs_strictprm
def test_servings_ranking_rule_and_evaluate_give_one_best_of_n():
    """docs/serving.md's rule (rank by the served `has_final_answer`, then `score`) picks what evaluate picks."""
    from prmflow.config import Params
    from prmflow.evaluation.best_of_n import evaluate_external
    from prmflow.scoring.aggregation import aggregate
    from prmflow.serving.scorer import ServingConfig

    rows, scores = teacher_rows(800)
    served = ServingConfig.from_params(Params())
    assert served.answer_reading == Params().evaluate.answer_reading == "flexible"
    assert ServingConfig.from_model_config({"answer_reading": "strict"}).answer_reading == "strict"
    groups = defaultdict(list)
    for row, s in zip(rows, scores):
        groups[row["problem_id"]].append(((states_final_answer(row["steps"], served.answer_reading),
                                           aggregate(s, "min")), row["correct"]))
    serving = sum(max(group, key=lambda pair: pair[0])[1] for group in groups.values()) / len(groups)
    evaluated = evaluate_external("outcome", rows, scores, 0.5, "min", answer_reading=served.answer_reading)
    assert evaluated["best_of_n_prm_min"] == pytest.approx(serving)
    # What it was: the file's `predicted_answer` against the marker-only reading, two numbers for one question.
    strict = evaluate_external("outcome", rows, scores, 0.5, "min", answer_reading="strict")
    assert strict["solutions_without_final_answer"] > evaluated["solutions_without_final_answer"]


@needs_strictprm
def test_the_trl_reward_of_a_right_sentence_ending_completion_is_the_prm_score(labeled_rows, tmp_path):
    from tiny_models import train_tiny_model

    from prmflow.integrations.client import PRMClient, RewardConfig
    from prmflow.integrations.trl import prm_reward

    right = [row for row in read_jsonl(STRICTPRM / "gsm8k_bon16_dev.jsonl")
             if row["correct"] and extract_final_answer("\n".join(row["steps"]), "strict") is None][:3]
    assert len(right) == 3
    model_dir = train_tiny_model(labeled_rows, tmp_path / "prm", epochs=1)["dir"]
    problems, completions = [r["problem"] for r in right], ["\n\n".join(r["steps"]) for r in right]
    rewards = prm_reward(model=str(model_dir))(prompts=problems, completions=completions)
    scored = PRMClient(RewardConfig(model=str(model_dir))).score(problems, completions)
    assert all(r.has_final_answer and r.score is not None for r in scored)
    assert rewards == pytest.approx([r.score for r in scored]) and 0.0 not in rewards


def test_label_answer_reading_reaches_the_language_model_policies_text():
    from prmflow.config import LabelParams
    from prmflow.labeling.completion_text import finish

    generated = "She has 3 + 4 = 7 apples.\nTherefore, she has 7 apples.\n"
    steps = ["She has 3 + 4 = 7 apples.", "Therefore, she has 7 apples."]
    assert LabelParams().answer_reading == "strict" and finish(generated) == (steps, "")
    assert finish(generated, "flexible") == (steps, "7")
    assert finish("She has 3 + 4 = 7 apples.\nTherefore, she has", "flexible")[1] == ""  # cut by max_new_tokens
