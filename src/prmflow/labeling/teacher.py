"""Teacher step labels: a teacher PRM's scores of each candidate's steps, as soft or thresholded hard labels.

Distilling a larger PRM's step scores into a small one is the teacher source of step labels (Qwen's
"Lessons of developing PRMs" compares it with Monte-Carlo labels; the scores here come cached in a file):

    scores, rejects = read_teacher_scores(Path("teacher_step_scores_dev.jsonl"), ["qwen_prm"])
    rows, rejects = teacher_rows(candidates, scores, params, problems_file)

The file holds one JSON object a line, `{id, step_scores: {model: [score per step]}}`, scores in [0, 1],
in the order of the candidate's `steps` as the source wrote them (the scores of leading steps that ingest
cut away as a chat transcript, `leading_steps_dropped`, are dropped); an optional `first_step` says the
scores start at that step of the source's (a file written from ingested steps: teacher_model.py).
The scores may also come from a PRM asked now (`label.teacher_model`: teacher_model.py), the same path on. Several teachers are combined step
by step (`label.teacher_combine`: mean, min or max of their scores); a step is `+` where the combined
score is at least `label.teacher_threshold`, else `-`, and the solution's first error is its first `-`.
Values are the combined score (`teacher_labels: soft`) or 1/0 from the labels (`hard`).

A candidate whose id has no scores, whose step count differs from its scores', or whose scores are bad is
rejected with the file, line and field at fault; so is a bad line of the teacher file. Nothing is dropped
silently: the label stage writes every reject beside the labeled rows and counts them in its report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from statistics import mean

from prmflow.config import LabelParams
from prmflow.labeling.engine import first_error, prelabeled_row

COMBINE = {"mean": mean, "min": min, "max": max}


def teacher_reject(file: str | Path, line: int, field: str, reason: str, row_id: str | None = None) -> dict:
    return {"file": str(file), "line": line, "kind": "teacher", "field": field, "id": row_id,
            "reason": f"{field}: {reason}"}


def _scores_problem(values: object) -> str | None:
    if not isinstance(values, list) or not values:
        return "expected a non-empty list of step scores"
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0 <= value <= 1:
            return f"score {i} is {value!r}, not a number in [0, 1]"
    return None


def read_teacher_scores(path: Path, models: list[str]) -> tuple[dict[str, dict], list[dict]]:
    """`{id: {"line": n, "scores": {model: [float]}}}` for `models`, and the rejected lines of the file.

    Raises FileNotFoundError when `path` does not exist. A line that is not a JSON object, lacks `id` or one
    of `models`, repeats an earlier id, or has a score outside [0, 1] is a reject (file, line, field).
    """
    if not path.is_file():
        raise FileNotFoundError(f"label.teacher_file {path}: no such file")
    scores, rejects = {}, []
    with path.open("rb") as handle:
        for lineno, data in enumerate(handle, start=1):
            if not data.strip():
                continue
            try:
                raw = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                rejects.append(teacher_reject(path, lineno, "(line)", f"not valid JSON: {err}"))
                continue
            row_id = raw.get("id") if isinstance(raw, dict) else None
            if not isinstance(row_id, str) or not row_id:
                rejects.append(teacher_reject(path, lineno, "id", f"expected a non-empty string, got {row_id!r}"))
                continue
            if row_id in scores:
                rejects.append(teacher_reject(path, lineno, "id", f"{row_id!r} repeats line {scores[row_id]['line']}",
                                       row_id))
                continue
            step_scores = raw.get("step_scores")
            if not isinstance(step_scores, dict):
                rejects.append(teacher_reject(path, lineno, "step_scores", "expected an object {model: [score per step]}",
                                       row_id))
                continue
            missing = [m for m in models if m not in step_scores]
            problems = [(f"step_scores.{m}", _scores_problem(step_scores[m])) for m in models if m not in missing]
            bad = [(field, why) for field, why in problems if why]
            if missing:
                rejects.append(teacher_reject(path, lineno, f"step_scores.{missing[0]}", f"no scores of this teacher "
                                       f"(present: {', '.join(sorted(step_scores)) or 'none'})", row_id))
            elif bad:
                rejects.append(teacher_reject(path, lineno, bad[0][0], bad[0][1], row_id))
            elif len({len(step_scores[m]) for m in models}) > 1:
                counts = {m: len(step_scores[m]) for m in models}
                rejects.append(teacher_reject(path, lineno, "step_scores", f"teachers score different step counts {counts}",
                                       row_id))
            elif isinstance(raw.get("first_step", 0), bool) or not isinstance(raw.get("first_step", 0), int) \
                    or raw.get("first_step", 0) < 0:
                rejects.append(teacher_reject(path, lineno, "first_step", f"expected a step index >= 0, got "
                                       f"{raw['first_step']!r}", row_id))
            else:
                scores[row_id] = {"line": lineno, "first_step": raw.get("first_step", 0),
                                  "scores": {m: [float(v) for v in step_scores[m]] for m in models}}
    return scores, rejects


def combined_scores(per_model: dict[str, list[float]], combine: str) -> list[float]:
    """One score per step: `combine` (mean, min or max) over the teachers' scores of that step."""
    return [COMBINE[combine](step) for step in zip(*per_model.values())]


