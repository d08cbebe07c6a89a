"""The evaluate stage: the validation/test split, external sets, the zero-shot baseline, the whole stage."""

import json
import math
import random
from pathlib import Path

import pytest

from prmflow.config import CombineParams, ConfigError, EvaluateParams, ModelParams, params_from_dict
from prmflow.evaluation.bootstrap import bootstrap_interval
from prmflow.evaluation.best_of_n import evaluate_external
from prmflow.evaluation.comparison import compare_scorers, comparison, validated_process_weight
from prmflow.evaluation.heldout_metrics import evaluate_solutions, headline_resampled, in_validation, resampled_metrics
from prmflow.evaluation.inputs import read_external
from prmflow.param_rules import GATE_METRICS

from tiny_models import build_public_prm, build_tiny_orm, build_tiny_prm, log_version, tracking_store

FIXTURES = Path(__file__).parent / "fixtures" / "evaluate"
TINY_MODEL = ModelParams(vocab_size=300, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                         max_length=512)


def problem_ids(validation: bool, count: int = 1) -> list[str]:
    return [p for p in (f"p{i}" for i in range(100)) if in_validation(p, 0.5) == validation][:count]


def rollout(problem_id: str, labels: list[str], first_error: int, answer: str, correct: bool) -> dict:
    return {"problem_id": problem_id, "problem": f"problem {problem_id}", "steps": [f"step {i}" for i in
                                                                                     range(len(labels))],
            "labels": labels, "first_error": first_error, "predicted_answer": answer, "correct": correct}


def test_threshold_is_chosen_on_the_validation_problems_and_reported_on_the_others():
    (val,), (test,) = problem_ids(True), problem_ids(False)
    rows = [rollout(val, ["+", "-"], 1, "8", False), rollout(val, ["+", "+"], -1, "7", True),
            rollout(test, ["+", "-"], 1, "8", False), rollout(test, ["+", "+"], -1, "7", True)]
    scores = [[0.9, 0.3], [0.8, 0.6], [0.9, 0.5], [0.7, 0.55]]
    m = evaluate_solutions(rows, scores, EvaluateParams(threshold=0.5, validation_fraction=0.5)).metrics
    # validation: 0.45, the midpoint of 0.3 and 0.6 (never a score itself), catches the error at step 1 and passes
    # the correct solution (F1 1)
    assert (m["first_error_threshold"], m["first_error_validation_f1"]) == (pytest.approx(0.45), 1.0)
    # on the test problem 0.525 would be perfect, but the erroneous step's 0.5 passes 0.45: F1 0 is what is reported
    assert (m["first_error_accuracy_erroneous"], m["first_error_accuracy_correct"], m["first_error_f1"]) == (
        0.0, 1.0, 0.0)
    assert (m["solutions"], m["validation_solutions"], m["test_solutions"], m["test_steps"]) == (4, 2, 2, 4)
    # step level on the test part at the fixed threshold 0.5: nothing is below it
    assert (m["step_accuracy"], m["negative_f1"], m["step_auroc"]) == (0.75, 0.0, 1.0)
    # bins 5 {0.5 -, 0.55 +}, 7 {0.7 +}, 9 {0.9 +}
    assert m["step_ece"] == pytest.approx((2 * 0.025 + 0.3 + 0.1) / 4)
    # best-of-N on the test problem: N=1 takes the wrong first sample; at N=2 min picks 0.55 (right), the
    # vote tie "8"/"7" goes to the first answer (wrong)
    assert (m["best_of_n_prm_min_at_1"], m["best_of_n_oracle_at_1"]) == (0.0, 0.0)
    assert (m["best_of_n_prm_min"], m["best_of_n_majority"], m["best_of_n_pass_at_1"], m["best_of_n_oracle"],
            m["best_of_n_n"]) == (1.0, 0.0, 0.5, 1.0, 2)
    assert (m["answers_repeated_right_share"], m["answers_repeated_wrong_share"]) == (0.0, 0.0)


