"""The simulated policy: the offline default, with a known ground truth.

The simulated policy works on any reference solution written with calculator annotations.
Given a step prefix, it re-derives the remaining reference steps from the values the
prefix actually holds (so an earlier slip propagates) and slips on arithmetic at
`slip_rate` per step. Because it knows where it slipped, every trajectory has a true
first error.
"""

from __future__ import annotations

import random
from fractions import Fraction

from prmflow.data.calc import (
    CalcStep, annotation_result, evaluate, format_number, parse_step, render_step, to_number, tokenize_expression,
)
from prmflow.labeling.policy import NO_ANSWER, Continuation

OPERATORS = ["+", "-", "*", "/"]


class SimulatedPolicy:
    name = "simulated"

    def __init__(self, slip_rate: float, operation_slip_fraction: float = 0.5):
        self.slip_rate = slip_rate
        self.operation_slip_fraction = operation_slip_fraction
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

    @staticmethod
    def _wrong_result(correct: Fraction, rng: random.Random) -> Fraction:
        """A wrong result near the right one; positive when the right one is, so nothing divides by 0."""
        spread = max(2, int(abs(correct)) // 4)
        delta = rng.randint(1, spread) * rng.choice((-1, 1))
        if correct > 0 and correct + delta <= 0:
            delta = -delta
        return correct + delta

    @staticmethod
    def _wrong_operation(texts: list[str], correct: Fraction, rng: random.Random) -> tuple[list[str], Fraction] | None:
        """The same operands with one binary operator swapped (computed right), or None if none fits."""
        binary = [i for i, t in enumerate(texts) if t in OPERATORS and i > 0 and texts[i - 1] not in "+-*/("]
        rng.shuffle(binary)
        for index in binary:
            for op in rng.sample(OPERATORS, len(OPERATORS)):
                changed = texts[:index] + [op] + texts[index + 1:]
                try:
                    value = evaluate(tokenize_expression("".join(changed)))
                except ZeroDivisionError:
                    continue
                if value != correct and value > 0 and value.denominator == 1:
                    return changed, value
        return None

    def _slip(self, texts: list[str], correct: Fraction, rng: random.Random) -> tuple[list[str], Fraction]:
        if rng.random() < self.operation_slip_fraction:
            swapped = self._wrong_operation(texts, correct, rng)
            if swapped is not None:
                return swapped
        return texts, self._wrong_result(correct, rng)

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
            texts = step.operand_texts(results)
            if rng.random() < self.slip_rate:
                texts, value = self._slip(texts, value, rng)
                if first_slip < 0:
                    first_slip = len(steps)
            steps.append(render_step(step, texts, value))
            results.append(value)
        final = results[-1] if results else to_number(problem["answer"])
        return Continuation(steps=steps, final_answer=format_number(final), first_slip=first_slip)

    def sample_trajectory(self, problem: dict, rng: random.Random) -> Continuation:
        return self.continue_from(problem, [], rng)

    def complete(self, problem: dict, prefixes: list[list[str]], rng: random.Random) -> list[Continuation]:
        return [self.continue_from(problem, prefix, rng) for prefix in prefixes]
