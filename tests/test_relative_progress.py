"""Relative progress labels (GenPRM) on a scripted policy, beside Monte-Carlo labels of the same trajectory, and
the label stage's rows with their lineage on the simulated policy."""

import random

import pytest

from prmflow.config import LabelParams
from prmflow.labeling.engine import sample_and_label
from prmflow.labeling.simulated import SimulatedPolicy
from prmflow.labeling.step_labels import AnswerChecker, mc_labels, relative_progress_labels
from prmflow.labeling.suites import rollout_frame

from test_label_methods import PROBLEM, ScriptedPolicy


def run(method, policy, **options):
    return method(policy, PROBLEM, policy.trajectory, completions=4, rng=random.Random(0), check=AnswerChecker(),
                  **options)


def test_a_step_is_good_when_it_keeps_most_of_the_value_before_it():
    # Values of the prefixes of 0..3 steps: 4/4, 3/4, 2/4, 2/4, then the trajectory's own answer (right).
    answers = {0: ["10"], 1: ["10", "10", "3", "10"], 2: ["10", "5", "5", "10"], 3: ["10", "5", "10", "5"]}
    progress = run(relative_progress_labels, ScriptedPolicy("10", answers), threshold=0.8)
    assert progress.values == pytest.approx([0.75, 2 / 3, 1.0, 1.0])
    assert progress.labels == ["-", "-", "+", "+"] and progress.policy_calls == 16 and progress.probed == [0, 1, 2, 3]
    mc = run(mc_labels, ScriptedPolicy("10", answers))  # hard MC labels call every step with a hit good
    assert mc.labels == ["+"] * 4 and mc.values == [0.75, 0.5, 0.5, 1.0]


def test_steps_after_the_value_reached_zero_are_bad_unless_they_bring_it_back():
    answers = {0: ["10", "5"], 1: ["5"], 2: ["5"], 3: ["10", "5", "5", "5"]}
    progress = run(relative_progress_labels, ScriptedPolicy("7", answers), threshold=0.8)
    assert progress.values == [0.0, 0.0, 1.0, 0.0] and progress.labels == ["-", "-", "+", "-"]


def test_rows_carry_the_threshold_their_labels_rest_on_and_pass_the_values_rule():
    params = LabelParams(method="relative_progress", trajectories_per_problem=4, completions_per_step=4)
    problem = {"id": "p", "problem": "Ann has 3 apples and buys 4 more. How many now?", "answer": "7",
               "reference_steps": ["Ann has 3 + 4 = <<3+4=7>>7 apples."], "source": "generator"}
    rows = sample_and_label(SimulatedPolicy(params, seed=0), problem, params, seed=0).rows
    assert all(r["label_source"] == {"method": "relative_progress", "policy": "simulated",
                                     "completions_per_step": 4, "threshold": 0.8} for r in rows)
    assert list(rollout_frame({"train": rows, "test": []})["values_match_labels"]) == [True] * 4