def test_best_of_n_never_picks_a_candidate_that_stopped_before_its_answer():
    (test,) = problem_ids(False)
    # The first sample stopped after one right step (no answer: the simulated policy's NO_ANSWER): with `min` it
    # outscores the complete right solution, whose second step looks a little less sure.
    rows = [rollout(test, ["+"], -1, "undefined", False), rollout(test, ["+", "+"], -1, "7", True),
            rollout(test, ["+", "-"], 1, "", False)]
    m = evaluate_solutions(rows, [[0.95], [0.9, 0.8], [0.99]], EvaluateParams(validation_fraction=0)).metrics
    assert (m["best_of_n_prm_min"], m["best_of_n_prm_prod"], m["test_solutions_without_final_answer"]) == (1.0, 1.0, 2)


def test_comparison_scores_every_scorer_on_the_same_reported_solutions():
    (t1, t2), (v1,) = problem_ids(False, 2), problem_ids(True)
    rows = [rollout(t1, ["+", "-"], 1, "8", False), rollout(t1, ["+", "+"], -1, "7", True),
            rollout(t2, ["-"], 0, "3", False), rollout(t2, ["+"], -1, "5", True),
            rollout(v1, ["+"], -1, "1", True),   # validation part: not reported
            rollout(t2, ["+"], -1, "5", True)]   # the ORM cannot score it: left out for every scorer
    prm = [[0.9, 0.3], [0.8, 0.6], [0.7], [0.4], [0.5], [0.95]]
    orm = [[0.6, 0.2], [0.5, 0.9], [0.35], [0.8], [0.1], []]
    compared = comparison(prm, 0.5, orm, "min", CombineParams(process_weight=0.5, outcome_weight=0.5))
    assert compared["combined"].solution == pytest.approx([0.25, 0.75, 0.525, 0.6, 0.3, None])
    m = compare_scorers(rows, compared, validation_fraction=0.5)
    assert m["compare_solutions"] == 4 and not any(k.startswith("compare_zero_shot") for k in m)
    # PRM (min): right {0.6, 0.4} against wrong {0.3, 0.7}: 2 of 4 pairs ordered; N=2 picks r1 (right), r2 (wrong)
    assert (m["compare_prm_solution_auroc"], m["compare_prm_best_of_n_at_1"], m["compare_prm_best_of_n_at_2"]) == (
        0.5, 0.0, 0.5)
    # steps {0.9, 0.8, 0.6, 0.4} `+` against {0.3, 0.7} `-`: 6 of 8; first errors at 0.5: 1 of 2 each way
    assert (m["compare_prm_step_auroc"], m["compare_prm_first_error_f1"]) == (0.75, 0.5)
    # ORM (last tag): right {0.9, 0.8} above wrong {0.2, 0.35}; its tags are values: a separate key, no F1
    assert (m["compare_orm_solution_auroc"], m["compare_orm_best_of_n_at_2"], m["compare_orm_step_value_auroc"]) == (
        1.0, 1.0, 1.0)
    assert "compare_orm_step_auroc" not in m and "compare_orm_first_error_f1" not in m
    assert (m["compare_combined_solution_auroc"], m["compare_combined_best_of_n_at_2"]) == (1.0, 1.0)
    assert "compare_combined_step_auroc" not in m
    # references at N=2: the vote ties go to the first (wrong) answer; sizes stop at 2 (r5 is out)
    assert (m["compare_majority_best_of_n_at_2"], m["compare_pass_at_1_best_of_n_at_2"],
            m["compare_oracle_best_of_n_at_2"]) == (0.0, 0.5, 1.0)
    assert sorted(k for k in m if k.startswith("compare_prm_best_of_n")) == [
        "compare_prm_best_of_n_at_1", "compare_prm_best_of_n_at_2"]


