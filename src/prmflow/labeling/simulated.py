"""The simulated policy: the offline default, with a known ground truth.

The simulated policy works on any reference solution written with calculator annotations.
Given a step prefix, it re-derives the remaining reference steps from the values the
prefix actually holds (so an earlier slip propagates) and makes two kinds of error:

- independent slips: each step slips on arithmetic with probability `slip_rate` (a wrong
  operation or a wrong result), so two samples rarely share a wrong answer;
- a systematic misconception: one per problem, drawn once from the problem's own seeded stream
  (`{seed}:{problem id}:misconception`), at a fixed step: a wrong operation, a misread quantity
  (another quantity of the problem, or a near one) or a skipped step (the amount is carried on
  as it was before the step). Each call (a sampled solution, or one completion of a prefix)
  holds it with probability `misconception_rate`, so samples of a problem share its wrong
  answer the way real generators do (bench/policy_agreement.py: two of 4 samples share a wrong answer in about
  20% of GSM8K problems).

Because the policy knows where it erred, every trajectory has a true first error (`first_slip`).

Monte-Carlo labels under the misconception: a completion of a prefix holds the misconception
with the same probability as a fresh sample (the policy, not the trajectory, is what holds it),
so a correct prefix before the misconception's step has value about (1 - misconception_rate)
times the slip-free chance, and its hard label ("any completion reaches the answer") stays `+`;
a prefix that already holds the misconception can only reach the answer by a lucky slip. The
labels are the value of the policy (Math-Shepherd's definition), and the first `-` stays at
the first error.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from fractions import Fraction

from prmflow.data.calc import (
    CalcStep, Operand, annotation_result, evaluate, format_number, parse_step, render_step, to_number,
    tokenize_expression,
)
from prmflow.config import LabelParams
from prmflow.labeling.policy import NO_ANSWER, Continuation

OPERATORS = ["+", "-", "*", "/"]
MISCONCEPTIONS = ("operation", "quantity", "skip")
_NOT_WORDS = re.compile(r"<<[^<>]*>>|\d+(?:\.\d+)?|[-+*/=()$]|\s+")


@dataclass(frozen=True)
class Misconception:
    """A systematic error at reference step `step` (its index in `reference_steps`).

    operation: token `token` of the step's expression becomes the operator `text`; quantity: the
    constant at token `token` is read as `text`; skip: the step is left out and its amount carried on.
    """

    kind: str
    step: int
    token: int = -1
    text: str = ""


def _words(text: str) -> str:
    """A step's wording without its numbers, operators and annotation: which template wrote it."""
    return _NOT_WORDS.sub(" ", text).strip()


def _positive_exact(value: Fraction, correct: Fraction) -> bool:
    """A wrong value a student could write: positive, at most two decimal places, not the right one."""
    return value != correct and value > 0 and (value * 100).denominator == 1


