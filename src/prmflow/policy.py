"""Rollout policies. `simulated` is the offline default with a known ground truth.

The simulated policy works on any reference solution written with calculator annotations.
Given a step prefix, it re-derives the remaining reference steps from the values the
prefix actually holds (so an earlier slip propagates) and slips on arithmetic at
`slip_rate` per step. Because it knows where it slipped, every trajectory has a true
first error.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction

from prmflow.calc import CalcStep, annotation_result, format_number, parse_step, render_step, to_number


NO_ANSWER = "undefined"


@dataclass(frozen=True)
class Continuation:
    steps: list[str]  # the new steps only
    final_answer: str
    first_slip: int  # index among the new steps of the first slip, -1 when none


class SimulatedPolicy:
    name = "simulated"

    def __init__(self, slip_rate: float):
        self.slip_rate = slip_rate
        self._parsed: dict[str, list[CalcStep | str]] = {}

    def _reference(self, problem: dict) -> list[CalcStep | str]:
        """Reference steps parsed once per problem; steps with no annotation stay plain text."""
        key = problem["id"]
        if key not in self._parsed:
            results: list[Fraction] = []
            parsed: list[CalcStep | str] = []
            for text in problem["reference_steps"]:
                step = parse_step(text, results)
                if step is None:
                    parsed.append(text)
                else:
                    parsed.append(step)
                    results.append(step.result)
            self._parsed[key] = parsed
        return self._parsed[key]

    def _slip(self, correct: Fraction, rng: random.Random) -> Fraction:
        """A wrong result near the right one; positive when the right one is, so nothing divides by 0."""
        spread = max(2, int(abs(correct)) // 4)
        delta = rng.randint(1, spread) * rng.choice((-1, 1))
        if correct > 0 and correct + delta <= 0:
            delta = -delta
        return correct + delta

    def continue_from(self, problem: dict, prefix: list[str], rng: random.Random) -> Continuation:
        reference = self._reference(problem)
        if len(prefix) > len(reference):
            raise ValueError(f"prefix of {len(prefix)} steps is longer than the reference solution")
        results = [r for r in map(annotation_result, prefix) if r is not None]
        steps: list[str] = []
        first_slip = -1
        for step in reference[len(prefix):]:
            if isinstance(step, str):
                steps.append(step)
                continue
            try:
                value = step.compute(results)
            except ZeroDivisionError:  # a carried-forward slip made a divisor 0: no answer
                return Continuation(steps=steps, final_answer=NO_ANSWER, first_slip=first_slip)
            if rng.random() < self.slip_rate:
                value = self._slip(value, rng)
                if first_slip < 0:
                    first_slip = len(steps)
            steps.append(render_step(step, step.operand_texts(results), value))
            results.append(value)
        final = results[-1] if results else to_number(problem["answer"])
        return Continuation(steps=steps, final_answer=format_number(final), first_slip=first_slip)

    def sample_trajectory(self, problem: dict, rng: random.Random) -> Continuation:
        return self.continue_from(problem, [], rng)


def make_policy(name: str, slip_rate: float) -> SimulatedPolicy:
    if name == "simulated":
        return SimulatedPolicy(slip_rate)
    raise ValueError(f"label.policy: unknown policy {name!r}")
