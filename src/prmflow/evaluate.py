"""Stage `evaluate`: score the held-out rollouts with the trained PRM.

    prmflow evaluate          # reads params.yaml: base, evaluate

Step level (accuracy, `-` F1, AUROC against the MC labels), first-error F1 (ProcessBench
protocol) and best-of-N: per problem, the sampled solution with the best aggregated PRM
score, beside majority vote, pass@1 and oracle pass@N. Writes `reports/metrics.json` and
`reports/plots/roc.json`.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from prmflow.config import EvaluateParams, Params
from prmflow.metrics import (
    AGGREGATIONS, aggregate, best_of_n, first_error_f1, predicted_first_error, roc_points, step_metrics,
)


def evaluate_scores(rows: list[dict], scores: list[list[float]], params: EvaluateParams) -> dict:
    """All metrics from the rollouts and their step scores (solutions with no scored step are skipped)."""
    scored = [(row, s) for row, s in zip(rows, scores) if s]
    flat_scores = [x for _, s in scored for x in s]
    flat_labels = [label for row, s in scored for label in row["labels"][: len(s)]]
    metrics = step_metrics(flat_scores, flat_labels, params.threshold)
    metrics |= first_error_f1(
        [predicted_first_error(s, params.threshold) for _, s in scored],
        [row["first_error"] if row["first_error"] < len(s) else -1 for row, s in scored],
    )
    groups: dict[str, list] = defaultdict(lambda: {how: [] for how in AGGREGATIONS})
    for row, s in scored:
        for how in AGGREGATIONS:
            groups[row["problem_id"]][how].append((aggregate(s, how), row["predicted_answer"], row["correct"]))
    best = {}
    for how in AGGREGATIONS:
        result = best_of_n([g[how] for g in groups.values()])
        best[f"prm_{how}"] = result["prm"]
        best |= {k: v for k, v in result.items() if k != "prm"}
    sizes = {len(g["min"]) for g in groups.values()}
    metrics |= {f"best_of_n_{k}": v for k, v in best.items()}
    metrics |= {
        "best_of_n_n": max(sizes) if sizes else 0,
        "solutions": len(scored),
        "steps": len(flat_scores),
        "unscored_solutions": len(rows) - len(scored),
    }
    return metrics


def main(params: Params) -> None:
    import mlflow
    import torch

    from prmflow.jsonl import read_jsonl, write_json
    from prmflow.modeling import ProcessRewardModel
    from prmflow.tracking import stage_run

    torch.set_num_threads(params.base.num_threads)
    reports = Path(params.base.reports_dir)
    rows = read_jsonl(Path(params.base.data_dir) / "rollouts" / "test.jsonl",
                      required=("problem_id", "problem", "steps", "labels", "first_error", "correct"))
    with stage_run(params.base, "evaluate", params.evaluate):
        prm = ProcessRewardModel(Path(params.base.models_dir) / "prm")
        scores = prm.score_batch([(r["problem"], r["steps"]) for r in rows], params.evaluate.batch_size)
        metrics = evaluate_scores(rows, scores, params.evaluate)
        flat = [x for s in scores for x in s]
        positives = [label == "+" for r, s in zip(rows, scores) for label in r["labels"][: len(s)]]
        write_json(reports / "metrics.json", metrics)
        write_json(reports / "plots" / "roc.json", roc_points(flat, positives))
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(reports / "metrics.json"))
        print("evaluate: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
