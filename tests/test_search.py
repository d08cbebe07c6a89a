"""PRM-guided search on a scripted policy and scorer: the exact picks, and compute counted exactly."""

import random

import pytest

from prmflow.config import SearchParams
from prmflow.evaluation.search import search_problem, search_report
from prmflow.evaluation.search_methods import (
    BASELINES, METHODS, Compute, beam_search, best_of_n, dvts, majority, sample_solutions, weighted_vote,
)
from prmflow.labeling.policy import Continuation
from prmflow.labeling.step_labels import AnswerChecker

PROBLEM = {"id": "p", "problem": "How many?", "answer": "2"}
# (step, finished, final answer) proposals per prefix, handed out in order to a prefix's copies in one call.
TREE = {
    (): [("a", False, ""), ("c", False, ""), ("b", False, ""), ("d", False, "")],
    ("a",): [("a1", True, "1"), ("a2", False, "")],
    ("c",): [("c1", True, "2"), ("c2", True, "3")],
    ("b",): [("b1", True, "6")],
    ("a", "a2"): [("a2x", True, "4"), ("a2y", True, "5")],
}
STEP_SCORES = {"a": 0.9, "b": 0.5, "c": 0.8, "d": 0.1, "a1": 0.2, "a2": 0.7, "c1": 0.85, "c2": 0.3, "b1": 0.55,
               "a2x": 0.95, "a2y": 0.6}
# Full samples: (steps, answer, step scores). min picks C, prod D, last B; the vote picks 7.
SAMPLES = [(["s1", "s2"], "5", [0.9, 0.3]), (["s3", "s4 more"], "7", [0.5, 0.8]), (["s5", "s6"], "7", [0.7, 0.6]),
           (["s7 words here"], "9", [0.45])]


class ScriptedPolicy:
    name = "scripted"

    def sample_trajectory(self, problem, rng):
        return self.complete(problem, [[]], rng)[0]

    def complete(self, problem, prefixes, rng):
        return [Continuation(SAMPLES[i % len(SAMPLES)][0], SAMPLES[i % len(SAMPLES)][1], None)
                for i in range(len(prefixes))]

    def next_steps(self, problem, prefixes, rng):
        seen: dict[tuple, int] = {}
        out = []
        for prefix in prefixes:
            options = TREE[tuple(prefix)]
            step, finished, answer = options[seen.get(tuple(prefix), 0) % len(options)]
            seen[tuple(prefix)] = seen.get(tuple(prefix), 0) + 1
            out.append(Continuation([step], answer, None, finished=finished))
        return out


class ScriptedScorer:
    """Each step's score is fixed by its text; a solution's forward tokens are its words plus one."""

    def __init__(self):
        self.forward_tokens, self.calls = 0, 0

    def score(self, problem, solutions):
        self.calls += 1
        self.forward_tokens += sum(1 + sum(len(s.split()) for s in steps) for steps in solutions)
        by_text = {tuple(steps): scores for steps, _, scores in SAMPLES}
        return [by_text.get(tuple(steps)) or [STEP_SCORES[s] for s in steps] for steps in solutions]


def _samples(n=4):
    return sample_solutions(ScriptedPolicy(), PROBLEM, n, random.Random(0))


@pytest.mark.parametrize("how, answer", [("min", "7"), ("prod", "9"), ("last", "7")])
def test_best_of_n_picks_the_highest_aggregate(how, answer):
    samples = _samples()
    scores = ScriptedScorer().score("q", [s.steps for s in samples])
    picked = best_of_n(samples, scores, how, prm_tokens=11)
    expected = {"min": ["s5", "s6"], "prod": ["s7 words here"], "last": ["s3", "s4 more"]}[how]
    assert (picked.answer, picked.solution) == (answer, expected)
    # Equal compute: 4 samples of 2 + 3 + 2 + 3 words, one PRM call.
    assert vars(picked.compute) == {"policy_calls": 4, "generated_tokens": 10, "prm_calls": 1, "prm_tokens": 11}


