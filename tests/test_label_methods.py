"""Labeling methods on a scripted policy whose every completion is known: exact labels, values, calls."""

import random
from collections import Counter

import pytest

from prmflow.data.answers import extract_final_answer
from prmflow.config import LabelParams
from prmflow.labeling.engine import sample_and_label
from prmflow.labeling.label import label_summary
from prmflow.labeling.policy import NO_ANSWER, Continuation
from prmflow.labeling.step_labels import AnswerChecker, binary_search_labels, mc_labels

PROBLEM = {"id": "p1", "problem": "a scripted problem", "answer": "10", "reference_steps": ["s1", "s2", "s3", "s4"]}


class ScriptedPolicy:
    """A trajectory fixed in advance; completions of a k-step prefix cycle through `answers[k]`
    (a final answer with no new steps, or a whole Continuation)."""

    name = "scripted"

    def __init__(self, final_answer: str, answers: dict[int, list[str]], first_slip: int = -1):
        self.trajectory = Continuation(steps=["s1", "s2", "s3", "s4"], final_answer=final_answer,
                                       first_slip=first_slip)
        self.answers = answers
        self.calls = Counter()

    def sample_trajectory(self, problem, rng):
        return self.trajectory

    def complete(self, problem, prefixes, rng):
        return [self._continue(prefix) for prefix in prefixes]

    def _continue(self, prefix):
        assert prefix == self.trajectory.steps[:len(prefix)]
        k = len(prefix)
        answer = self.answers[k][self.calls[k] % len(self.answers[k])]
        self.calls[k] += 1
        return answer if isinstance(answer, Continuation) else Continuation(steps=[], final_answer=answer,
                                                                            first_slip=-1)


# Prefix of 1 step: 3 of 4 completions reach 10; of 2 steps: 1 of 4; of 3 steps: none.
SLIPS_AT_STEP_3 = {1: ["10", "10", "3", "10"], 2: ["10", "5", "5", "5"], 3: ["5"]}


def _run(method, policy, completions=4):
    """`method` as make_labeler calls it; binary search draws label.first_round_completions' default first."""
    rounds = {"first_round": LabelParams.first_round_completions} if method is binary_search_labels else {}
    return method(policy, PROBLEM, policy.trajectory, completions=completions, rng=random.Random(0),
                  check=AnswerChecker(), **rounds)


def test_mc_samples_every_proper_prefix_and_judges_the_full_one_by_its_answer():
    policy = ScriptedPolicy("7", SLIPS_AT_STEP_3)
    result = _run(mc_labels, policy)
    assert (result.labels, result.values) == (["+", "+", "-", "-"], [0.75, 0.25, 0.0, 0.0])
    assert (result.policy_calls, result.probed, dict(policy.calls)) == (12, [1, 2, 3], {1: 4, 2: 4, 3: 4})


def test_binary_search_probes_only_the_middle_prefixes_in_two_rounds():
    policy = ScriptedPolicy("7", SLIPS_AT_STEP_3)
    result = _run(binary_search_labels, policy)
    # good=0, bad=4 -> probe 2: round one "10", "5" hits (good=2) -> probe 3: "5", "5", then the other
    # two, no hit (bad=3); step 1 takes prefix 2's value.
    assert (result.labels, result.values) == (["+", "+", "-", "-"], [0.5, 0.5, 0.0, 0.0])
    assert (result.policy_calls, result.probed, dict(policy.calls)) == (6, [2, 3], {2: 2, 3: 4})


def test_binary_search_finds_an_error_in_the_first_step():
    policy = ScriptedPolicy("7", {1: ["5"], 2: ["5"]})
    result = _run(binary_search_labels, policy)
    assert (result.labels, result.values, result.probed) == (["-"] * 4, [0.0] * 4, [1, 2])
    assert result.policy_calls == 8


def test_binary_search_probes_every_prefix_of_a_trajectory_that_reaches_the_answer():
    # Prefix 2 never reaches 10: a slip the trajectory undid later. Prefix 3 needs its second round,
    # where one hit in 4 is confirmed by 4 more draws that hit again.
    policy = ScriptedPolicy("10", {1: ["10", "4"], 2: ["4"], 3: ["4", "4", "10", "4"]})
    result = _run(binary_search_labels, policy)
    assert (result.labels, result.values) == (["+", "-", "+", "+"], [0.5, 0.0, 0.25, 1.0])
    assert (result.policy_calls, dict(policy.calls)) == (14, {1: 2, 2: 4, 3: 8})


