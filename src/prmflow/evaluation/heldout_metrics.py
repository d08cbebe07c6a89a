"""One scorer's metrics on the held-out rollouts, and the metric the register gate compares.

    evaluation = evaluate_solutions(rows, scores, params.evaluate)   # rows: labeled rollouts; scores: P(+) per step
    evaluation.metrics["first_error_f1"], evaluation.roc, evaluation.best_of_n
    resampled_metrics(rows, scores, params.evaluate)["first_error_f1"].point()   # what the gate bootstraps

The held-out problems are split by a hash of their id: on the validation part the first-error threshold is chosen
(ProcessBench protocol: best first-error F1), every number is reported on the other part. The evaluate stage
(evaluate.py) and the register gate (serving/register.py) both read their numbers from here, so the gate compares
exactly what evaluate reports.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import partial

from prmflow.config import EvaluateParams
from prmflow.data.answers import answer_agreement
from prmflow.evaluation.best_of_n import best_of_n_metrics, best_of_n_resampled, best_of_n_table, has_final_answer
from prmflow.evaluation.bootstrap import (
    Resampled, weighted_auroc, weighted_binary_f1, weighted_first_error_f1, weighted_mean,
)
from prmflow.evaluation.metrics import (
    choose_threshold, expected_calibration_error, first_error_f1, reliability_bins, roc_points, step_metrics,
)
from prmflow.scoring.aggregation import AGGREGATIONS, predicted_first_error

# Metrics that do not depend on the scorer: reported once, not again for each baseline.
SCORER_FREE = ("best_of_n_majority", "best_of_n_oracle", "best_of_n_pass_at_1", "best_of_n_n", "answers_repeated",
               "test_solutions_without_final_answer")



@dataclass
class Evaluation:
    """One scorer on one held-out set: flat metrics and the data behind the plots."""

    metrics: dict[str, float]
    roc: list[dict[str, float]] = field(default_factory=list)
    reliability: list[dict[str, float]] = field(default_factory=list)
    best_of_n: dict[int, dict[str, float]] = field(default_factory=dict)


def in_validation(problem_id: str, fraction: float) -> bool:
    """Deterministic, order-free membership of a problem in the validation part."""
    digest = hashlib.sha256(str(problem_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def scored_first_error(row: dict, scores: list[float]) -> int:
    """The labeled first error, or -1 when it lies in steps the model could not score."""
    return row["first_error"] if row["first_error"] < len(scores) else -1


def reported_part(rows: list[dict], scores: list[list[float]], params: EvaluateParams) -> tuple[list, list, float,
                                                                                               float]:
    """(validation pairs, reported pairs, first-error threshold, its validation F1) of the scored solutions.

    With too few problems for both parts the whole set is reported with the fixed `threshold`.
    """
    scored = [(row, s) for row, s in zip(rows, scores) if s]
    validation = [(r, s) for r, s in scored if in_validation(r["problem_id"], params.validation_fraction)]
    test = [(r, s) for r, s in scored if not in_validation(r["problem_id"], params.validation_fraction)]
    if validation and test:
        threshold, validation_f1 = choose_threshold([s for _, s in validation],
                                                    [scored_first_error(r, s) for r, s in validation])
        return validation, test, threshold, validation_f1
    return [], scored, params.threshold, float("nan")


def evaluate_solutions(rows: list[dict], scores: list[list[float]], params: EvaluateParams) -> Evaluation:
    """All metrics of one scorer from the rollouts and their step scores (unscored solutions are skipped)."""
    validation, test, threshold, validation_f1 = reported_part(rows, scores, params)
    flat_scores = [x for _, s in test for x in s]
    labels = [label for row, s in test for label in row["labels"][: len(s)]]
    positives = [label == "+" for label in labels]
    metrics = step_metrics(flat_scores, labels, params.threshold)
    metrics["step_ece"] = expected_calibration_error(flat_scores, positives, params.calibration_bins)
    metrics |= first_error_f1([predicted_first_error(s, threshold) for _, s in test],
                              [scored_first_error(r, s) for r, s in test])
    metrics |= {"first_error_threshold": threshold, "first_error_validation_f1": validation_f1}
    table = best_of_n_table(test)
    metrics |= best_of_n_metrics(table) | answer_agreement([row for row, _ in test])
    metrics |= {"solutions": len(validation) + len(test), "validation_solutions": len(validation),
                "test_solutions": len(test), "test_steps": len(flat_scores),
                "unscored_solutions": len(rows) - len(validation) - len(test),
                "test_solutions_without_final_answer": sum(not has_final_answer(r) for r, _ in test)}
    return Evaluation(metrics, roc_points(flat_scores, positives),
                      reliability_bins(flat_scores, positives, params.calibration_bins), table)


def resampled_metrics(rows: list[dict], scores: list[list[float]], params: EvaluateParams) -> dict[str, Resampled]:
    """The metrics of `evaluate_solutions` that a bootstrap over problems recomputes (bootstrap.py), as functions
    of resampling weights on the reported part: step AUROC, accuracy and `-` F1 (a unit per step), first-error
    F1 (per solution), best-of-N of each aggregation and majority vote (per problem: `best_of_n_<method>_at_<N>`
    and, at the largest N, the plain names). With weights of 1 each is the reported number.
    """
    _, test, threshold, _ = reported_part(rows, scores, params)
    steps = [(str(r["problem_id"]), x, label == "+") for r, s in test for x, label in zip(s, r["labels"])]
    step_problems, flat, positives = [p for p, _, _ in steps], [x for _, x, _ in steps], [p for *_, p in steps]
    below = [x < params.threshold for x in flat]
    found = {"step_auroc": Resampled(step_problems, partial(weighted_auroc, flat, positives)),
             "step_accuracy": Resampled(step_problems, partial(weighted_mean, [b != p for b, p in zip(below,
                                                                                                     positives)])),
             "negative_f1": Resampled(step_problems, partial(weighted_binary_f1, below, [not p for p in positives])),
             "first_error_f1": Resampled([str(r["problem_id"]) for r, _ in test], partial(
                 weighted_first_error_f1, [predicted_first_error(s, threshold) for _, s in test],
                 [scored_first_error(r, s) for r, s in test]))}
    return found | best_of_n_resampled(test, [f"prm_{how}" for how in AGGREGATIONS] + ["majority"])


def headline_resampled(rows: list[dict], scores: list[list[float]], params: EvaluateParams) -> dict[str, Resampled]:
    """The PRM's headline metrics that get intervals: step AUROC, first-error F1, best-of-N by N of the configured
    aggregation and of majority vote."""
    return {k: r for k, r in resampled_metrics(rows, scores, params).items()
            if k in ("step_auroc", "first_error_f1")
            or k.startswith((f"best_of_n_prm_{params.aggregation}", "best_of_n_majority"))}


def baseline_metrics(prefix: str, evaluation: Evaluation) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in evaluation.metrics.items() if not k.startswith(SCORER_FREE)}
