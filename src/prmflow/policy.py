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
from typing import Protocol

from prmflow.calc import (
    CalcStep, annotation_result, evaluate, format_number, parse_step, render_step, to_number, tokenize_expression,
)
from prmflow.config import LabelParams

OPERATORS = ["+", "-", "*", "/"]


NO_ANSWER = "undefined"


@dataclass(frozen=True)
class Continuation:
    steps: list[str]  # the new steps only
    final_answer: str
    first_slip: int | None  # index among the new steps of the first slip, -1 when none, None when unknown


class Policy(Protocol):
    """What a labeling method needs from a policy; each returned Continuation is one policy call.

    `complete` continues every prefix of the list once (repeat a prefix for N completions), so
    a batched policy can sample them together. `final_answer` is the extracted final answer, ""
    (or NO_ANSWER) when there is none; the labeling method judges it.
    """

    name: str

    def sample_trajectory(self, problem: dict, rng: random.Random) -> Continuation: ...

    def complete(self, problem: dict, prefixes: list[list[str]], rng: random.Random) -> list[Continuation]: ...


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


def make_policy(params: LabelParams) -> Policy:
    if params.policy == "simulated":
        return SimulatedPolicy(params.slip_rate, params.operation_slip_fraction)
    if params.policy == "transformers":
        from prmflow.hf_policy import TransformersPolicy  # torch + transformers only when asked for

        return TransformersPolicy(params.model_dir, params.max_new_tokens, params.temperature, params.batch_size,
                                  params.gguf_file)
    if params.policy == "openai":
        from prmflow.openai_policy import OpenAIPolicy

        return OpenAIPolicy(params.endpoint, params.model_name, params.max_new_tokens, params.temperature,
                            params.concurrency, params.request_timeout_s, params.max_retries, params.retry_backoff_s,
                            params.api_key_env)
    raise ValueError(f"label.policy: unknown policy {params.policy!r}")
