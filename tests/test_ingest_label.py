import random
from fractions import Fraction

from prmflow.data.calc import ANNOTATION, annotation_result, parse_step
from prmflow.config import IngestParams, LabelParams
from prmflow.data.generator import generate_problems
from prmflow.data.ingest import build_splits, check_problem
from prmflow.labeling.engine import first_error, sample_and_label
from prmflow.labeling.label import label_summary
from prmflow.labeling.simulated import MISCONCEPTIONS, SimulatedPolicy


def test_generator_is_deterministic_and_within_bounds():
    settings = IngestParams(min_steps=2, max_steps=6, max_operand=20)
    a = generate_problems(50, seed=3, settings=settings)
    b = generate_problems(50, seed=3, settings=settings)
    assert a == b
    assert len({p["problem"] for p in a}) == 50
    for problem in a:
        assert 2 <= len(problem["reference_steps"]) <= 6
        assert all(ANNOTATION.search(s) for s in problem["reference_steps"])
        assert annotation_result(problem["reference_steps"][-1]) == Fraction(problem["answer"])
        assert check_problem({**problem, "id": "x"}) is None


def test_splits_are_disjoint_and_rejects_keep_their_reason():
    result = build_splits(IngestParams(num_train=30, num_test=10), seed=1)
    splits = result.splits
    assert (len(splits["train"]), len(splits["test"]), result.rejects) == (30, 10, [])
    assert not {p["id"] for p in splits["train"]} & {p["id"] for p in splits["test"]}
    bad = {"id": "x", "problem": "p", "answer": "5", "reference_steps": ["2 + 2 = <<2+2=5>>5"]}
    assert check_problem(bad) == "reference_steps[0]: annotation arithmetic is wrong"
    assert check_problem({**bad, "answer": "five"}) == "answer: not a number: 'five'"


def _problem():
    return {"id": "p1", "problem": "Ava has 12 apples...", "answer": "34",
            "reference_steps": ["Ava has 12 + 5 = <<12+5=17>>17 apples.", "Then 17 * 2 = <<17*2=34>>34 apples."]}


def test_simulated_policy_without_slips_reproduces_the_reference():
    policy = SimulatedPolicy(LabelParams(slip_rate=0.0, misconception_rate=0.0), seed=0)
    out = policy.sample_trajectory(_problem(), random.Random(0))
    assert out.steps == _problem()["reference_steps"]
    assert (out.final_answer, out.first_slip) == ("34", -1)


def test_simulated_policy_carries_a_wrong_prefix_forward():
    policy = SimulatedPolicy(LabelParams(slip_rate=0.0, misconception_rate=0.0), seed=0)
    wrong_prefix = ["Ava has 12 + 5 = <<12+5=18>>18 apples."]
    out = policy.continue_from(_problem(), wrong_prefix, random.Random(0))
    assert out.steps == ["Then 18 * 2 = <<18*2=36>>36 apples."]
    assert out.final_answer == "36"


def test_simulated_policy_knows_where_it_slipped():
    policy = SimulatedPolicy(LabelParams(slip_rate=1.0, operation_slip_fraction=0.0, misconception_rate=0.0), seed=0)
    out = policy.sample_trajectory(_problem(), random.Random(0))
    assert out.first_slip == 0
    first = parse_step(out.steps[0], [])
    assert first.result != 17 and first.compute([]) == 17  # right operation, wrong stated result


def test_operation_slips_use_another_operator_and_compute_it_right():
    policy = SimulatedPolicy(LabelParams(slip_rate=1.0, operation_slip_fraction=1.0, misconception_rate=0.0), seed=0)
    out = policy.sample_trajectory(_problem(), random.Random(0))
    first = parse_step(out.steps[0], [])
    assert "+" not in out.steps[0].split("=")[0]  # both the visible and the annotated operator changed
    assert first.result == first.compute([]) != 17
    assert out.first_slip == 0


def _generated(count=40):
    return build_splits(IngestParams(num_train=count, num_test=1), seed=7).splits["train"]