class SimulatedPolicy:
    """Slips and misconceptions at the `label` section's slip_rate, operation_slip_fraction and
    misconception_rate; `seed` (base.seed) draws each problem's misconception."""

    name = "simulated"

    def __init__(self, params: LabelParams, seed: int):
        self.slip_rate = params.slip_rate
        self.operation_slip_fraction = params.operation_slip_fraction
        self.misconception_rate = params.misconception_rate
        self.seed = seed
        self._parsed: dict[str, list[CalcStep | str]] = {}
        self._misconceptions: dict[str, Misconception | None] = {}

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

    def misconception(self, problem: dict) -> Misconception | None:
        """The problem's misconception, drawn once from its own stream; None when no kind fits its steps."""
        key = problem["id"]
        if key not in self._misconceptions:
            rng = random.Random(f"{self.seed}:{key}:misconception")
            reference = self._reference(problem)
            kinds = list(MISCONCEPTIONS)
            rng.shuffle(kinds)
            drawn = (self._draw(kind, reference, rng) for kind in kinds)
            self._misconceptions[key] = next((m for m in drawn if m is not None), None)
        return self._misconceptions[key]

    def _draw(self, kind: str, reference: list[CalcStep | str], rng: random.Random) -> Misconception | None:
        """A misconception of `kind` at a random step where it changes the step's value, or None."""
        results = [step.result for step in reference if isinstance(step, CalcStep)]
        steps = [(i, step, sum(isinstance(s, CalcStep) for s in reference[:i]))
                 for i, step in enumerate(reference) if isinstance(step, CalcStep)]
        rng.shuffle(steps)
        constants = sorted({t.value for _, step, _ in steps for t in step.tokens
                            if isinstance(t, Operand) and t.ref is None})
        for index, step, done in steps:
            texts = step.operand_texts(results[:done])
            if kind == "operation":
                swapped = self._wrong_operation(texts, step.result, rng)
                if swapped is not None:
                    return Misconception(kind, index, swapped[0], swapped[1][swapped[0]])
            elif kind == "quantity":
                misread = self._misread(step, texts, constants, rng)
                if misread is not None:
                    return Misconception(kind, index, *misread)
            elif self._skippable(reference, index, done):
                return Misconception(kind, index)
        return None

    @staticmethod
    def _misread(step: CalcStep, texts: list[str], constants: list[Fraction],
                 rng: random.Random) -> tuple[int, str] | None:
        """(token, text): a constant of the step read as another quantity of the problem (or a near number)."""
        own = [i for i, t in enumerate(step.tokens) if isinstance(t, Operand) and t.ref is None]
        for token in rng.sample(own, len(own)):
            value = step.tokens[token].value
            others = [c for c in constants if c != value] or [value + d for d in (-2, -1, 1, 2) if value + d > 0]
            for other in rng.sample(others, len(others)):
                try:
                    misread = evaluate(tokenize_expression("".join(texts[:token] + [format_number(other)]
                                                                   + texts[token + 1:])))
                except ZeroDivisionError:
                    continue
                if _positive_exact(misread, step.result):
                    return token, format_number(other)
        return None

    @staticmethod
    def _skippable(reference: list[CalcStep | str], index: int, done: int) -> bool:
        """A step can be left out when the next step builds on it and is worded differently.

        The wording is how a prefix shows that it skipped the step (see `_position`).
        """
        if index + 1 >= len(reference) or not isinstance(reference[index + 1], CalcStep):
            return False
        step, following = reference[index], reference[index + 1]
        builds_on = any(isinstance(t, Operand) and t.ref == done for t in following.tokens)
        return builds_on and isinstance(step.tokens[0], Operand) and _words(step.text) != _words(following.text)

    @staticmethod
    def _wrong_result(correct: Fraction, rng: random.Random) -> Fraction:
        """A wrong result near the right one; positive when the right one is, so nothing divides by 0."""
        spread = max(2, int(abs(correct)) // 4)
        delta = rng.randint(1, spread) * rng.choice((-1, 1))
        if correct > 0 and correct + delta <= 0:
            delta = -delta
        return correct + delta

    @staticmethod
    def _wrong_operation(texts: list[str], correct: Fraction,
                         rng: random.Random) -> tuple[int, list[str], Fraction] | None:
        """(token, texts, value): one binary operator swapped, computed right; None if none fits."""
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
                    return index, changed, value
        return None

    def _slip(self, texts: list[str], correct: Fraction, rng: random.Random) -> tuple[list[str], Fraction]:
        if rng.random() < self.operation_slip_fraction:
            swapped = self._wrong_operation(texts, correct, rng)
            if swapped is not None:
                return swapped[1], swapped[2]
        return texts, self._wrong_result(correct, rng)

    @staticmethod
    def _position(reference: list[CalcStep | str], misconception: Misconception | None,
                  prefix: list[str]) -> tuple[int, bool]:
        """(reference steps the prefix covers, whether it skipped the misconception's step).

        A prefix that skipped step j wrote step j+1's words at position j; `_skippable` made them differ.
        """
        j = misconception.step if misconception is not None and misconception.kind == "skip" else -1
        skipped = 0 <= j < len(prefix) and _words(prefix[j]) != _words(reference[j].text)
        return len(prefix) + skipped, skipped

    @staticmethod
    def _misconceived(misconception: Misconception, texts: list[str]) -> tuple[list[str], Fraction]:
        """The step's operands with the misconception applied, and the value computed from them."""
        texts = texts[:misconception.token] + [misconception.text] + texts[misconception.token + 1:]
        return texts, evaluate(tokenize_expression("".join(texts)))

    def continue_from(self, problem: dict, prefix: list[str], rng: random.Random,
                      max_steps: int | None = None) -> Continuation:
        """The rest of the solution after `prefix` (at most `max_steps` steps: then unfinished, answer "").

        Each call holds the problem's misconception with probability `misconception_rate`.
        """
        reference = self._reference(problem)
        misconception = self.misconception(problem) if self.misconception_rate > 0 else None
        start, skipped = self._position(reference, misconception, prefix)
        if start > len(reference):
            raise ValueError(f"prefix of {len(prefix)} steps is longer than the reference solution")
        results = [r for r in map(annotation_result, prefix) if r is not None]
        if skipped:  # the skipped step's amount is the one it started from
            done = sum(isinstance(s, CalcStep) for s in reference[:misconception.step])
            left_out = reference[misconception.step]
            results.insert(done, left_out.operand_value(left_out.tokens[0], results[:done]))
        # Drawn only when misconceptions are on, so a policy without them samples exactly as before.
        holds = misconception is not None and rng.random() < self.misconception_rate
        steps: list[str] = []
        first_slip = -1
        for index in range(start, len(reference)):
            step = reference[index]
            if isinstance(step, str):
                steps.append(step)
                if len(steps) == max_steps and index + 1 < len(reference):
                    return Continuation(steps=steps, final_answer="", first_slip=first_slip, finished=False)
                continue
            try:
                value = step.compute(results)
                texts = step.operand_texts(results)
                if holds and index == misconception.step:
                    if misconception.kind == "skip":  # nothing written; the next step starts from the old amount
                        results.append(step.operand_value(step.tokens[0], results))
                    else:
                        texts, value = self._misconceived(misconception, texts)
                    first_slip = len(steps) if first_slip < 0 else first_slip
                    if misconception.kind == "skip":
                        continue
                elif rng.random() < self.slip_rate:
                    texts, value = self._slip(texts, value, rng)
                    first_slip = len(steps) if first_slip < 0 else first_slip
            except ZeroDivisionError:  # a carried-forward error made a divisor 0: no answer
                return Continuation(steps=steps, final_answer=NO_ANSWER, first_slip=first_slip)
            steps.append(render_step(step, texts, value))
            results.append(value)
            if len(steps) == max_steps and index + 1 < len(reference):
                return Continuation(steps=steps, final_answer="", first_slip=first_slip, finished=False)
        final = results[-1] if results else to_number(problem["answer"])
        return Continuation(steps=steps, final_answer=format_number(final), first_slip=first_slip)

    def sample_trajectory(self, problem: dict, rng: random.Random) -> Continuation:
        return self.continue_from(problem, [], rng)

    def complete(self, problem: dict, prefixes: list[list[str]], rng: random.Random) -> list[Continuation]:
        return [self.continue_from(problem, prefix, rng) for prefix in prefixes]

    def next_steps(self, problem: dict, prefixes: list[list[str]], rng: random.Random) -> list[Continuation]:
        """One step per prefix; a skipped step is not written, so the step is the one after it."""
        return [self.continue_from(problem, prefix, rng, max_steps=1) for prefix in prefixes]
