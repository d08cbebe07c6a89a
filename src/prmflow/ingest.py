"""Stage `ingest`: write the problems of the train and test splits.

    prmflow ingest            # reads params.yaml: base, ingest

Writes `data/problems/{train,test}.jsonl` (`id, problem, answer, reference_steps, source`)
and `data/problems/rejects.jsonl` (rows that failed a check, each with its reason).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from prmflow.calc import ANNOTATION, parse_step, to_number
from prmflow.config import IngestParams, Params
from prmflow.generator import generate_problems

SOURCE = "generator"
REQUIRED_FIELDS = ("id", "problem", "answer", "reference_steps", "source")


def problem_id(problem: str) -> str:
    """Stable id from the text, so the same problem has the same id in every run."""
    return hashlib.sha1(problem.encode()).hexdigest()[:12]


def check_problem(row: dict) -> str | None:
    """Why a problem is unusable for MC labeling, or None when it is fine."""
    if not str(row.get("problem", "")).strip():
        return "problem: empty"
    try:
        to_number(str(row.get("answer", "")))
    except (ValueError, ZeroDivisionError):
        return f"answer: not a number: {row.get('answer')!r}"
    steps = row.get("reference_steps")
    if not isinstance(steps, list) or not steps:
        return "reference_steps: empty"
    results = []
    for i, text in enumerate(steps):
        if not ANNOTATION.search(text):
            continue
        step = parse_step(text, results)
        if step is None:
            return f"reference_steps[{i}]: unreadable calculator annotation"
        if step.compute(results) != step.result:
            return f"reference_steps[{i}]: annotation arithmetic is wrong"
        results.append(step.result)
    return None


def build_splits(params: IngestParams, seed: int) -> tuple[dict[str, list[dict]], list[dict]]:
    """Generate both splits from one seeded stream; a problem never lands in both."""
    total = params.num_train + params.num_test
    generated = generate_problems(total, seed, params.min_steps, params.max_steps, params.max_operand)
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    rejects: list[dict] = []
    for index, row in enumerate(generated):
        row = {"id": problem_id(row["problem"]), **row, "source": SOURCE}
        reason = check_problem(row)
        if reason:
            rejects.append({**row, "reason": reason})
            continue
        splits["train" if index < params.num_train else "test"].append(row)
    return splits, rejects


def main(params: Params) -> None:
    from prmflow.jsonl import write_jsonl
    from prmflow.tracking import stage_run

    out = Path(params.base.data_dir) / "problems"
    splits, rejects = build_splits(params.ingest, params.base.seed)
    with stage_run(params.base, "ingest", params.ingest):
        import mlflow

        for split, rows in splits.items():
            write_jsonl(out / f"{split}.jsonl", rows)
        write_jsonl(out / "rejects.jsonl", rejects)
        counts = {f"{split}_problems": len(rows) for split, rows in splits.items()}
        mlflow.log_metrics({**counts, "rejected_problems": len(rejects)})
        print(f"ingest: {counts}, rejected {len(rejects)} -> {out}")