def teacher_origin(params: LabelParams) -> str:
    """Where the teacher's scores come from: label.teacher_file, or the PRM at label.teacher_model."""
    return params.teacher_file or params.teacher_model


def teacher_names(params: LabelParams) -> list[str]:
    """The teachers whose scores are combined: teacher_models' entries of the file, or the one model."""
    return list(params.teacher_models) if params.teacher_file else [params.teacher_model]


def label_source(params: LabelParams) -> dict:
    """The lineage every teacher-labeled row carries: where its labels came from and by which rule."""
    origin = {"file": params.teacher_file} if params.teacher_file else {"model": params.teacher_model}
    return {"method": "teacher", **origin, "models": teacher_names(params),
            "combine": params.teacher_combine, "labels": params.teacher_labels,
            "threshold": params.teacher_threshold}


def teacher_row(candidate: dict, scores: list[float], params: LabelParams) -> dict:
    """A labeled rollout row (the label stage's row shape) of one candidate and its combined step scores."""
    labels = ["+" if s >= params.teacher_threshold else "-" for s in scores]
    values = list(scores) if params.teacher_labels == "soft" else [1.0 if label == "+" else 0.0 for label in labels]
    return {
        "id": candidate["id"], "problem_id": candidate["problem_id"], "problem": candidate["problem"],
        "steps": candidate["steps"], "labels": labels, "values": values, "answer": candidate["answer"],
        "predicted_answer": candidate.get("predicted_answer", ""), "correct": candidate["correct"],
        "first_error": first_error(labels), "true_first_error": None,
        "policy": candidate.get("generator") or candidate["source"], "label_source": label_source(params),
    }


def teacher_rows(problems: Iterable[dict], scores: dict[str, dict], params: LabelParams,
                 problems_file: str | Path, rejected: frozenset[str] = frozenset()) -> tuple[list[dict], list[dict]]:
    """Labeled rows of the candidate solutions in `problems` (in order) and the rejected ones.

    Pre-labeled rows pass through unchanged; a problem with no steps (a problem-only source) is rejected,
    since the teacher scores given solutions and samples none. `problems_file` names the line of a rejected
    problem; ids in `rejected` (a teacher model's unscorable candidates, rejected already) are passed over.
    """
    rows, rejects = [], []
    for lineno, problem in enumerate(problems, start=1):
        if problem["id"] in rejected:
            continue
        if "labels" in problem:
            rows.append(prelabeled_row(problem))
            continue
        if "steps" not in problem:
            rejects.append(teacher_reject(problems_file, lineno, "steps", "a problem without a solution: the teacher "
                                   "method labels candidate solutions (ingest format candidates)", problem["id"]))
            continue
        entry = scores.get(problem["id"])
        if entry is None:
            rejects.append(teacher_reject(problems_file, lineno, "id", f"{problem['id']!r} has no step scores from "
                                   f"{teacher_origin(params)}", problem["id"]))
            continue
        # steps the source scored that ingest cut away (a chat transcript), less those the scores start after
        first_step = entry.get("first_step", 0)
        dropped = problem.get("leading_steps_dropped", 0) - first_step
        counts = {len(v) for v in entry["scores"].values()}
        if dropped < 0 or counts != {dropped + len(problem["steps"])}:
            start = f" from step {first_step}" if first_step else ""
            rejects.append(teacher_reject(teacher_origin(params), entry["line"], "step_scores",
                                          f"{counts.pop()} scores{start} for "
                                          f"{problem.get('leading_steps_dropped', 0) + len(problem['steps'])} steps "
                                          f"of {problem['id']!r}", problem["id"]))
            continue
        scores_of_steps = combined_scores(entry["scores"], params.teacher_combine)[dropped:]
        rows.append(teacher_row(problem, scores_of_steps, params))
    return rows, rejects