def test_validated_process_weight_is_the_best_solution_auroc_on_the_validation_part():
    v1, v2, v3, v4 = problem_ids(True, 4)
    (t1,) = problem_ids(False)
    rows = [rollout(v1, ["+"], -1, "1", True), rollout(v2, ["-"], 0, "2", False), rollout(v3, ["-"], 0, "3", False),
            rollout(v4, ["+"], -1, "4", True),
            rollout(t1, ["-"], 0, "5", False)]  # reported part: would pull the weight to 0 if it counted
    prm = [0.9, 0.1, 0.6, 0.4, 0.95]
    orm = [0.5, 0.5, 0.1, 0.85, 0.0]
    # PRM alone orders 3 of 4 (right, wrong) pairs, the ORM 3.5; w x PRM + (1 - w) x ORM orders all four for
    # 0 < w < 0.79, so the grid's largest such weight wins.
    assert validated_process_weight(rows, prm, orm, validation_fraction=0.5) == 0.7
    assert validated_process_weight(rows[:1] + rows[3:], prm[:1] + prm[3:], orm[:1] + orm[3:], 0.5) is None


def test_resampled_metrics_at_weight_one_are_the_reported_metrics_exactly(labeled_rows):
    rng = random.Random(5)
    scores = [[rng.choice([0.2, 0.4, 0.5, 0.6, 0.8, 0.9]) for _ in row["steps"]] for row in labeled_rows]
    params = EvaluateParams(threshold=0.5, validation_fraction=0.5)
    reported = evaluate_solutions(labeled_rows, scores, params).metrics
    resampled = resampled_metrics(labeled_rows, scores, params)
    assert {"step_auroc", "step_accuracy", "negative_f1", "first_error_f1", "best_of_n_prm_min", "best_of_n_majority",
            "best_of_n_prm_last_at_1", "best_of_n_majority_at_2"} <= set(resampled)
    assert set(GATE_METRICS) <= set(resampled)  # the gate can test any metric it may be set to
    for name, r in resampled.items():
        assert r.point() == reported[name], name
        assert len(set(r.problems)) == len({row["problem_id"] for row in labeled_rows
                                             if not in_validation(row["problem_id"], 0.5)}), name
    low, high = bootstrap_interval(resampled["step_auroc"], 200, seed=0)
    assert low < reported["step_auroc"] < high
    headline = headline_resampled(labeled_rows, scores, EvaluateParams(aggregation="prod"))
    assert {k for k in headline if not k.startswith("best_of_n_prm_prod")} == {
        "step_auroc", "first_error_f1", "best_of_n_majority", "best_of_n_majority_at_1", "best_of_n_majority_at_2",
        "best_of_n_majority_at_3"}


def test_answer_agreement_counts_problems_where_two_samples_agree():
    from prmflow.data.answers import answer_agreement  # also in reports/labeling.json

    rows = [rollout("a", ["+"], -1, "7", True), rollout("a", ["+"], -1, "7", True), rollout("a", ["-"], 0, "8", False),
            rollout("b", ["-"], 0, "3", False), rollout("b", ["-"], 0, "3", False), rollout("b", ["+"], -1, "5", True),
            rollout("c", ["-"], 0, "1", False), rollout("c", ["-"], 0, "2", False)]
    assert answer_agreement(rows) == {
        "answers_repeated_right_share": 1 / 3, "answers_repeated_wrong_share": 1 / 3}


def test_too_few_problems_to_split_reports_everything_at_the_fixed_threshold():
    (test,) = problem_ids(False)
    rows = [rollout(test, ["+", "-"], 1, "8", False), rollout(test, ["+", "+"], -1, "7", True),
            rollout(test, ["-"], 0, "9", False)]
    m = evaluate_solutions(rows, [[0.9, 0.4], [0.8, 0.7], []], EvaluateParams(threshold=0.5)).metrics
    assert (m["first_error_threshold"], m["validation_solutions"], m["test_solutions"], m["unscored_solutions"]) == (
        0.5, 0, 2, 1)
    assert math.isnan(m["first_error_validation_f1"]) and m["first_error_f1"] == 1.0