def test_binary_search_rejects_a_single_hit_that_does_not_repeat():
    # Prefix 2 reaches 10 once in 4 draws and never in 4 more: a lucky hit, so prefix 2 is bad.
    policy = ScriptedPolicy("7", {1: ["10"], 2: ["5", "5", "10", "5", "5", "5", "5", "5"]})
    result = _run(binary_search_labels, policy)
    assert (result.labels, result.values) == (["+", "-", "-", "-"], [1.0, 0.0, 0.0, 0.0])
    assert (result.policy_calls, result.probed, dict(policy.calls)) == (10, [1, 2], {1: 2, 2: 8})
    mc = _run(mc_labels, ScriptedPolicy("10", {1: ["10", "4"], 2: ["10"], 3: ["4", "10", "10", "10"]}))
    assert (mc.labels, mc.values, mc.policy_calls) == (["+"] * 4, [0.5, 1.0, 0.75, 1.0], 12)


def test_a_completion_that_repeats_the_trajectory_witnesses_the_longer_prefixes():
    repeats_all = Continuation(steps=["s2", "s3", "s4"], final_answer="10", first_slip=-1)
    policy = ScriptedPolicy("10", {1: [repeats_all]})
    result = _run(binary_search_labels, policy)
    assert (result.labels, result.values, result.probed, result.policy_calls) == (["+"] * 4, [1.0] * 4, [1], 2)
    # Wrong trajectory: the probe of prefix 2 repeats step 3 before it reaches 10, so prefix 3 is good too.
    repeats_one = Continuation(steps=["s3", "other"], final_answer="10", first_slip=-1)
    policy = ScriptedPolicy("7", {2: [repeats_one, "5"]})
    result = _run(binary_search_labels, policy)
    assert (result.labels, result.values) == (["+", "+", "+", "-"], [0.5, 0.5, 1.0, 0.0])
    assert (result.policy_calls, result.probed, dict(policy.calls)) == (2, [2], {2: 2})


@pytest.mark.parametrize("method, calls, values", [("mc", 2 * (1 + 3 * 2), [1.0, 0.5, 0.0, 0.0]),
                                                   ("binary_search", 2 * (1 + 2 * 2), [0.5, 0.5, 0.0, 0.0])])
def test_label_problem_counts_calls_and_measures_against_the_true_first_error(method, calls, values):
    policy = ScriptedPolicy("7", {1: ["10"], 2: ["10", "5"], 3: ["", NO_ANSWER]}, first_slip=2)
    params = LabelParams(method=method, trajectories_per_problem=2, completions_per_step=2)
    result = sample_and_label(policy, PROBLEM, params, seed=0)
    assert [row["values"] for row in result.rows] == [values, values]
    assert [row["first_error"] for row in result.rows] == [2, 2]
    assert result.policy_calls == calls
    assert result.unparseable_answers == 2 * 2  # the two completions of prefix 3, in each trajectory
    summary = label_summary(result.rows, [result])
    assert (summary["first_error_agreement"], summary["hard_label_agreement"]) == (1.0, 1.0)
    assert summary["policy_calls_per_labeled_step"] == calls / 8
    assert summary["negative_step_fraction"] == 0.5


def test_answer_checker_compares_numbers_exactly_and_other_answers_with_math_verify():
    check = AnswerChecker()
    verdicts = [check(p, r) for p, r in [("10", "10"), ("1/2", "0.5"), ("\\frac{1}{2}", "0.5"), ("\\frac{1}{2}", "0.5"),
                                        ("11", "10"), ("", "10"), (NO_ANSWER, "10"), ("\\frac{", "10")]]
    assert verdicts == [True, True, True, True, False, False, False, False]
    assert (check.checks, check.unparseable) == (8, 3)
    assert len(check._verdicts) == 2  # math-verify ran once per distinct non-numeric pair


@pytest.mark.parametrize("text, answer", [
    ("3 + 4 = 7\n#### 1,200", "1,200"),
    ("so the total is \\boxed{\\frac{1}{2}} in all", "\\frac{1}{2}"),
    ("The answer is 42.", "42"),
    ("The answer is 5. On reflection, \\boxed{6}", "6"),
    ("no marker at all", None),
])
def test_final_answer_extraction(text, answer):
    assert extract_final_answer(text) == answer


def test_compare_methods_labels_the_same_trajectories_with_each_method():
    from prmflow.config import IngestParams
    from prmflow.data.ingest import build_splits
    from prmflow.labeling.label import compare_methods

    problems = build_splits(IngestParams(num_train=30, num_test=5), seed=5).splits["train"]
    comparison = compare_methods(problems, LabelParams(trajectories_per_problem=2, completions_per_step=4), seed=5)
    mc, binary_search = comparison["mc"], comparison["binary_search"]
    assert set(comparison) == {"mc", "binary_search"}
    assert mc["solutions"] == binary_search["solutions"] == 2 * len(problems)
    assert mc["steps"] == binary_search["steps"]
    assert binary_search["policy_calls"] < mc["policy_calls"]
    assert 0.5 < mc["first_error_agreement"] <= 1 and 0.5 < binary_search["first_error_agreement"] <= 1
