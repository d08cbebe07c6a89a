"""The one result of scoring a candidate: `Prediction`, the fields of the serving contract (docs/serving.md).

    predictions([("2+3?", ["2+3=5", "The answer is 5."])], [[0.97, 0.95]], [counted(...)], threshold=0.5,
                aggregation="min")
    -> [Prediction(step_scores=[0.97, 0.95], score=0.95, first_error=None, scored_steps=2, truncated_steps=[],
                   dropped_steps=0, has_final_answer=True, reason=None)]

Every candidate is scored on its own: one that does not fit the model context is scored on what fits and
says so (`truncated_steps`: steps cut inside, `dropped_steps`: whole trailing steps left out), or, when
nothing fits, gets `score: null`, `first_error: null`, `step_scores: []` and a `reason`. `has_final_answer`
says whether the steps state a final answer (data.answers.states_final_answer under `answer_reading`); `score` does not depend on
it: the rule for best-of-N is to rank by (has_final_answer, score).
"""

from __future__ import annotations

import math

from pydantic import BaseModel

from prmflow.data.answers import states_final_answer
from prmflow.scoring.aggregation import aggregate, combine, predicted_first_error

Pair = tuple[str, list[str]]  # (problem, steps)


class Prediction(BaseModel):
    step_scores: list[float]
    score: float | None = None  # null: nothing of this candidate fits the model context (see `reason`)
    first_error: int | None = None
    scored_steps: int
    truncated_steps: list[int]  # indices of steps cut inside: their start was scored
    dropped_steps: int  # whole trailing steps beyond the context, not scored
    has_final_answer: bool
    reason: str | None = None
    steps: list[str] | None = None  # a `text` solution: the steps it was split into
    split: str | None = None  # ... and the rule used: blank_lines | step_markers | lines
    neutralised: list[str] = []  # fields whose special-token text (e.g. the step tag) was read as plain text


class CombinedPrediction(Prediction):
    """A combined model's answer: `score` is the weighted combination, `outcome_score` the ORM's."""

    outcome_score: float | None = None


def unscorable(reason: str, kind: type[Prediction] = Prediction) -> Prediction:
    """The answer for a candidate with nothing to score: no step score, `score` None, `reason` saying why."""
    return kind(step_scores=[], scored_steps=0, truncated_steps=[], dropped_steps=0, has_final_answer=False,
                reason=reason)


def encoded_details(encoded: list) -> list[dict]:
    """What prmflow's own encoding says of each candidate (tokenization.Encoded): exactly what was cut or why
    nothing was scored."""
    return [{"truncated_steps": e.truncated_steps, "dropped_steps": e.dropped_steps, "reason": e.reason,
             "neutralised": e.neutralised} for e in encoded]


def counted_details(pairs: list[Pair], scores: list[list[float]], faults: list[str | None]) -> list[dict]:
    """What a format that gives scores only (public_prms) left out, counted from its scores; `faults`: why a
    candidate was not sent at all (tokenization.unicode_fault), None where it was."""
    return [{"truncated_steps": [], "dropped_steps": len(steps) - len(s), "neutralised": [],
             "reason": None if s else fault or "the problem and first step do not fit the model context"}
            for (_, steps), s, fault in zip(pairs, scores, faults)]


def predictions(pairs: list[Pair], scores: list[list[float]], details: list[dict], *, threshold: float,
                aggregation: str, answer_reading: str, outcomes: list[float | None] | None = None, process_weight: float = 0.0,
                outcome_weight: float = 0.0) -> list[Prediction]:
    """One Prediction per (problem, steps) from its step scores and `details` (encoded_details /
    counted_details). `threshold`: first_error is the first step scored below it; `answer_reading` (strict |
    flexible): how `has_final_answer` reads the steps. `outcomes`: a combined
    model's ORM P(correct) per candidate; `score` becomes process_weight * aggregate + outcome_weight * it."""
    out = []
    for index, ((_, steps), step_scores, detail) in enumerate(zip(pairs, scores, details)):
        fields = {"step_scores": step_scores, "score": None, "first_error": None, "scored_steps": len(step_scores),
                  **detail, "has_final_answer": states_final_answer(steps, answer_reading)}
        if not all(math.isfinite(score) for score in step_scores):  # diverged weights: no verdict, and not JSON
            fields |= {"step_scores": [], "scored_steps": 0, "reason": "the model's step scores are not "
                       "numbers (NaN): its weights diverged in training"}
        elif step_scores:
            fields |= {"score": aggregate(step_scores, aggregation),
                       "first_error": predicted_first_error(step_scores, threshold)}
        if outcomes is None:
            out.append(Prediction(**fields))
            continue
        if outcomes[index] is None and step_scores:  # the ORM's own context is the smaller one
            fields |= {"score": None, "first_error": None, "step_scores": [], "scored_steps": 0,
                       "reason": "the outcome model cannot score any step of it"}
        if fields["score"] is not None:
            fields["score"] = combine(fields["score"], outcomes[index], process_weight, outcome_weight)
        out.append(CombinedPrediction(**fields, outcome_score=outcomes[index]))
    return out