def test_weighted_vote_can_overrule_the_majority():
    samples = [Continuation(["x"], "3", None), Continuation(["y"], "3", None), Continuation(["z"], "4", None)]
    scores = [[0.1], [0.1], [0.9]]
    assert majority(samples).answer == "3"
    assert weighted_vote(samples, scores, "min", prm_tokens=0).answer == "4"  # 0.9 against 0.1 + 0.1
    assert majority(_samples()).answer == "7"  # 7 twice; ties would go to the answer seen first
    scores = ScriptedScorer().score("q", [s.steps for s in _samples()])
    assert weighted_vote(_samples(), scores, "min", 0).answer == "7"  # 0.3 + 0.6 = 1.1 against 0.3 and 0.45


@pytest.mark.parametrize("how, answer, solution", [("min", "2", ["c", "c1"]), ("last", "4", ["a", "a2", "a2x"])])
def test_beam_search_keeps_the_best_n_over_m_and_sets_finished_ones_aside(how, answer, solution):
    # N=4, M=2: the root is expanded 4 times (a, c, b, d); a and c are kept and each expanded twice;
    # c+c1 finishes (kept), a+a2 goes on and its best extension a2x finishes: the best of the two wins.
    scorer = ScriptedScorer()
    picked = beam_search(ScriptedPolicy(), scorer, PROBLEM, n=4, beam_width=2, max_steps=10, how=how,
                         rng=random.Random(0))
    assert (picked.answer, picked.solution) == (answer, solution)
    # 4 + 4 + 2 proposals of one word each; one PRM call per step, reading every candidate.
    assert vars(picked.compute) == {"policy_calls": 10, "generated_tokens": 10, "prm_calls": 3,
                                    "prm_tokens": scorer.forward_tokens}
    assert scorer.forward_tokens == 4 * 2 + 4 * 3 + 2 * 4


def test_dvts_searches_its_subtrees_independently():
    # N=4, M=2: subtree 0 chooses among (a, c) -> a, subtree 1 among (b, d) -> b; beam search would keep a and c.
    picked = dvts(ScriptedPolicy(), ScriptedScorer(), PROBLEM, n=4, beam_width=2, max_steps=10, how="min",
                  rng=random.Random(0))
    # subtree 0: a -> a2 (0.7) -> a2x (min 0.7); subtree 1: b -> b1 (min 0.5): subtree 0 wins.
    assert (picked.answer, picked.solution) == ("4", ["a", "a2", "a2x"])
    assert (picked.compute.policy_calls, picked.compute.prm_calls) == (4 + 4 + 2, 3)


def test_one_beam_is_a_greedy_walk_and_max_steps_leaves_it_without_an_answer():
    picked = beam_search(ScriptedPolicy(), ScriptedScorer(), PROBLEM, n=1, beam_width=4, max_steps=1, how="min",
                         rng=random.Random(0))
    assert (picked.answer, picked.solution, picked.compute.policy_calls) == ("", ["a"], 1)


def test_search_problem_counts_each_n_on_the_first_n_samples():
    scorer = ScriptedScorer()
    params = SearchParams(sizes=[1, 4], beam_width=2, max_steps=10)
    out = search_problem(ScriptedPolicy(), scorer, PROBLEM, params=params, seed=0, check=AnswerChecker())
    assert vars(out["best_of_n_min"][1][1]) == {"policy_calls": 1, "generated_tokens": 2, "prm_calls": 1,
                                                "prm_tokens": 3}
    assert vars(out["best_of_n_min"][4][1]) == {"policy_calls": 4, "generated_tokens": 10, "prm_calls": 1,
                                                "prm_tokens": 3 + 4 + 3 + 4}
    assert vars(out["majority"][4][1]) == {"policy_calls": 4, "generated_tokens": 10, "prm_calls": 0, "prm_tokens": 0}
    accuracy, one = out["pass_at_1"][4]  # the share of the 4 samples that are right, at one sample's mean cost
    assert (accuracy, one.policy_calls, one.generated_tokens) == (0.0, 1, 2.5)
    assert out["beam_search"][4][0] == 1.0  # "2", the reference answer
    report = search_report([out, out])
    assert report["beam_search"][4] == {"accuracy": 1.0, "generated_tokens": 10, "policy_calls": 10, "prm_calls": 3,
                                        "prm_tokens": 28}
    assert list(report) == ["best_of_n_min", "best_of_n_prod", "best_of_n_last", "weighted_vote", "beam_search",
                            "dvts", "majority", "pass_at_1"]


