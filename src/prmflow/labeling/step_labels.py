"""Step labels of one sampled trajectory: `mc` (Math-Shepherd), `relative_progress` (GenPRM) and
`binary_search` (OmegaPRM).

A prefix z_1..z_t "reaches the answer" when a completion sampled from it ends at the reference
answer. Its value (soft label) is the fraction of N completions that do; its hard label is `+`
when any does.

- `mc` samples N completions from every proper prefix; the full trajectory is judged by its own
  final answer (no call). Cost: (T-1)·N calls for T steps.
- `relative_progress` (GenPRM's relative progress estimation) also samples N completions from the
  empty prefix and judges each step by what it changed: value MC(after) / MC(before), capped at 1,
  and `+` when that is at least `label.progress_threshold` (GenPRM: 0.8). A step after which no
  completion reaches the answer while some did before it falls to 0; where none did before
  either, a step that brings some back is `+` (value 1) and one that does not is `-` (value 0).
  Cost: T·N calls for T steps.
- `binary_search` (OmegaPRM) probes prefixes in two batched rounds: `first_round` completions,
  then the rest of the N only if none of those reached the answer (the hard label, "any of N",
  keeps its chance; a good prefix's value rests on fewer draws). A prefix with one hit in all N
  is drawn N more times and stays good only if it hits again: one hit is what a slipped prefix
  gives when a completion slips back onto a right value. A completion that reaches the
  answer after repeating the trajectory's next steps word for word witnesses those longer
  prefixes good for free (reuse of rollouts). For a wrong trajectory the full prefix is known bad
  and the empty prefix is assumed good (the problem is solvable); a binary search probes the
  middle prefix until the first bad prefix is found: about log2(T) probes. Steps before it are
  `+`, it and after it `-`; an unprobed good prefix takes the value of the nearest known good
  prefix after it (a lower bound, since the value of a prefix can only fall as steps are added
  when slips carry forward); the bad ones are 0. A trajectory that reaches the answer can still
  hold a slip that a later slip undid, so its prefixes are all probed, shortest first, where
  witnesses spare most of the calls; its last step is `+` with value 1.0 (its own answer).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

from prmflow.config import LabelParams
from prmflow.data.answers import answers_equivalent
from prmflow.data.calc import to_number
from prmflow.labeling.policy import NO_ANSWER, Continuation, Policy

METHODS = ("mc", "binary_search")
# Every `label.method` a policy's completions label; relative_progress is left out of the stage's method
# comparison (METHODS) so the default run costs what it did.
ROLLOUT_METHODS = (*METHODS, "relative_progress")


class AnswerChecker:
    """Whether a final answer equals the reference, counting the checks and the unparseable answers.

    Plain numbers (the simulated policy's answers) compare exactly as fractions, with no sympy;
    anything else goes to math-verify once per distinct (answer, reference) pair. An answer that
    is missing, or a pair of which either side math-verify cannot read whole (answers_equivalent
    says None), counts as wrong and as unparseable.
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


def _hit_counts(policy: Policy, problem: dict, prefixes: list[list[str]], *, completions: int,
                rng: random.Random, check: AnswerChecker) -> list[int]:
    """How many of `completions` continuations of each prefix reach the answer, all in one batch."""
    batch = [prefix for prefix in prefixes for _ in range(completions)]
    hits = [check(c.final_answer, problem["answer"]) for c in policy.complete(problem, batch, rng)]
    return [sum(hits[i:i + completions]) for i in range(0, len(hits), completions)]


def mc_labels(policy: Policy, problem: dict, trajectory: Continuation, *, completions: int, rng: random.Random,
              check: AnswerChecker) -> StepLabels:
    steps = trajectory.steps
    if not steps:
        return StepLabels([], [], 0)
    hits = _hit_counts(policy, problem, [steps[:t] for t in range(1, len(steps))], completions=completions, rng=rng,
                       check=check)
    values = [h / completions for h in hits] + [float(check(trajectory.final_answer, problem["answer"]))]
    return StepLabels(["+" if v > 0 else "-" for v in values], values, (len(steps) - 1) * completions,
                      probed=list(range(1, len(steps))))


def relative_progress_labels(policy: Policy, problem: dict, trajectory: Continuation, *, completions: int,
                             rng: random.Random, check: AnswerChecker, threshold: float) -> StepLabels:
    steps = trajectory.steps
    if not steps:
        return StepLabels([], [], 0)
    hits = _hit_counts(policy, problem, [steps[:t] for t in range(len(steps))], completions=completions, rng=rng,
                       check=check)
    mc = [h / completions for h in hits] + [float(check(trajectory.final_answer, problem["answer"]))]
    values = [min(1.0, after / before) if before > 0 else float(after > 0) for before, after in zip(mc, mc[1:])]
    return StepLabels(["+" if v >= threshold else "-" for v in values], values, len(steps) * completions,
                      probed=list(range(len(steps))))


def _repeated_steps(steps: list[str], start: int, continuation: Continuation) -> int:
    """How many of the trajectory's steps after `start` a continuation of steps[:start] repeats word for word."""
    count = 0
    for own, new in zip(steps[start:], continuation.steps):
        if own.strip() != new.strip():
            break
        count += 1
    return count


class _Prober:
    """Completions of one trajectory's proper prefixes: hits and draws per prefix length.

    A prefix is probed in two batched rounds: `first_round` completions, then the rest of
    `completions` only if none of the first reached the answer. Whether any of `completions`
    reaches it (the hard label) has the same chance as with all drawn at once; a good prefix's
    value just rests on fewer draws. A completion that reaches the answer after repeating the
    trajectory's next steps word for word is also a continuation of each longer prefix it passed
    through (a policy samples each step given the steps before it), so it witnesses them good at
    no cost: OmegaPRM's reuse of rollouts. A witness counts as one draw that hit.
    """

    def __init__(self, policy: Policy, problem: dict, steps: list[str], completions: int, first_round: int,
                 rng: random.Random, check: AnswerChecker):
        self.policy, self.problem, self.steps, self.rng, self.check = policy, problem, steps, rng, check
        self.completions, self.first_round = completions, min(first_round, completions)
        self.hits: dict[int, int] = {}
        self.draws: dict[int, int] = {}  # witnesses included
        self.probed: set[int] = set()
        self.unconfirmed: set[int] = set()  # one hit in N, none in N more: bad
        self.calls = 0

    def _count(self, length: int, hit: bool) -> None:
        self.hits[length] = self.hits.get(length, 0) + hit
        self.draws[length] = self.draws.get(length, 0) + 1

    def _draw(self, lengths: list[int], per_prefix: int) -> None:
        batch = [self.steps[:t] for t in lengths for _ in range(per_prefix)]
        self.probed.update(lengths)
        for index, continuation in enumerate(self.policy.complete(self.problem, batch, self.rng)):
            length = lengths[index // per_prefix]
            hit = self.check(continuation.final_answer, self.problem["answer"])
            self._count(length, hit)
            if hit:
                passed = _repeated_steps(self.steps, length, continuation)
                for longer in range(length + 1, min(length + passed, len(self.steps) - 1) + 1):
                    self._count(longer, True)
        self.calls += len(batch)

    def good(self, length: int) -> bool:
        return self.hits.get(length, 0) > 0 and length not in self.unconfirmed

    def value(self, length: int) -> float:
        return self.hits[length] / self.draws[length] if self.good(length) else 0.0

    def probe(self, lengths: list[int]) -> None:
        """Probe the prefixes not yet known good."""
        todo = [t for t in lengths if not self.good(t)]
        if todo:
            self._draw(todo, self.first_round)
        unreached = [t for t in todo if not self.good(t)]
        if unreached and self.completions > self.first_round:
            self._draw(unreached, self.completions - self.first_round)
        # One hit in all N draws is what a slipped prefix gives when a completion slips back onto a
        # right value: such a verdict stands only if N more draws reach the answer again.
        single = [t for t in unreached if self.hits[t] == 1]
        if single:
            self._draw(single, self.completions)
            self.unconfirmed.update(t for t in single if self.hits[t] == 1)


def binary_search_labels(policy: Policy, problem: dict, trajectory: Continuation, *, completions: int,
                         rng: random.Random, check: AnswerChecker, first_round: int) -> StepLabels:
    steps = trajectory.steps
    prober = _Prober(policy, problem, steps, completions, first_round, rng, check)
    if check(trajectory.final_answer, problem["answer"]):
        # A slip can be undone by a later one that lands back on a right value, so a right answer
        # does not clear the steps: every prefix is probed, shortest first, so that witnesses
        # from the short ones spare the long ones.
        for length in range(1, len(steps)):
            prober.probe([length])
        values = [prober.value(t) for t in range(1, len(steps))] + [1.0] * bool(steps)
        return StepLabels(["+" if v > 0 else "-" for v in values], values, prober.calls,
                          probed=sorted(prober.probed))
    good, bad = 0, len(steps)  # prefix lengths: the longest known good one and the shortest known bad one
    while bad - good > 1:
        middle = (good + bad) // 2
        prober.probe([middle])
        if prober.good(middle):
            good = max(t for t in range(middle, bad) if prober.good(t))  # witnesses may reach past the middle
        else:
            bad = middle
    values = []
    for t in range(1, len(steps) + 1):
        if t >= bad:
            values.append(0.0)
        else:  # good is known good and >= t; the nearest known good prefix at or after t stands in
            values.append(prober.value(min(p for p in range(t, good + 1) if prober.good(p))))
    return StepLabels(["+" if t < bad else "-" for t in range(1, len(steps) + 1)], values, prober.calls,
                      probed=sorted(prober.probed))


def make_labeler(params: LabelParams):
    """`labeler(policy, problem, trajectory, rng, check) -> StepLabels` for `params.method`."""
    if params.method == "binary_search":
        return functools.partial(binary_search_labels, completions=params.completions_per_step,
                                 first_round=params.first_round_completions)
    if params.method == "mc":
        return functools.partial(mc_labels, completions=params.completions_per_step)
    if params.method == "relative_progress":
        return functools.partial(relative_progress_labels, completions=params.completions_per_step,
                                 threshold=params.progress_threshold)
    raise ValueError(f"label.method: {params.method!r} is not one of {list(ROLLOUT_METHODS)}")
