"""PRM-guided test-time search: best-of-N, weighted majority vote, step-level beam search and DVTS.

The methods follow search-and-learn (Hugging Face, 2024; Beeching et al., "Scaling test-time
compute with open models"), with a PRM scoring every step:

- best-of-N: N full samples, the one with the highest aggregated PRM score (`min`, `prod`, `last`);
- weighted majority vote: N full samples, the answer whose samples' PRM scores sum highest;
- beam search (N, beam width M): the root is expanded N times; at every step the N // M best
  candidates are kept and each is expanded M times (N next-step proposals per step); a kept
  candidate that ends its solution is set aside, until N // M solutions are complete;
- DVTS, diverse verifier tree search (N, M): N // M independent subtrees, each a greedy search that
  expands its one beam M times per step and keeps the best; the best finished subtree is picked.

With N < M the width is N (one beam). A candidate's score is its step scores aggregated with
`how`; ties go to the candidate proposed first. Compute is counted exactly (`Compute`): one
policy call per continuation asked for (as the labeling methods count), generated tokens as
whitespace-separated words of the new steps (the same measure for every policy, so methods compare
on one scale; not a model tokenizer's count), one PRM call per batch and the PRM's forward tokens
as the scorer reports them. All proposals of a step go to the policy in one batched call and all
candidates of a step to the PRM in one call.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from prmflow.evaluation.metrics import majority_vote
from prmflow.labeling.policy import Continuation, Policy
from prmflow.scoring.aggregation import aggregate

BEST_OF_N_AGGREGATIONS = ("min", "prod", "last")  # the best-of-N methods, one per aggregation
BEST_OF_N = tuple(f"best_of_n_{how}" for how in BEST_OF_N_AGGREGATIONS)
METHODS = (*BEST_OF_N, "weighted_vote", "beam_search", "dvts")
BASELINES = ("majority", "pass_at_1")  # no PRM: what a PRM must beat at the same samples


class StepScorer(Protocol):
    """P(+) for every step of each solution of one problem (steps past the PRM's context left out).

    `forward_tokens`: tokens the PRM has read so far (0 when the scorer cannot tell, e.g. an endpoint).
    """

    forward_tokens: int

    def score(self, problem: str, solutions: list[list[str]]) -> list[list[float]]: ...


@dataclass
class Compute:
    """What one search spent: policy calls, generated tokens (words), PRM calls and PRM forward tokens."""

    policy_calls: int = 0
    generated_tokens: int = 0
    prm_calls: int = 0
    prm_tokens: int = 0

    def add_continuations(self, continuations: list[Continuation]) -> None:
        self.policy_calls += len(continuations)
        self.generated_tokens += sum(len(step.split()) for c in continuations for step in c.steps)


@dataclass
class Candidate:
    """A (partial) solution: its steps, their PRM scores, and its final answer once finished."""

    steps: list[str]
    scores: list[float] = field(default_factory=list)
    finished: bool = False
    answer: str = ""


@dataclass
class Picked:
    """A method's chosen answer and what it cost."""

    answer: str
    compute: Compute
    solution: list[str] = field(default_factory=list)


def solution_score(scores: list[float], how: str) -> float:
    """The aggregated PRM score; -inf for a solution with no scored step (nothing fit the context)."""
    return aggregate(scores, how) if scores else -math.inf


def _score(scorer: StepScorer, problem: dict, candidates: list[Candidate], compute: Compute) -> None:
    """Score every candidate in one PRM call, counting the call and its forward tokens."""
    before = scorer.forward_tokens
    for candidate, scores in zip(candidates, scorer.score(problem["problem"], [c.steps for c in candidates])):
        candidate.scores = scores
    compute.prm_calls += 1
    compute.prm_tokens += scorer.forward_tokens - before


def sample_solutions(policy: Policy, problem: dict, n: int, rng: random.Random) -> list[Continuation]:
    """N full samples in one batched policy call (best-of-N and the votes share them)."""
    return policy.complete(problem, [[] for _ in range(n)], rng)


def _samples_compute(samples: list[Continuation]) -> Compute:
    compute = Compute()
    compute.add_continuations(samples)
    return compute


def best_of_n(samples: list[Continuation], scores: list[list[float]], how: str, prm_tokens: int) -> Picked:
    """The sample with the highest aggregated score (the first on ties). `scores`: each sample's step scores."""
    best = max(range(len(samples)), key=lambda i: solution_score(scores[i], how))  # the first of equals
    compute = _samples_compute(samples)
    compute.prm_calls, compute.prm_tokens = 1, prm_tokens
    return Picked(samples[best].final_answer, compute, samples[best].steps)


def weighted_vote(samples: list[Continuation], scores: list[list[float]], how: str, prm_tokens: int) -> Picked:
    """The answer whose samples' aggregated scores sum highest (the first seen on ties); unscored add 0."""
    totals: dict[str, float] = defaultdict(float)
    for sample, step_scores in zip(samples, scores):
        totals[sample.final_answer] += aggregate(step_scores, how) if step_scores else 0.0
    answer = max(totals, key=lambda a: totals[a])  # dicts keep first-seen order; max keeps the first maximum
    compute = _samples_compute(samples)
    compute.prm_calls, compute.prm_tokens = 1, prm_tokens
    return Picked(answer, compute)


def majority(samples: list[Continuation]) -> Picked:
    """The most common answer (the first seen on ties: metrics.majority_vote); no PRM."""
    return Picked(majority_vote([sample.final_answer for sample in samples]), _samples_compute(samples))


def _expand(policy: Policy, scorer: StepScorer, problem: dict, beams: list[Candidate], per_beam: int,
            rng: random.Random, compute: Compute) -> list[list[Candidate]]:
    """Each beam's `per_beam` one-step extensions, proposed in one policy call and scored in one PRM call."""
    proposals = policy.next_steps(problem, [beam.steps for beam in beams for _ in range(per_beam)], rng)
    compute.add_continuations(proposals)
    candidates = [Candidate(beams[i // per_beam].steps + p.steps, finished=p.finished or not p.steps,
                            answer=p.final_answer) for i, p in enumerate(proposals)]
    _score(scorer, problem, candidates, compute)
    return [candidates[i:i + per_beam] for i in range(0, len(candidates), per_beam)]


def _best(candidates: list[Candidate], how: str) -> Candidate:
    return max(candidates, key=lambda c: solution_score(c.scores, how))  # max keeps the first of equals


def _width(n: int, beam_width: int) -> tuple[int, int]:
    """(beams kept, expansions per beam): N // M beams of M, or one beam of N when N < M."""
    per_beam = min(beam_width, n)
    return max(1, n // per_beam), per_beam


def beam_search(policy: Policy, scorer: StepScorer, problem: dict, *, n: int, beam_width: int, max_steps: int,
                how: str, rng: random.Random) -> Picked:
    """Step-level beam search; solutions unfinished after `max_steps` steps compete with no answer."""
    keep, per_beam = _width(n, beam_width)
    compute, completed = Compute(), []
    beams, fan_out = [Candidate([])], n  # the root is expanded N times
    for _ in range(max_steps):
        candidates = [c for group in _expand(policy, scorer, problem, beams, fan_out, rng, compute) for c in group]
        ranked = sorted(candidates, key=lambda c: -solution_score(c.scores, how))  # stable: first wins ties
        chosen = ranked[:keep - len(completed)]
        completed += [c for c in chosen if c.finished]
        beams, fan_out = [c for c in chosen if not c.finished], per_beam
        if not beams:
            break
    best = _best(completed + beams, how)
    return Picked(best.answer if best.finished else "", compute, best.steps)


def dvts(policy: Policy, scorer: StepScorer, problem: dict, *, n: int, beam_width: int, max_steps: int, how: str,
         rng: random.Random) -> Picked:
    """Diverse verifier tree search: N // M greedy subtrees expanded M times per step, all in one batch."""
    subtrees, per_beam = _width(n, beam_width)
    compute = Compute()
    beams = [Candidate([]) for _ in range(subtrees)]
    for _ in range(max_steps):
        active = [i for i, beam in enumerate(beams) if not beam.finished]
        if not active:
            break
        groups = _expand(policy, scorer, problem, [beams[i] for i in active], per_beam, rng, compute)
        for i, group in zip(active, groups):
            beams[i] = _best(group, how)
    best = _best(beams, how)
    return Picked(best.answer if best.finished else "", compute, best.steps)
