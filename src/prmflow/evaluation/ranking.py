"""How well a scorer ranks the candidates of one problem: within-problem solution AUROC, with bootstrap intervals.

    resampled = within_problem_auroc(rows, solution_scores)   # one unit per mixed problem
    resampled.point(), bootstrap_interval(resampled, 1000, seed)

Best-of-N only picks among a problem's own candidates, so what matters is whether the scorer puts that problem's
right candidates above its wrong ones, not whether its scores are comparable across problems (an easy problem's
wrong candidate may outscore a hard problem's right one without costing best-of-N anything). The within-problem
AUROC is the AUROC of right vs wrong candidates computed per problem, averaged over the problems that have both
(mixed problems); the others carry no ranking information. Resampling draws whole problems.
"""

from __future__ import annotations

from collections import defaultdict

from prmflow.evaluation.bootstrap import Resampled, weighted_mean
from prmflow.evaluation.inputs import problem_key
from prmflow.evaluation.metrics import auroc


def mixed_problems(rows: list[dict]) -> set[str]:
    """The keys of the problems with at least one right and one wrong candidate (`correct`)."""
    outcomes: dict[str, set[bool]] = defaultdict(set)
    for row in rows:
        outcomes[problem_key(row)].add(bool(row["correct"]))
    return {key for key, seen in outcomes.items() if len(seen) == 2}


def within_problem_auroc(rows: list[dict], solution_scores: list[float]) -> Resampled:
    """The mean over mixed problems of the AUROC of `solution_scores` for right vs wrong candidates of that
    problem, as a function of resampling weights over those problems. Raises ValueError on a length mismatch."""
    if len(rows) != len(solution_scores):
        raise ValueError(f"within-problem AUROC: {len(rows)} rows but {len(solution_scores)} scores")
    groups: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for row, score in zip(rows, solution_scores):
        groups[problem_key(row)].append((score, bool(row["correct"])))
    mixed = sorted(mixed_problems(rows))
    values = [auroc([s for s, _ in groups[key]], [c for _, c in groups[key]]) for key in mixed]
    return Resampled(mixed, lambda weights: weighted_mean(values, weights))