def test_external_outcome_and_processbench_sets():
    outcome = read_external({"name": "bon", "path": str(FIXTURES / "outcome.jsonl"), "format": "outcome"})
    m = evaluate_external("outcome", outcome, [[0.9, 0.8], [0.9, 0.2], [0.7, 0.3], [0.8, 0.6]], 0.5, "min")
    # min picks the right solution of g1 (0.8 > 0.2) and the wrong one of g2 (0.6 > 0.3); vote ties go first
    assert (m["best_of_n_prm_min"], m["best_of_n_majority"], m["best_of_n_oracle"], m["best_of_n_pass_at_1"]) == (
        0.5, 1.0, 1.0, 0.5)
    assert m["solution_auroc"] == 0.75  # right {0.8, 0.3} against wrong {0.2, 0.6}: 3 of 4 pairs ordered
    bench = read_external({"name": "pb", "path": str(FIXTURES / "processbench.jsonl"), "format": "processbench"})
    m = evaluate_external("processbench", bench, [[0.9, 0.4], [0.8, 0.7], [0.6, 0.9]], 0.5, "min")
    assert (m["first_error_accuracy_erroneous"], m["first_error_accuracy_correct"]) == (0.5, 1.0)
    assert m["first_error_f1"] == pytest.approx(2 / 3) and m["solutions"] == 3


def test_external_errors_name_the_file_line_and_field(tmp_path):
    bad = tmp_path / "bench.jsonl"
    bad.write_text('{"problem": "p", "steps": ["a"], "label": -1}\n{"problem": "p", "steps": ["a"], "label": 3}\n')
    with pytest.raises(ValueError, match=rf"{bad}:2: label: expected -1 or a step index below 1, got 3"):
        read_external({"name": "pb", "path": str(bad), "format": "processbench"})
    with pytest.raises(FileNotFoundError, match="evaluate.external 'gone'"):
        read_external({"name": "gone", "path": str(tmp_path / "none.jsonl"), "format": "outcome"})
    with pytest.raises(ConfigError) as err:
        params_from_dict({"evaluate": {"validation_fraction": 1.0, "external": [
            {"name": "a", "path": "x.jsonl", "format": "csv"}, {"name": "a", "path": "y.jsonl", "format": "outcome",
                                                                 "limit": 3}]}})
    message = str(err.value)
    for expected in ("evaluate.validation_fraction: must be below 1", "evaluate.external[0].format: 'csv'",
                     "evaluate.external[1].limit: unknown key", "evaluate.external: name 'a' is listed twice"):
        assert expected in message


def candidates(problem_id: str, correct_at: int | None, count: int = 4) -> list[dict]:
    """`count` candidates of one problem, each with its own answer (so the vote takes the first), right only at
    `correct_at` (None: none is right)."""
    return [{"problem_id": problem_id, "problem": f"problem {problem_id}", "steps": ["a step"],
             "predicted_answer": f"{problem_id}-{i}", "correct": i == correct_at} for i in range(count)]


def test_external_best_of_n_gets_intervals_and_paired_differences_from_a_random_pick_and_the_vote():
    # 6 problems with one right candidate (the last), which the PRM scores highest; 2 with none right.
    rows = [row for i in range(6) for row in candidates(f"q{i}", 3)] + [
        row for i in range(6, 8) for row in candidates(f"q{i}", None)]
    scores = [[0.9] if row["correct"] else [0.2] for row in rows]
    m = evaluate_external("outcome", rows, scores, 0.5, "min", samples=500, seed=3)
    assert (m["best_of_n_prm_min"], m["best_of_n_majority"], m["best_of_n_pass_at_1"]) == (0.75, 0.0, 0.1875)
    assert m["best_of_n_prm_min_minus_pass_at_1"] == 0.5625 and m["best_of_n_prm_min_minus_majority"] == 0.75
    for name in ("best_of_n_prm_min", "best_of_n_pass_at_1", "best_of_n_prm_min_minus_pass_at_1",
                 "best_of_n_prm_min_minus_majority", "best_of_n_prm_min_at_2"):
        assert m[f"{name}_ci_low"] <= m[name] <= m[f"{name}_ci_high"], name
    # Per problem the PRM gains 0.75 over a random pick or 0: every resample's mean gain lies in (0, 0.75].
    assert 0 < m["best_of_n_prm_min_minus_pass_at_1_ci_low"] < 0.5625 < m["best_of_n_prm_min_minus_pass_at_1_ci_high"]
    assert m["best_of_n_prm_min_minus_pass_at_1_ci_high"] <= 0.75
    assert not any(k.endswith("_ci_low") for k in evaluate_external("outcome", rows, scores, 0.5, "min"))