def test_misconceptions_are_drawn_once_per_problem_from_its_seeded_stream():
    problems = _generated()
    always = LabelParams(slip_rate=0.0, misconception_rate=1.0)
    kinds = [SimulatedPolicy(always, seed=3).misconception(p) for p in problems]
    again = [SimulatedPolicy(always, seed=3).misconception(p) for p in reversed(problems)]
    assert kinds == again[::-1]  # order-free: the problem's own stream
    assert {m.kind for m in kinds} == set(MISCONCEPTIONS)
    other_seed = [SimulatedPolicy(always, seed=4).misconception(p) for p in problems]
    assert other_seed != kinds


def test_a_held_misconception_is_the_known_first_error_and_completions_stay_consistent():
    policy = SimulatedPolicy(LabelParams(slip_rate=0.0, misconception_rate=1.0), seed=3)
    correct = SimulatedPolicy(LabelParams(slip_rate=0.0, misconception_rate=0.0), seed=0)
    for problem in _generated():
        misconception = policy.misconception(problem)
        reference = problem["reference_steps"]
        samples = [policy.sample_trajectory(problem, random.Random(k)) for k in range(3)]
        assert len({s.final_answer for s in samples}) == 1 and samples[0].final_answer != problem["answer"]
        out = samples[0]
        # Steps before the misconception are the reference's; the first error is where it strikes.
        assert out.first_slip == misconception.step and out.steps[:misconception.step] == reference[:misconception.step]
        assert len(out.steps) == len(reference) - (misconception.kind == "skip")
        for t in range(1, len(out.steps)):  # its own prefixes (a skipped step included) lead to the same answer
            answer = policy.continue_from(problem, out.steps[:t], random.Random(t)).final_answer
            # (up to the 4 decimals a step shows when a carried error makes a value non-terminating)
            assert abs(Fraction(answer) - Fraction(out.final_answer)) < Fraction(1, 1000)
        for t in range(1, len(reference)):  # right prefixes: the misconception strikes only if still ahead
            reached = policy.continue_from(problem, reference[:t], random.Random(t)).final_answer == problem["answer"]
            assert reached == (t > misconception.step)
        assert correct.sample_trajectory(problem, random.Random(0)).steps == reference


def test_next_steps_walks_the_solution_one_step_at_a_time():
    problem = _generated(10)[3]
    for policy in (SimulatedPolicy(LabelParams(slip_rate=0.0, misconception_rate=0.0), seed=0),
                   SimulatedPolicy(LabelParams(slip_rate=0.0, misconception_rate=1.0), seed=3)):
        whole = policy.sample_trajectory(problem, random.Random(0))
        prefix = []
        while True:
            (step,) = policy.next_steps(problem, [prefix], random.Random(len(prefix)))
            assert len(step.steps) == 1 and (step.final_answer == "") != step.finished
            prefix += step.steps
            if step.finished:
                break
        assert (prefix, step.final_answer) == (whole.steps, whole.final_answer)


def test_mc_labels_mark_the_slip_and_everything_after_it():
    policy = SimulatedPolicy(LabelParams(slip_rate=0.0, misconception_rate=0.0), seed=0)
    params = LabelParams(trajectories_per_problem=1, completions_per_step=4, slip_rate=0.0)
    (row,) = sample_and_label(policy, _problem(), params, seed=0).rows
    assert (row["labels"], row["values"], row["correct"], row["first_error"]) == (["+", "+"], [1.0, 1.0], True, -1)

    slipping = SimulatedPolicy(LabelParams(slip_rate=1.0, misconception_rate=0.0), seed=0)
    (row,) = sample_and_label(slipping, _problem(), params, seed=0).rows
    # Completions also always slip, so no prefix can reach the answer.
    assert row["labels"] == ["-", "-"] and row["first_error"] == 0 and row["true_first_error"] == 0


def test_labeled_rows_are_consistent(labeled_rows):
    for row in labeled_rows:
        assert len(row["steps"]) == len(row["labels"]) == len(row["values"])
        assert all((v > 0) == (label == "+") for v, label in zip(row["values"], row["labels"]))
        assert row["first_error"] == first_error(row["labels"])
        assert row["correct"] == (row["labels"][-1] == "+")
    summary = label_summary(labeled_rows)
    assert 0 < summary["negative_step_fraction"] < 1
    assert summary["first_error_agreement"] > 0.8
    assert summary["hard_label_agreement"] > 0.9
