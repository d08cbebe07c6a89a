"""The comparison of scorers on the same held-out solutions: the trained PRM, the zero-shot prompt, the
`evaluate.scorers` PRMs, the trained ORM and the combined score, side by side (`compare_<scorer>_*` metrics).

    compared = comparison(prm_scores, threshold, orm_scores, "min", params.combine)
    compare_scorers(rows, compared, params.evaluate.validation_fraction)   # {"compare_prm_solution_auroc": ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from prmflow.config import CombineParams
from prmflow.evaluation.best_of_n import solution_groups
from prmflow.evaluation.bootstrap import Resampled, weighted_auroc
from prmflow.evaluation.heldout_metrics import in_validation, scored_first_error
from prmflow.evaluation.metrics import auroc, best_of_n_curve, first_error_f1, powers_of_two_up_to
from prmflow.scoring.aggregation import aggregate, combine, predicted_first_error

# Process weights tried for the validated combined score (outcome weight = 1 - w), coarse on purpose:
# the validation part is a few hundred solutions.
PROCESS_WEIGHT_GRID = [i / 10 for i in range(11)]

@dataclass
class Compared:
    """One scorer of the comparison: a score per held-out solution (None: not scored) and its step scores."""

    solution: list[float | None]
    steps: list[list[float]] | None = None
    step_metric: str = "step_auroc"  # the ORM's per-tag P(+) are value estimates: "step_value_auroc"
    threshold: float | None = None   # first-error threshold chosen on the validation part (step scorers)


def compared_part(rows: list[dict], compared: dict[str, Compared], validation_fraction: float) -> list[int]:
    """Indices of the reported-part solutions that every scorer scored."""
    scored = [i for i in range(len(rows)) if all(c.solution[i] is not None for c in compared.values())]
    test = [i for i in scored if not in_validation(rows[i]["problem_id"], validation_fraction)]
    return scored if not test or len(test) == len(scored) else test  # too few problems to split: all, as above


def comparison_resampled(rows: list[dict], compared: dict[str, Compared],
                         validation_fraction: float) -> dict[str, Resampled]:
    """`compare_<scorer>_solution_auroc` of every scorer as a function of resampling weights (bootstrap.py)."""
    test = compared_part(rows, compared, validation_fraction)
    problems, correct = [str(rows[i]["problem_id"]) for i in test], [bool(rows[i]["correct"]) for i in test]
    return {f"compare_{name}_solution_auroc": Resampled(problems, partial(
        weighted_auroc, [c.solution[i] for i in test], correct)) for name, c in compared.items()}


def compare_scorers(rows: list[dict], compared: dict[str, Compared], validation_fraction: float) -> dict[str, float]:
    """`compare_*` metrics of every scorer on the same solutions: the reported part, scored by all of them.

    Solution-level correctness AUROC and best-of-N by N (the selection of the best-of-N table); step AUROC
    and first-error F1 where a scorer has step scores. Majority vote, pass@1 and oracle at each N beside them.
    """
    test = compared_part(rows, compared, validation_fraction)
    correct = [bool(rows[i]["correct"]) for i in test]
    metrics: dict[str, float] = {"compare_solutions": len(test)}
    curve: dict[int, dict[str, float]] = {}
    for name, c in compared.items():
        pairs = [(rows[i], c.solution[i]) for i in test]
        metrics[f"compare_{name}_solution_auroc"] = auroc([score for _, score in pairs], correct)
        groups = solution_groups(pairs)
        curve = best_of_n_curve(groups, powers_of_two_up_to(max((len(g) for g in groups), default=0)))
        metrics |= {f"compare_{name}_best_of_n_at_{n}": result["prm"] for n, result in curve.items()}
        if c.steps is not None:
            labels = [label == "+" for i in test for label in rows[i]["labels"][: len(c.steps[i])]]
            metrics[f"compare_{name}_{c.step_metric}"] = auroc([x for i in test for x in c.steps[i]], labels)
        if c.threshold is not None:
            metrics[f"compare_{name}_first_error_f1"] = first_error_f1(
                [predicted_first_error(c.steps[i], c.threshold) for i in test],
                [scored_first_error(rows[i], c.steps[i]) for i in test])["first_error_f1"]
    for n, result in curve.items():  # scorer-free: the same for every scorer's groups
        metrics |= {f"compare_{k}_best_of_n_at_{n}": result[k] for k in ("majority", "pass_at_1", "oracle")}
    return metrics


def comparison(prm: list[list[float]], prm_threshold: float, orm: list[list[float]], aggregation: str,
               weights: CombineParams, zero_shot: tuple[list[list[float]], float] | None = None,
               scorers: dict[str, tuple[list[list[float]], float]] | None = None) -> dict[str, Compared]:
    """The scorers of the comparison from their step scores (the ORM's: values at each tag) and the
    first-error thresholds chosen for them; `zero_shot` is (its step scores, its threshold), if run, and
    `scorers` the same for each `evaluate.scorers` PRM, by name.

    PRM and zero-shot solutions are scored by `aggregation` of their steps, the ORM by its last tag, and
    the combined score is `combine` of those two probabilities.
    """
    def aggregated(scores: list[list[float]]) -> list[float | None]:
        return [aggregate(s, aggregation) if s else None for s in scores]

    prm_solution = aggregated(prm)
    orm_solution = [s[-1] if s else None for s in orm]
    compared = {}
    if zero_shot is not None:
        steps, threshold = zero_shot
        compared["zero_shot"] = Compared(aggregated(steps), steps, threshold=threshold)
    compared["prm"] = Compared(prm_solution, prm, threshold=prm_threshold)
    for name, (steps, threshold) in (scorers or {}).items():
        compared[name] = Compared(aggregated(steps), steps, threshold=threshold)
    compared["orm"] = Compared(orm_solution, orm, step_metric="step_value_auroc")
    compared["combined"] = Compared(combined_solution(prm_solution, orm_solution, weights.process_weight,
                                                      weights.outcome_weight))
    return compared


def combined_solution(prm: list[float | None], orm: list[float | None], process_weight: float,
                      outcome_weight: float) -> list[float | None]:
    return [None if p is None or o is None else combine(p, o, process_weight, outcome_weight) for p, o in zip(prm, orm)]


def validated_process_weight(rows: list[dict], prm: list[float | None], orm: list[float | None],
                             validation_fraction: float) -> float | None:
    """The process weight (outcome weight = 1 - it) of PROCESS_WEIGHT_GRID whose combined score has the best
    solution AUROC on the validation part, ties to the larger process weight; None without both classes there."""
    part = [i for i in range(len(rows)) if prm[i] is not None and orm[i] is not None
            and in_validation(rows[i]["problem_id"], validation_fraction)]
    correct = [bool(rows[i]["correct"]) for i in part]
    if len(set(correct)) < 2:
        return None

    def validation_auroc(weight: float) -> float:
        return auroc([combine(prm[i], orm[i], weight, 1 - weight) for i in part], correct)

    return max(PROCESS_WEIGHT_GRID, key=lambda w: (validation_auroc(w), w))