def test_best_of_n_ignores_the_scores_of_problems_whose_candidates_agree(rng):
    # bench/real_candidates.py --mixed-only scores only mixed problems: the rest cannot change any pick's outcome.
    rows = [row for i in range(5) for row in candidates(f"m{i}", i % 4)] + [
        {**row, "correct": True} for row in candidates("right", 0)] + candidates("wrong", None)
    mixed = [[rng.random()] for _ in range(20)]
    scored = evaluate_external("outcome", rows, mixed + [[rng.random()] for _ in range(8)], 0.5, "min", 200, 1)
    constant = evaluate_external("outcome", rows, mixed + [[0.5]] * 8, 0.5, "min", 200, 1)
    assert {k: v for k, v in scored.items() if k != "solution_auroc"} == {
        k: v for k, v in constant.items() if k != "solution_auroc"}


def test_an_external_file_can_be_cut_to_its_first_problems(tmp_path):
    path = tmp_path / "bon.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for i in range(5) for row in candidates(f"q{i}", 0)))
    rows = read_external({"name": "bon", "path": str(path), "format": "outcome", "problems": 3})
    assert [row["problem_id"] for row in rows] == [f"q{i}" for i in range(3) for _ in range(4)]
    assert len(read_external({"name": "bon", "path": str(path), "format": "outcome"})) == 20
    with pytest.raises(ConfigError) as err:
        params_from_dict({"evaluate": {"external": [
            {"name": "a", "path": "x.jsonl", "format": "outcome", "problems": 0},
            {"name": "b", "path": "y.jsonl", "format": "outcome", "problems": "all"}]}})
    assert "evaluate.external[0].problems: expected a positive integer, got 0" in str(err.value)
    assert "evaluate.external[1].problems: expected a positive integer, got 'all'" in str(err.value)


def test_scorer_entries_are_checked():
    with pytest.raises(ConfigError) as err:
        params_from_dict({"evaluate": {"scorers": [
            {"name": "prm", "path": "x"}, {"name": "a-b", "path": "", "format": "gguf"}, {"name": "c", "path": "y"},
            {"name": "c", "path": "z", "step_tag": "ки"}]}})
    message = str(err.value)
    for expected in ("evaluate.scorers[0].name: 'prm' must be letters, digits and underscores, and not a built-in",
                     "evaluate.scorers[1].name: 'a-b' must be letters, digits and underscores",
                     "evaluate.scorers[1].path: expected a non-empty string", "evaluate.scorers[1].format: 'gguf'",
                     "evaluate.scorers[3].step_tag: unknown key", "evaluate.scorers: name 'c' is listed twice"):
        assert expected in message
    assert params_from_dict({"evaluate": {"scorers": [{"name": "shepherd", "path": "ckpt"}]}}).evaluate.scorers


@pytest.fixture(scope="module")
def tiny_prm_dir(tmp_path_factory):
    return build_tiny_prm(tmp_path_factory.mktemp("prm") / "prm", seed=5, max_length=TINY_MODEL.max_length)


