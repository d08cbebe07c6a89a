"""Stage `label`: step labels from policy rollouts, as in Math-Shepherd (or OmegaPRM's binary search).

    prmflow label             # reads params.yaml: base, label

For each problem, sample trajectories with the policy and label their steps with `label.method`
(step_labels.py). The simulated policy also gives the true first error, kept beside the
labeled one so label quality can be measured (reports/labeling.json); with it, every method
also labels the first `label.compare_methods_on` train problems, side by side in the report.

Resumable: each labeled problem is appended, as one line, to a partial file outside
data/rollouts (data/.label_partial/<split>-<hash of params, seed and input>.jsonl) and flushed.
A killed run restarts from the problems already there; per-problem random streams make the
result the same as an uninterrupted run. The final data/rollouts/<split>.jsonl is written
atomically at the end and the partial file removed, so DVC never sees it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from prmflow.config import LabelParams, Params
from prmflow.data.answers import answer_agreement
from prmflow.labeling.policies import make_policy
from prmflow.labeling.policy import Policy
from prmflow.labeling.step_labels import METHODS, AnswerChecker, make_labeler

SPLITS = ("train", "test")


def first_error(labels: list[str]) -> int:
    return next((i for i, label in enumerate(labels) if label == "-"), -1)


@dataclass
class ProblemLabels:
    """The labeled solutions of one problem and what labeling them cost."""

    problem_id: str
    rows: list[dict]
    policy_calls: int = 0
    answer_checks: int = 0
    unparseable_answers: int = 0
    generated_tokens: int = 0  # model policies only; the simulated policy writes text, not tokens


def label_problem(policy: Policy, problem: dict, params: LabelParams, seed: int) -> ProblemLabels:
    # Per-problem streams (order-independent, resumable); trajectories get their own, so that every
    # method labels the same trajectories and methods compare pair by pair.
    rng = random.Random(f"{seed}:{problem['id']}")
    completion_rng = random.Random(f"{seed}:{problem['id']}:completions")
    check = AnswerChecker()
    labeler = make_labeler(params)
    rows, calls = [], 0
    tokens_before = getattr(policy, "generated_tokens", 0)
    for k in range(params.trajectories_per_problem):
        trajectory = policy.sample_trajectory(problem, rng)
        step_labels = labeler(policy, problem, trajectory, rng=completion_rng, check=check)
        calls += 1 + step_labels.policy_calls
        rows.append({
            "id": f"{problem['id']}-{k}",
            "problem_id": problem["id"],
            "problem": problem["problem"],
            "steps": trajectory.steps,
            "labels": step_labels.labels,
            "values": step_labels.values,
            "answer": problem["answer"],
            "predicted_answer": trajectory.final_answer,
            "correct": check(trajectory.final_answer, problem["answer"]),
            "first_error": first_error(step_labels.labels),
            "true_first_error": trajectory.first_slip,
            "policy": policy.name,
        })
    return ProblemLabels(problem["id"], rows, calls, check.checks, check.unparseable,
                         getattr(policy, "generated_tokens", 0) - tokens_before)


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
    return [row for result in label_split(problems, params, seed) for row in result.rows]


def label_one(policy: Policy, problem: dict, params: LabelParams, seed: int) -> ProblemLabels:
    if "labels" in problem:
        return ProblemLabels(problem["id"], [prelabeled_row(problem)])
    return label_problem(policy, problem, params, seed)


def _read_partial(path: Path) -> dict[str, ProblemLabels]:
    """Problems already labeled by an earlier, interrupted run; a torn last line is cut off."""
    done: dict[str, ProblemLabels] = {}
    if not path.exists():
        return done
    good_bytes = 0
    with path.open("rb") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break  # killed mid-write: this line and anything after it is redone
            if not line.endswith(b"\n"):
                break
            done[record["problem_id"]] = ProblemLabels(**record)
            good_bytes += len(line)
    with path.open("r+b") as handle:
        handle.truncate(good_bytes)
    return done


def label_split(problems: list[dict], params: LabelParams, seed: int, partial: Path | None = None,
                placement: tuple[str, str] = ("auto", "auto")) -> list[ProblemLabels]:
    """Label every problem, in order; with `partial`, resume from and append to that file.

    `placement` is the (device, dtype) a model-backed policy loads its model with (`model.device`, `model.dtype`).
    """
    policy = make_policy(params, seed, *placement)
    done = _read_partial(partial) if partial else {}
    handle = None
    if partial:
        partial.parent.mkdir(parents=True, exist_ok=True)
        handle = partial.open("a")
    # Rate and ETA on a terminal; off in logs (disable=None), where dvc/Prefect capture the output.
    progress = tqdm(problems, desc=f"label ({params.method}, {policy.name})", unit="problem", disable=None,
                    mininterval=1.0)
    try:
        results, calls = [], 0
        for problem in progress:
            result = done.get(problem["id"])
            if result is None:
                result = label_one(policy, problem, params, seed)
                if handle:
                    handle.write(json.dumps(dataclasses.asdict(result), ensure_ascii=False) + "\n")
                    handle.flush()
            results.append(result)
            calls += result.policy_calls
            progress.set_postfix(calls=calls, refresh=False)
        return results
    finally:
        progress.close()
        if handle:
            handle.close()


def partial_path(data_dir: Path, split: str, params: LabelParams, seed: int, problems_file: Path) -> Path:
    """Keyed by everything the labels depend on, so a partial file is never reused for other inputs."""
    key = hashlib.sha256()
    key.update(json.dumps({"label": dataclasses.asdict(params), "seed": seed}, sort_keys=True).encode())
    key.update(problems_file.read_bytes())
    return data_dir / ".label_partial" / f"{split}-{key.hexdigest()[:16]}.jsonl"


def true_labels(row: dict) -> list[str]:
    """`+` before the policy's first slip, `-` from it on (a slip carries forward to the answer)."""
    slip = row["true_first_error"]
    return ["+" if slip < 0 or i < slip else "-" for i in range(len(row["steps"]))]