def test_search_intervals_resample_problems_and_pair_each_method_with_majority_vote():
    one = Compute(policy_calls=1, generated_tokens=1)
    # Problem 0: beam search right, majority wrong; problem 1: both right. Every method's row, then baselines.
    outcomes = [{method: {4: (float(method == "beam_search" or i == 1), one)} for method in (*METHODS, *BASELINES)}
                for i in range(2)]
    report = search_report(outcomes, bootstrap_samples=500, seed=0)
    beam, vote = report["beam_search"][4], report["weighted_vote"][4]
    assert (beam["accuracy"], beam["accuracy_ci_low"], beam["accuracy_ci_high"]) == (1.0, 1.0, 1.0)
    assert (beam["vs_majority"], beam["vs_majority_ci_low"], beam["vs_majority_ci_high"]) == (0.5, 0.0, 1.0)
    assert (vote["vs_majority"], vote["vs_majority_ci_low"], vote["vs_majority_ci_high"]) == (0.0, 0.0, 0.0)
    assert (report["majority"][4]["accuracy_ci_low"], report["majority"][4]["accuracy_ci_high"]) == (0.0, 1.0)
    assert "vs_majority" not in report["majority"][4]
    assert "accuracy_ci_low" not in search_report(outcomes)["beam_search"][4]  # no resamples: no interval


def test_prefix_caching_scores_as_the_plain_forward_pass_and_reads_fewer_tokens(tmp_path):
    from prmflow.devices import Placement
    from prmflow.evaluation.search import SearchScorer
    from prmflow.scoring.load import load
    from prmflow.scoring.tokenization import encode_solution
    from tiny_models import build_tiny_prm

    scorer = SearchScorer(load(build_tiny_prm(tmp_path / "prm", seed=0), placement=Placement(), batch_size=4))
    problem = "Ava has 3 apples and buys 4. How many?"
    prefix = ["Ava has 3 + 4 = <<3+4=7>>7 apples.", "She eats 1: 7 - 1 = <<7-1=6>>6."]
    solutions = [prefix + [last] for last in ("So 6 are left.", "Then 6 * 2 = <<6*2=12>>12.", "#### 6")]
    solutions += [prefix[:1] + ["x"], prefix[:1] + ["y"], ["alone"]]  # a second shared prefix, and no prefix
    cached = scorer.score(problem, solutions)
    prm = scorer.prm.scorer  # the format's scorer: modeling.StepTagScorer
    plain = prm.score_batch([(problem, steps) for steps in solutions])
    for a, b in zip(cached, plain):
        assert a == pytest.approx(b, abs=1e-5)
    full = sum(len(encode_solution(prm.tokenizer, prm.format, problem, s).input_ids) for s in solutions)
    assert 0 < scorer.forward_tokens < full


def test_the_search_stage_loads_the_prm_on_the_configured_device_and_dtype(tmp_path, monkeypatch):
    """model.device / model.dtype reach the search stage's PRM (not "auto"): bfloat16 on the CPU, where auto
    would load float32, is what its parameters hold and what reports/search.md records."""
    import torch

    from prmflow.config import params_from_dict
    from prmflow.devices import Placement
    from prmflow.evaluation import search
    from prmflow.jsonl import write_jsonl
    from tiny_models import build_tiny_prm

    monkeypatch.chdir(tmp_path)
    build_tiny_prm(tmp_path / "models" / "prm", seed=0)
    write_jsonl(tmp_path / "data" / "problems" / "test.jsonl", [
        {"id": f"p{b}", "problem": f"Ava has 3 apples and buys {b}. How many?", "answer": str(3 + b),
         "reference_steps": [f"Ava has 3 + {b} = <<3+{b}={3 + b}>>{3 + b} apples."], "source": "test"}
        for b in (2, 5)])
    params = params_from_dict({"model": {"device": "cpu", "dtype": "bfloat16"},
                               "search": {"sizes": [1, 2], "beam_width": 2, "max_steps": 3, "bootstrap_samples": 0}})
    scorer = search.make_scorer(params.search, params.base.models_dir, Placement.of(params.model))
    assert scorer.prm.scorer.model.dtype == torch.bfloat16 and scorer.prm.scorer.device.type == "cpu"
    search.main(params)
    assert "PRM: models/prm in process, on cpu in bfloat16." in (tmp_path / "reports" / "search.md").read_text()