def test_zero_shot_rebuilds_the_base_model_and_batches_prefixes_exactly(tiny_prm_dir):
    import torch
    from transformers import AutoTokenizer, set_seed

    from prmflow.scoring.modeling import build_model
    from prmflow.scoring.zero_shot import ZeroShotVerifier

    verifier = ZeroShotVerifier.untrained_base(TINY_MODEL, tiny_prm_dir, seed=3)
    set_seed(3)  # as train.main: the PRM's starting weights
    start = build_model(TINY_MODEL, AutoTokenizer.from_pretrained(tiny_prm_dir)).state_dict()
    assert all(torch.equal(start[k], v) for k, v in verifier.model.state_dict().items())

    solutions = [("Ava has 3 apples and buys 2 more.", ["Ava buys 2 apples.", "Ava has 3 + 2 = <<3+2=5>>5 apples."]),
                 ("Tom has 9 pens.", ["Tom gives away 4 - 1 = <<4-1=3>>3 pens."]),
                 ("Tom has 1 pen.", ["Tom has " + "1 + 1 = 2, " * 15] * 4)]  # only a prefix fits 512 tokens
    batched = verifier.score_batch(solutions, batch_size=64)
    assert [len(s) for s in batched[:2]] == [2, 1] and 0 < len(batched[2]) < 4
    one_by_one = verifier.score_batch(solutions, batch_size=1)  # no padding at all
    assert [len(s) for s in one_by_one] == [len(s) for s in batched]
    assert sum(batched, []) == pytest.approx(sum(one_by_one, []), abs=1e-5)
    # one prefix by hand: log p(Yes) - log p(No), each summed over its tokens, through a sigmoid
    sequence = verifier.prefix_sequences(*solutions[0])[1]
    with torch.no_grad():
        def log_p(answer: list[int]) -> float:
            logits = verifier.model(input_ids=torch.tensor([sequence + answer])).logits[0].log_softmax(-1)
            return sum(logits[len(sequence) + k - 1, tok].item() for k, tok in enumerate(answer))
        reward = log_p(verifier.answer_ids[0]) - log_p(verifier.answer_ids[1])
    assert batched[0][1] == pytest.approx(1 / (1 + math.exp(-reward)), abs=1e-5)


