"""From step scores to one solution score and a predicted first error: shared by every scorer.

`min` and `prod` follow Lightman et al. 2023 (Let's Verify Step by Step) and Math-Shepherd;
`last` reads the final step's score alone; `mean` is the arithmetic mean.
"""

from __future__ import annotations

import math

from prmflow.config import AGGREGATIONS


def aggregate(step_scores: list[float], how: str) -> float:
    """One solution score from its step scores."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation: {how!r} is not one of {list(AGGREGATIONS)}")
    if not step_scores:
        raise ValueError("aggregation: no step scores to aggregate")
    if how == "min":
        return min(step_scores)
    if how == "prod":
        return math.prod(step_scores)
    if how == "last":
        return step_scores[-1]
    return sum(step_scores) / len(step_scores)


def combine(process_score: float, outcome_score: float, process_weight: float, outcome_weight: float) -> float:
    """The combined reward: process_weight * the PRM's aggregate + outcome_weight * the outcome score."""
    return process_weight * process_score + outcome_weight * outcome_score


def predicted_first_error(step_scores: list[float], threshold: float) -> int:
    """Index of the first step scored below `threshold`, or -1."""
    return next((i for i, s in enumerate(step_scores) if s < threshold), -1)
