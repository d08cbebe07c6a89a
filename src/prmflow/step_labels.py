"""Step labels of one sampled trajectory: `mc` (Math-Shepherd) and `binary_search` (OmegaPRM).

A prefix z_1..z_t "reaches the answer" when a completion sampled from it ends at the reference
answer. Its value (soft label) is the fraction of N completions that do; its hard label is `+`
when any does.

- `mc` samples N completions from every proper prefix; the full trajectory is judged by its own
  final answer (no call). Cost: (T-1)·N calls for T steps.
- `binary_search` spends no call on a trajectory that reaches the answer: the trajectory itself
  is a completion of each of its prefixes that reaches it, so every step is `+`, value 1.0
  (one witness out of one: an upper estimate, the soft label of a correct trajectory is not
  measured). For a wrong one, the full prefix is known bad and the empty prefix is assumed good
  (the problem is solvable); a binary search probes the middle prefix with N completions until
  the first bad prefix is found: about log2(T)·N calls. Steps before it are `+`, it and after
  it `-`. Values: a probed prefix keeps its measured fraction; an unprobed good one takes the
  value of the nearest probed good prefix after it (a lower bound, since the value of a prefix
  can only fall as steps are added when slips carry forward); the bad ones are 0.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from prmflow.answers import answers_equivalent
from prmflow.calc import to_number
from prmflow.policy import NO_ANSWER, Continuation, Policy

METHODS = ("mc", "binary_search")


class AnswerChecker:
    """Whether a final answer equals the reference, counting the checks and the unparseable answers.

    Plain numbers (the simulated policy's answers) compare exactly as fractions, with no sympy;
    anything else goes to math-verify once per distinct (answer, reference) pair. An answer that
    is missing or that math-verify cannot parse counts as wrong.
    """

    def __init__(self) -> None:
        self.checks = 0
        self.unparseable = 0
        self._verdicts: dict[tuple[str, str], bool | None] = {}

    def __call__(self, predicted: str | None, reference: str) -> bool:
        self.checks += 1
        verdict = self._verdict(predicted, reference)
        if verdict is None:
            self.unparseable += 1
            return False
        return verdict

    def _verdict(self, predicted: str | None, reference: str) -> bool | None:
        if not predicted or predicted == NO_ANSWER:
            return None
        if predicted == reference:
            return True
        try:
            return to_number(predicted) == to_number(reference)
        except (ValueError, ZeroDivisionError):
            pass
        key = (predicted, reference)
        if key not in self._verdicts:
            self._verdicts[key] = answers_equivalent(predicted, reference)
        return self._verdicts[key]


@dataclass
class StepLabels:
    labels: list[str]
    values: list[float]
    policy_calls: int
    probed: list[int] = field(default_factory=list)  # prefix lengths that got completions


def _prefix_values(policy: Policy, problem: dict, prefixes: list[list[str]], completions: int,
                   rng: random.Random, check: AnswerChecker) -> list[float]:
    """Each prefix's share of `completions` continuations that reach the answer, all in one batch."""
    batch = [prefix for prefix in prefixes for _ in range(completions)]
    hits = [check(c.final_answer, problem["answer"]) for c in policy.complete(problem, batch, rng)]
    return [sum(hits[i:i + completions]) / completions for i in range(0, len(hits), completions)]


def mc_labels(policy: Policy, problem: dict, trajectory: Continuation, completions: int, rng: random.Random,
              check: AnswerChecker) -> StepLabels:
    steps = trajectory.steps
    if not steps:
        return StepLabels([], [], 0)
    values = _prefix_values(policy, problem, [steps[:t] for t in range(1, len(steps))], completions, rng, check)
    values.append(float(check(trajectory.final_answer, problem["answer"])))
    return StepLabels(["+" if v > 0 else "-" for v in values], values, (len(steps) - 1) * completions,
                      probed=list(range(1, len(steps))))


def binary_search_labels(policy: Policy, problem: dict, trajectory: Continuation, completions: int,
                         rng: random.Random, check: AnswerChecker) -> StepLabels:
    steps = trajectory.steps
    if check(trajectory.final_answer, problem["answer"]):
        return StepLabels(["+"] * len(steps), [1.0] * len(steps), 0)
    good, bad = 0, len(steps)  # prefix lengths: the shortest known bad one and the longest known good one
    measured: dict[int, float] = {}
    while bad - good > 1:
        middle = (good + bad) // 2
        (measured[middle],) = _prefix_values(policy, problem, [steps[:middle]], completions, rng, check)
        if measured[middle] > 0:
            good = middle
        else:
            bad = middle
    probed = sorted(measured)
    values = []
    for t in range(1, len(steps) + 1):
        if t >= bad:
            values.append(0.0)
        else:  # good is probed and >= t, so a probed good prefix at or after t exists
            values.append(measured[min(p for p in probed if t <= p <= good)])
    return StepLabels(["+" if t < bad else "-" for t in range(1, len(steps) + 1)], values,
                      len(probed) * completions, probed=probed)


LABELERS = {"mc": mc_labels, "binary_search": binary_search_labels}