def test_stage_writes_metrics_plots_summary_and_adds_the_champion_when_there_is_one(tmp_path, tiny_prm_dir,
                                                                                    labeled_rows):
    import shutil

    from mlflow import MlflowClient

    from prmflow.evaluation import evaluate
    from prmflow.config import Params
    from prmflow.jsonl import write_jsonl

    write_jsonl(tmp_path / "data" / "rollouts" / "test.jsonl", labeled_rows)
    shutil.copytree(tiny_prm_dir, tmp_path / "models" / "prm")
    build_tiny_orm(tmp_path / "models" / "orm", seed=6, max_length=TINY_MODEL.max_length)
    with tracking_store(tmp_path) as uri:
        params = params_from_dict({
            "base": {"data_dir": str(tmp_path / "data"), "models_dir": str(tmp_path / "models"),
                     "reports_dir": str(tmp_path / "reports"), "mlflow_tracking_uri": uri,
                     "mlflow_experiment": "prmflow-test"},
            "model": {k: getattr(TINY_MODEL, k) for k in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                                                          "intermediate_size", "max_length")},
            "evaluate": {"champion_baseline": True, "external": [
                {"name": "bon", "path": str(FIXTURES / "outcome.jsonl"), "format": "outcome"},
                {"name": "pb", "path": str(FIXTURES / "processbench.jsonl"), "format": "processbench"}],
                "scorers": [{"name": "own", "path": str(tiny_prm_dir)},  # the trained PRM again: the same row
                            {"name": "shepherd", "path": str(build_public_prm(tmp_path / "shepherd", "gpt2")),
                             "format": "math_shepherd"}]},
        })
        assert isinstance(params, Params)
        evaluate.main(params)
        reports = tmp_path / "reports"
        metrics = json.loads((reports / "metrics.json").read_text())
        assert all(isinstance(v, (int, float)) for v in metrics.values())
        assert metrics["test_solutions"] + metrics["validation_solutions"] == metrics["solutions"] == len(labeled_rows)
        assert {"step_ece", "first_error_threshold", "zero_shot_first_error_f1", "zero_shot_step_auroc",
                "external_bon_best_of_n_prm_min", "external_bon_solution_auroc", "external_pb_first_error_f1",
                "best_of_n_prm_min_at_1", "best_of_n_prm_mean_at_2", "compare_solutions"} <= set(metrics)
        for scorer in ("zero_shot", "prm", "orm", "combined"):
            assert {f"compare_{scorer}_solution_auroc", f"compare_{scorer}_best_of_n_at_1",
                    f"compare_{scorer}_best_of_n_at_2"} <= set(metrics), scorer
        assert {"compare_prm_step_auroc", "compare_zero_shot_step_auroc", "compare_orm_step_value_auroc"} <= set(
            metrics)
        assert metrics["compare_solutions"] == metrics["test_solutions"]  # every scorer scored every solution
        for key in ("step_auroc", "first_error_f1", "best_of_n_prm_min_at_1", "best_of_n_majority_at_3",
                    "best_of_n_prm_min", "compare_orm_solution_auroc", "compare_combined_solution_auroc"):
            assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"], key
        assert "best_of_n_prm_mean_at_1_ci_low" not in metrics  # intervals for the configured aggregation only
        for key in ("step_auroc", "first_error_f1", "first_error_threshold", "best_of_n_prm_min"):
            assert metrics[f"scorer_own_{key}"] == metrics[key], key
        for key in ("solution_auroc", "step_auroc", "first_error_f1", "best_of_n_at_2"):
            assert metrics[f"compare_own_{key}"] == metrics[f"compare_prm_{key}"], key
            assert f"compare_shepherd_{key}" in metrics
        assert metrics["scorer_shepherd_test_solutions"] == metrics["test_solutions"]
        assert not any(k.startswith("champion_") for k in metrics)
        summary = (reports / "summary.md").read_text()
        assert "| zero-shot prompt (base model) |" in summary and "champion: skipped, no prm@champion" in summary
        assert "| trained ORM |" in summary and "| combined PRM + ORM |" in summary and "(values)" in summary
        assert summary.count("| shepherd (evaluate.scorers) |") == 2  # the scorers table and the comparison
        assert "ORM: its solution score is P(+) at the last step tag" in summary and "External set `pb`" in summary
        assert f"| trained PRM | {metrics['step_auroc']:.3f} [{metrics['step_auroc_ci_low']:.3f}, " in summary
        assert "95% interval of a bootstrap over the reported problems" in summary
        gain = metrics["external_bon_best_of_n_prm_min_minus_pass_at_1"]  # the stage passes its bootstrap on
        assert metrics["external_bon_best_of_n_prm_min_minus_pass_at_1_ci_low"] <= gain
        assert (f"- best_of_n_prm_min_minus_pass_at_1: {gain:.3f} "
                f"[{metrics['external_bon_best_of_n_prm_min_minus_pass_at_1_ci_low']:.3f}, ") in summary
        curve = json.loads((reports / "plots" / "best_of_n.json").read_text())
        assert [row["n"] for row in curve] == [1, 2, 3]
        for name in ("roc", "reliability", "best_of_n"):
            assert (reports / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        run = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("prmflow-test").experiment_id])[0]
        assert {"metrics.json", "summary.md", "roc.png", "reliability.png", "best_of_n.png"} <= {
            a.path for a in MlflowClient().list_artifacts(run.info.run_id)}

        # The same model as champion: its row matches the PRM's exactly.
        MlflowClient().set_registered_model_alias("prm", "champion", log_version(tiny_prm_dir))
        evaluate.main(params)
        metrics = json.loads((reports / "metrics.json").read_text())
        assert metrics["champion_step_auroc"] == metrics["step_auroc"]
        assert metrics["champion_first_error_f1"] == metrics["first_error_f1"]
        assert "| registry champion |" in (reports / "summary.md").read_text()
