"""Stage `evaluate`: score the held-out rollouts with the trained PRM and its baselines.

    prmflow evaluate          # reads params.yaml: base, model, evaluate, combine, register.model_name/alias

The held-out problems are split by a hash of their id: on the validation part the first-error
threshold is chosen (ProcessBench protocol: best first-error F1), every number is reported on
the other part, so the threshold is never chosen on the split it is judged on. Reported:
step level (accuracy, `-` precision/recall/F1 and AUROC against the MC labels, expected
calibration error), first-error accuracy on erroneous and correct solutions and their F1, and
best-of-N for N = 1, 2, 4, ... (the first N samples of each problem) under each aggregation
beside pass@1, majority vote and oracle pass@N. The same numbers for the zero-shot verification
prompt on the untrained base model and for the registry's champion go in the same report with
the prefixes `zero_shot_` and `champion_`, each `evaluate.scorers` PRM (any format public_prms.load_prm
reads) gets `scorer_<name>_`; `evaluate.external` files get `external_<name>_`.

The comparison (`compare_<scorer>_*`) puts the zero-shot verification prompt, the trained PRM, the
`evaluate.scorers` PRMs, the trained ORM (models/orm) and the combined score (`combine` weights x the
PRM's aggregate and the ORM's P(correct)) side by side on the same reported-part solutions: solution-level
correctness AUROC, best-of-N at N = 1, 2, 4, ..., and, where a scorer has step scores, step AUROC and
first-error F1 (the ORM's per-tag scores are value estimates: `compare_orm_step_value_auroc`).

Each headline metric (the PRM's step AUROC, first-error F1 and best-of-N by N for `evaluate.aggregation` and
majority vote; each scorer's comparison solution AUROC) gets a 95% interval, `<metric>_ci_low/_ci_high`, from a
bootstrap over the reported problems (bootstrap.py; `evaluate.bootstrap_samples` draws seeded by base.seed).

Writes `reports/metrics.json` (flat, for `dvc metrics diff`), `reports/plots/{roc,reliability,
best_of_n}.json` (DVC plots), PNG plots and `reports/summary.md` (eval_report.py), and logs them
to MLflow.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from prmflow.config import CombineParams, EvaluateParams, Params
from prmflow.data.answers import answer_agreement
from prmflow.evaluation.best_of_n import (
    best_of_n_metrics, best_of_n_resampled, best_of_n_table, evaluate_external, has_final_answer, solution_groups,
)
from prmflow.evaluation.bootstrap import (
    Resampled, intervals, weighted_auroc, weighted_binary_f1, weighted_first_error_f1, weighted_mean,
)
from prmflow.evaluation.inputs import load_champion, read_external
from prmflow.evaluation.metrics import (
    auroc, best_of_n_curve, choose_threshold, expected_calibration_error, first_error_f1, powers_of_two_up_to,
    reliability_bins, roc_points, step_metrics,
)
from prmflow.model.aggregation import AGGREGATIONS, aggregate, combine, predicted_first_error

# Process weights tried for the validated combined score (outcome weight = 1 - w), coarse on purpose:
# the validation part is a few hundred solutions.
PROCESS_WEIGHT_GRID = [i / 10 for i in range(11)]
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


def evaluate_scores(rows: list[dict], scores: list[list[float]], params: EvaluateParams) -> dict:
    """The flat metrics of `evaluate_solutions` (what the register stage compares)."""
    return evaluate_solutions(rows, scores, params).metrics


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


def baseline_metrics(prefix: str, evaluation: Evaluation) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in evaluation.metrics.items() if not k.startswith(SCORER_FREE)}


def main(params: Params) -> None:
    import time

    import torch

    import mlflow
    from prmflow.devices import Placement
    from prmflow.evaluation.report import summary_markdown, write_plots
    from prmflow.jsonl import read_jsonl, write_json
    from prmflow.model.modeling import ProcessRewardModel
    from prmflow.model.public_prms import load_prm
    from prmflow.model.rewards import TrainedOutcomeRewardModel
    from prmflow.model.zero_shot import ZeroShotVerifier
    from prmflow.tracking import stage_run, tracked_report

    torch.set_num_threads(params.base.num_threads)
    e = params.evaluate
    reports, model_dir = Path(params.base.reports_dir), Path(params.base.models_dir) / "prm"
    orm_dir = Path(params.base.models_dir) / "orm"
    if not orm_dir.is_dir():
        raise FileNotFoundError(f"{orm_dir}: no trained outcome reward model (run `prmflow train_orm` first)")
    rows = read_jsonl(Path(params.base.data_dir) / "rollouts" / "test.jsonl",
                      required=("problem_id", "problem", "steps", "labels", "first_error", "correct"))
    externals = [(spec, read_external(spec)) for spec in e.external]
    solutions = [(r["problem"], r["steps"]) for r in rows]
    with stage_run(params.base, "evaluate", e):
        placement = Placement.of(params.model)
        prm = ProcessRewardModel(model_dir, placement)
        prm_scores = prm.score_batch(solutions, e.batch_size)
        evaluations = {"prm": evaluate_solutions(rows, prm_scores, e)}
        metrics = dict(evaluations["prm"].metrics)
        orm_scores = TrainedOutcomeRewardModel.load(orm_dir, placement=placement).score_batch(solutions, e.batch_size)
        zero_shot = None  # (step scores, first-error threshold) of the zero-shot baseline, when it runs
        notes = [f"ORM: its solution score is P(+) at the last step tag; its earlier tags are value estimates "
                 f"(P(the solution ends correct | prefix)), so its step AUROC is against step labels it was not "
                 f"trained on. Combined = {params.combine.process_weight} x PRM {e.aggregation} + "
                 f"{params.combine.outcome_weight} x ORM (both probabilities)."]
        if metrics.get(f"best_of_n_prm_{e.aggregation}", 1.0) < metrics.get("best_of_n_majority", 0.0):
            notes.append(
                f"majority vote ({metrics['best_of_n_majority']:.3f}) beats PRM best-of-{metrics['best_of_n_n']} "
                f"({e.aggregation}: {metrics[f'best_of_n_prm_{e.aggregation}']:.3f}): in "
                f"{metrics['answers_repeated_right_share']:.0%} of problems two samples share the right answer, "
                f"in only {metrics['answers_repeated_wrong_share']:.0%} two share a wrong one, so the vote is "
                f"right almost whenever two samples are; the PRM must separate right from wrong solutions better than "
                f"its step AUROC of {metrics['step_auroc']:.3f} to pick as well.")
        if e.zero_shot_baseline:
            started = time.perf_counter()
            verifier = ZeroShotVerifier.untrained_base(params.model, model_dir, params.base.seed)
            zero_shot_scores = verifier.score_batch(solutions, e.batch_size)
            evaluations["zero_shot"] = evaluate_solutions(rows, zero_shot_scores, e)
            zero_shot = (zero_shot_scores, evaluations["zero_shot"].metrics["first_error_threshold"])
            metrics |= baseline_metrics("zero_shot", evaluations["zero_shot"])
            metrics["zero_shot_seconds"] = time.perf_counter() - started
        if e.champion_baseline:
            champion, where = load_champion(params)
            if champion is None:
                notes.append(f"champion: skipped, {where}.")
            else:
                evaluations["champion"] = evaluate_solutions(rows, champion.score_batch(solutions, e.batch_size), e)
                metrics |= baseline_metrics("champion", evaluations["champion"])
                notes.append(f"champion: {where}.")
        scorers = {}  # evaluate.scorers: (step scores, first-error threshold) of each other PRM, by name
        for spec in e.scorers:
            steps = load_prm(spec["path"], spec.get("format"), placement).score_batch(solutions, e.batch_size)
            evaluations[spec["name"]] = evaluate_solutions(rows, steps, e)
            scorers[spec["name"]] = (steps, evaluations[spec["name"]].metrics["first_error_threshold"])
            metrics |= baseline_metrics(f"scorer_{spec['name']}", evaluations[spec["name"]])
        compared = comparison(prm_scores, metrics["first_error_threshold"], orm_scores, e.aggregation, params.combine,
                              zero_shot, scorers)
        weight = validated_process_weight(rows, compared["prm"].solution, compared["orm"].solution,
                                          e.validation_fraction)
        if weight is not None:  # what the configured `combine` weights would be if chosen on held-out data
            compared["combined_validated"] = Compared(combined_solution(compared["prm"].solution,
                                                                        compared["orm"].solution, weight, 1 - weight))
            metrics["combined_validated_process_weight"] = weight
            notes.append(f"combined, validated: process weight {weight:.1f} (outcome {1 - weight:.1f}), the best "
                         f"solution AUROC on the validation part of the grid 0, 0.1, ..., 1.")
        metrics |= compare_scorers(rows, compared, e.validation_fraction)
        uncertainty = intervals(headline_resampled(rows, prm_scores, e), e.bootstrap_samples, params.base.seed)
        evaluations["prm"].metrics |= uncertainty
        metrics |= uncertainty | intervals(comparison_resampled(rows, compared, e.validation_fraction),
                                           e.bootstrap_samples, params.base.seed)
        externals_metrics = {}
        for spec, ext_rows in externals:
            ext_scores = prm.score_batch([(r["problem"], r["steps"]) for r in ext_rows], e.batch_size)
            externals_metrics[spec["name"]] = evaluate_external(spec["format"], ext_rows, ext_scores,
                                                                metrics["first_error_threshold"], e.aggregation,
                                                                e.bootstrap_samples, params.base.seed)
            metrics |= {f"external_{spec['name']}_{k}": v for k, v in externals_metrics[spec["name"]].items()}
        plots = reports / "plots"
        prm_eval = evaluations["prm"]
        write_json(reports / "metrics.json", tracked_report(metrics))
        write_json(plots / "roc.json", prm_eval.roc)
        write_json(plots / "reliability.json", prm_eval.reliability)
        write_json(plots / "best_of_n.json", [{"n": n, **row} for n, row in sorted(prm_eval.best_of_n.items())])
        pngs = write_plots(evaluations, plots)
        (reports / "summary.md").write_text(summary_markdown(evaluations, externals_metrics, notes, metrics))
        mlflow.log_metrics(metrics)
        for path in [reports / "metrics.json", reports / "summary.md", *pngs]:
            mlflow.log_artifact(str(path))
        headline = ("step_auroc", "step_ece", "first_error_f1", "first_error_threshold", "best_of_n_prm_min",
                    "best_of_n_majority", "compare_prm_solution_auroc", "compare_orm_solution_auroc",
                    "compare_combined_solution_auroc", "zero_shot_first_error_f1", "champion_first_error_f1")
        print("evaluate: " + ", ".join(f"{k}={metrics[k]:.3f}" for k in headline if k in metrics))
        print("\n".join(notes))
