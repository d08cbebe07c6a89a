"""Stage `label`: Monte-Carlo step labels, as in Math-Shepherd.

    prmflow label             # reads params.yaml: base, label

For each problem, sample trajectories with the policy; for each step prefix z_1..z_t sample
N completions. The soft label (value) is the fraction of completions that reach the
reference answer; the hard label is `+` when any does. The simulated policy also gives the
true first error, kept beside the MC one so label quality can be measured.
"""

from __future__ import annotations

import random
from pathlib import Path

from prmflow.calc import to_number
from prmflow.config import LabelParams, Params
from prmflow.policy import SimulatedPolicy, make_policy

SPLITS = ("train", "test")


def answers_match(predicted: str, reference: str) -> bool:
    try:
        return to_number(predicted) == to_number(reference)
    except (ValueError, ZeroDivisionError):
        return False


def first_error(labels: list[str]) -> int:
    return next((i for i, label in enumerate(labels) if label == "-"), -1)


def mc_values(policy: SimulatedPolicy, problem: dict, steps: list[str], completions: int,
              rng: random.Random) -> list[float]:
    """For every prefix z_1..z_t, the fraction of `completions` continuations that reach the answer."""
    values = []
    for t in range(1, len(steps) + 1):
        # A full-length prefix has nothing left to sample: one deterministic check suffices.
        n = completions if t < len(steps) else 1
        hits = sum(
            answers_match(policy.continue_from(problem, steps[:t], rng).final_answer, problem["answer"])
            for _ in range(n)
        )
        values.append(hits / n)
    return values


def label_problem(policy: SimulatedPolicy, problem: dict, params: LabelParams, seed: int) -> list[dict]:
    rng = random.Random(f"{seed}:{problem['id']}")  # per-problem stream: order-independent, resumable
    rows = []
    for k in range(params.trajectories_per_problem):
        trajectory = policy.sample_trajectory(problem, rng)
        values = mc_values(policy, problem, trajectory.steps, params.completions_per_step, rng)
        labels = ["+" if v > 0 else "-" for v in values]
        rows.append({
            "id": f"{problem['id']}-{k}",
            "problem_id": problem["id"],
            "problem": problem["problem"],
            "steps": trajectory.steps,
            "labels": labels,
            "values": values,
            "answer": problem["answer"],
            "predicted_answer": trajectory.final_answer,
            "correct": answers_match(trajectory.final_answer, problem["answer"]),
            "first_error": first_error(labels),
            "true_first_error": trajectory.first_slip,
            "policy": policy.name,
        })
    return rows


def prelabeled_row(problem: dict) -> dict:
    """A solution that came with its labels (PRM800K, Math-Shepherd, ...): passed through unchanged."""
    labels = problem["labels"]
    return {
        "id": problem["id"], "problem_id": problem["problem_id"], "problem": problem["problem"],
        "steps": problem["steps"], "labels": labels, "values": problem["values"], "answer": problem["answer"],
        "predicted_answer": problem.get("predicted_answer", ""), "correct": "-" not in labels,
        "first_error": first_error(labels), "true_first_error": first_error(labels), "policy": problem["source"],
    }


def label_problems(problems: list[dict], params: LabelParams, seed: int) -> list[dict]:
    policy = make_policy(params)
    rows = []
    for problem in problems:
        if "labels" in problem:
            rows.append(prelabeled_row(problem))
        else:
            rows += label_problem(policy, problem, params, seed)
    return rows


def label_summary(rows: list[dict]) -> dict[str, float]:
    steps = [label for row in rows for label in row["labels"]]
    agree = sum(row["first_error"] == row["true_first_error"] for row in rows)
    return {
        "solutions": len(rows),
        "steps": len(steps),
        "negative_step_fraction": steps.count("-") / max(len(steps), 1),
        "solution_accuracy": sum(row["correct"] for row in rows) / max(len(rows), 1),
        "first_error_agreement": agree / max(len(rows), 1),
    }


def main(params: Params) -> None:
    import mlflow

    from prmflow.ingest import REQUIRED_FIELDS
    from prmflow.jsonl import read_jsonl, write_jsonl
    from prmflow.tracking import stage_run

    data = Path(params.base.data_dir)
    with stage_run(params.base, "label", params.label):
        for split in SPLITS:
            problems = read_jsonl(data / "problems" / f"{split}.jsonl", required=REQUIRED_FIELDS)
            rows = label_problems(problems, params.label, params.base.seed)
            write_jsonl(data / "rollouts" / f"{split}.jsonl", rows)
            summary = label_summary(rows)
            mlflow.log_metrics({f"{split}_{k}": v for k, v in summary.items()})
            print(f"label {split}: {summary}")
