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
the prefixes `zero_shot_` and `champion_`, each `evaluate.scorers` PRM (any format prmflow.load
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
best_of_n}.json` (DVC plots), PNG plots and `reports/summary.md` (report.py), and logs them
to MLflow.

The stage runs in three steps, each in its own place: `collect_scores` loads each scorer and scores the
held-out solutions (here); `measure` turns scores into metrics (heldout_metrics.py for one scorer,
comparison.py for the side by side, bootstrap.py for intervals); `write_reports` writes and logs the files
(report.py draws the plots and the summary).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from prmflow.config import Params
from prmflow.evaluation.best_of_n import evaluate_external
from prmflow.evaluation.bootstrap import intervals
from prmflow.evaluation.comparison import (
    Compared, combined_solution, compare_scorers, comparison, comparison_resampled, validated_process_weight,
)
from prmflow.evaluation.heldout_metrics import Evaluation, baseline_metrics, evaluate_solutions, headline_resampled
from prmflow.evaluation.inputs import load_champion, read_external
from prmflow.evaluation.metrics import coverage_warning, step_coverage

# Printed at the end of the stage, when present.
PRINTED = ("step_auroc", "step_ece", "first_error_f1", "first_error_threshold", "best_of_n_prm_min",
           "best_of_n_majority", "compare_prm_solution_auroc", "compare_orm_solution_auroc",
           "compare_combined_solution_auroc", "zero_shot_first_error_f1", "champion_first_error_f1")


@dataclass
class Collected:
    """Step scores (P(+) per step; the ORM's: a value at each tag) of every scorer on the held-out solutions."""

    prm: list[list[float]]
    orm: list[list[float]]
    zero_shot: list[list[float]] | None = None       # None: `evaluate.zero_shot_baseline` off
    zero_shot_seconds: float = 0.0                   # loading and scoring the zero-shot baseline
    champion: list[list[float]] | None = None        # None: off, or no champion (`champion_where` says why)
    champion_where: str = ""
    scorers: dict[str, list[list[float]]] = field(default_factory=dict)     # evaluate.scorers, by name
    externals: list[tuple[dict, list[dict], list[list[float]]]] = field(default_factory=list)  # (spec, rows, PRM's)
    cut: dict[str, list[int]] = field(default_factory=dict)  # steps the PRM cut inside, per solution: heldout, externals
    context: str = ""                                # the PRM's context, as warnings name it


def collect_scores(params: Params, rows: list[dict], externals: list[tuple[dict, list[dict]]]) -> Collected:
    """Load each scorer the params ask for, on `model.device` in `model.dtype`, and score `rows` with it (and the
    `evaluate.external` rows with the trained PRM)."""
    import torch

    from prmflow.devices import Placement
    from prmflow.scoring.load import load
    from prmflow.scoring.rewards import TrainedOutcomeRewardModel
    from prmflow.scoring.zero_shot import ZeroShotVerifier

    torch.set_num_threads(params.base.num_threads)
    e, placement = params.evaluate, Placement.of(params.model)
    model_dir, orm_dir = Path(params.base.models_dir) / "prm", Path(params.base.models_dir) / "orm"
    solutions = [(r["problem"], r["steps"]) for r in rows]
    prm = load(model_dir, placement=placement, batch_size=e.batch_size)
    heldout_scores, heldout_details = prm.step_scores(solutions)
    collected = Collected(heldout_scores,
                          TrainedOutcomeRewardModel.load(orm_dir, placement=placement).score_batch(solutions, e.batch_size))
    collected.context = f"{prm.scorer.format.max_length} tokens (model.max_length)"
    collected.cut["heldout"] = [len(d["truncated_steps"]) for d in heldout_details]
    if e.zero_shot_baseline:
        started = time.perf_counter()
        verifier = ZeroShotVerifier.untrained_base(params.model, model_dir, params.base.seed)
        collected.zero_shot = verifier.score_batch(solutions, e.batch_size)
        collected.zero_shot_seconds = time.perf_counter() - started
    if e.champion_baseline:
        champion, collected.champion_where = load_champion(params)
        if champion is not None:
            # In evaluate.batch_size batches, as the trained PRM (its `score` would run the server's scoring loop).
            collected.champion = champion.scorer.score_batch(solutions, e.batch_size)
    for spec in e.scorers:
        collected.scorers[spec["name"]] = load(spec["path"], format=spec.get("format"), placement=placement,
                                               batch_size=e.batch_size).step_scores(solutions)[0]
    for spec, ext_rows in externals:
        ext_scores, ext_details = prm.step_scores([(r["problem"], r["steps"]) for r in ext_rows])
        collected.externals.append((spec, ext_rows, ext_scores))
        collected.cut[spec["name"]] = [len(d["truncated_steps"]) for d in ext_details]
    return collected


@dataclass
class Measured:
    """What the reports are written from."""

    metrics: dict[str, float]                 # reports/metrics.json
    evaluations: dict[str, Evaluation]        # one per step scorer: plots and the summary's tables
    externals: dict[str, dict[str, float]]    # evaluate.external, by name


def measure(params: Params, rows: list[dict], collected: Collected) -> Measured:
    """Every metric of the stage from the collected scores: the PRM's, each baseline's (prefixed), the
    comparison, bootstrap intervals and the external sets."""
    e, seed = params.evaluate, params.base.seed
    evaluations = {"prm": evaluate_solutions(rows, collected.prm, e)}
    metrics = dict(evaluations["prm"].metrics) | step_coverage(
        [len(r["steps"]) for r in rows], collected.prm, collected.cut.get("heldout"))
    zero_shot = None  # (step scores, first-error threshold) of the zero-shot baseline, when it ran
    if collected.zero_shot is not None:
        evaluations["zero_shot"] = evaluate_solutions(rows, collected.zero_shot, e)
        zero_shot = (collected.zero_shot, evaluations["zero_shot"].metrics["first_error_threshold"])
        metrics |= baseline_metrics("zero_shot", evaluations["zero_shot"])
        metrics["zero_shot_seconds"] = collected.zero_shot_seconds
    if collected.champion is not None:
        evaluations["champion"] = evaluate_solutions(rows, collected.champion, e)
        metrics |= baseline_metrics("champion", evaluations["champion"])
    scorers = {}  # evaluate.scorers: (step scores, first-error threshold) of each other PRM, by name
    for name, steps in collected.scorers.items():
        evaluations[name] = evaluate_solutions(rows, steps, e)
        scorers[name] = (steps, evaluations[name].metrics["first_error_threshold"])
        metrics |= baseline_metrics(f"scorer_{name}", evaluations[name])
    compared = comparison(collected.prm, metrics["first_error_threshold"], collected.orm, e.aggregation,
                          params.combine, zero_shot, scorers)
    weight = validated_process_weight(rows, compared["prm"].solution, compared["orm"].solution, e.validation_fraction)
    if weight is not None:  # what the configured `combine` weights would be if chosen on held-out data
        compared["combined_validated"] = Compared(combined_solution(compared["prm"].solution,
                                                                    compared["orm"].solution, weight, 1 - weight))
        metrics["combined_validated_process_weight"] = weight
    metrics |= compare_scorers(rows, compared, e.validation_fraction)
    uncertainty = intervals(headline_resampled(rows, collected.prm, e), e.bootstrap_samples, seed)
    evaluations["prm"].metrics |= uncertainty
    metrics |= uncertainty | intervals(comparison_resampled(rows, compared, e.validation_fraction),
                                       e.bootstrap_samples, seed)
    externals = {}
    for spec, ext_rows, ext_scores in collected.externals:
        externals[spec["name"]] = step_coverage([len(r["steps"]) for r in ext_rows], ext_scores,
                                                collected.cut.get(spec["name"])) | evaluate_external(
            spec["format"], ext_rows, ext_scores, metrics["first_error_threshold"], e.aggregation,
            e.bootstrap_samples, seed, e.answer_reading)
        metrics |= {f"external_{spec['name']}_{k}": v for k, v in externals[spec["name"]].items()}
    return Measured(metrics, evaluations, externals)


def coverage_warnings(measured: Measured, limit: float, context: str) -> list[str]:
    """A warning for the held-out set and each external set whose unscored share of steps exceeds `limit`."""
    sets = {"held-out rollouts": measured.metrics} | {f"evaluate.external {n}": m for n, m in measured.externals.items()}
    return [w for where, coverage in sets.items() if (w := coverage_warning(where, coverage, limit, context))]


def write_reports(params: Params, measured: Measured, notes: list[str]) -> None:
    """reports/metrics.json, the DVC plots' JSON, PNG plots and summary.md; logged to the active MLflow run."""
    import mlflow
    from prmflow.evaluation.report import summary_markdown, write_plots
    from prmflow.jsonl import write_json
    from prmflow.tracking import tracked_report

    reports = Path(params.base.reports_dir)
    plots, prm_eval, metrics = reports / "plots", measured.evaluations["prm"], measured.metrics
    write_json(reports / "metrics.json", tracked_report(metrics))
    write_json(plots / "roc.json", prm_eval.roc)
    write_json(plots / "reliability.json", prm_eval.reliability)
    write_json(plots / "best_of_n.json", [{"n": n, **row} for n, row in sorted(prm_eval.best_of_n.items())])
    pngs = write_plots(measured.evaluations, plots)
    (reports / "summary.md").write_text(summary_markdown(measured.evaluations, measured.externals, notes, metrics))
    mlflow.log_metrics(metrics)
    for path in [reports / "metrics.json", reports / "summary.md", *pngs]:
        mlflow.log_artifact(str(path))


def main(params: Params) -> None:
    from prmflow.evaluation.report import evaluation_notes
    from prmflow.jsonl import read_jsonl
    from prmflow.tracking import stage_run

    e = params.evaluate
    orm_dir = Path(params.base.models_dir) / "orm"
    if not orm_dir.is_dir():
        raise FileNotFoundError(f"{orm_dir}: no trained outcome reward model (run `prmflow train_orm` first)")
    rows = read_jsonl(Path(params.base.data_dir) / "rollouts" / "test.jsonl",
                      required=("problem_id", "problem", "steps", "labels", "first_error", "correct"))
    externals = [(spec, read_external(spec)) for spec in e.external]
    with stage_run(params.base, "evaluate", e):
        collected = collect_scores(params, rows, externals)
        measured = measure(params, rows, collected)
        champion = (collected.champion is not None, collected.champion_where) if e.champion_baseline else None
        notes = coverage_warnings(measured, e.max_unscored_step_fraction, collected.context)
        notes += evaluation_notes(measured.metrics, params, champion)
        write_reports(params, measured, notes)
        print("evaluate: " + ", ".join(f"{k}={measured.metrics[k]:.3f}" for k in PRINTED if k in measured.metrics))
        print("\n".join(notes))