def label_summary(rows: list[dict], results: list[ProblemLabels] = ()) -> dict[str, float]:
    steps = [label for row in rows for label in row["labels"]]
    judged = [row for row in rows if row.get("true_first_error") is not None]
    pairs = [(a, b) for row in judged for a, b in zip(row["labels"], true_labels(row))]
    calls = sum(r.policy_calls for r in results)
    # Agreement only where the true first error is known (simulated policy, pre-labeled data).
    agreement = {
        "first_error_agreement": sum(row["first_error"] == row["true_first_error"] for row in judged) / len(judged),
        "hard_label_agreement": sum(a == b for a, b in pairs) / max(len(pairs), 1),
    } if judged else {}
    return {
        "solutions": len(rows),
        "steps": len(steps),
        "negative_step_fraction": steps.count("-") / max(len(steps), 1),
        "solution_accuracy": sum(row["correct"] for row in rows) / max(len(rows), 1),
        **answer_agreement(rows),  # how often samples of a problem repeat an answer: what majority vote rests on
        **agreement,
        "policy_calls": calls,
        "policy_calls_per_labeled_step": calls / max(len(steps), 1),
        "answer_checks": sum(r.answer_checks for r in results),
        "generated_tokens": sum(r.generated_tokens for r in results),
        "unparseable_answers": sum(r.unparseable_answers for r in results),
    }


def compare_methods(problems: list[dict], params: LabelParams, seed: int) -> dict[str, dict[str, float]]:
    """Every method's label summary on the same problems and trajectories (simulated policy: cheap)."""
    comparison = {}
    for method in METHODS:
        results = label_split(problems, dataclasses.replace(params, method=method), seed)
        comparison[method] = label_summary([row for r in results for row in r.rows], results)
    return comparison


def main(params: Params) -> None:
    import mlflow

    from prmflow.data.contract import PROBLEM_FIELDS, PROBLEM_TYPES
    from prmflow.jsonl import RecordError, read_jsonl, write_json, write_jsonl
    from prmflow.tracking import stage_run

    data = Path(params.base.data_dir)
    report = {"policy": params.label.policy, "method": params.label.method}
    with stage_run(params.base, "label", params.label):
        for split in SPLITS:
            source = data / "problems" / f"{split}.jsonl"
            problems = read_jsonl(source, required=PROBLEM_FIELDS, types=PROBLEM_TYPES)
            if not problems:
                raise RecordError(f"{source}: no problems (the file is empty: rerun `prmflow ingest`)")
            partial = partial_path(data, split, params.label, params.base.seed, source)
            results = label_split(problems, params.label, params.base.seed, partial,
                                  (params.model.device, params.model.dtype))
            rows = [row for result in results for row in result.rows]
            write_jsonl(data / "rollouts" / f"{split}.jsonl", rows)
            partial.unlink()
            with contextlib.suppress(OSError):  # the folder goes too once no split has a partial file
                partial.parent.rmdir()
            report[split] = summary = label_summary(rows, results)
            mlflow.log_metrics({f"{split}_{k}": v for k, v in summary.items()})
            print(f"label {split}: {summary}")
        if params.label.policy == "simulated" and params.label.compare_methods_on > 0:
            sample = read_jsonl(data / "problems" / "train.jsonl")[:params.label.compare_methods_on]
            report["method_comparison"] = comparison = compare_methods(sample, params.label, params.base.seed)
            mlflow.log_metrics({f"{method}_{key}": comparison[method][key] for method in METHODS
                                for key in ("first_error_agreement", "policy_calls_per_labeled_step")})
        write_json(Path(params.base.reports_dir) / "labeling.json", report)
