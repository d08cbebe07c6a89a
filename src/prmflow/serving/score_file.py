"""`prmflow score FILE`: a JSON-lines file scored line by line by the same `Scorer.score` the server runs.

    {"id": "a", "problem": "2+3?", "steps": ["2+3=5", "The answer is 5."]}
    -> {"id": "a", "step_scores": [0.97, 0.95], "score": 0.95, "first_error": null, "scored_steps": 2, ...}

Each line is checked by the server's rules (requests.py); a bad one is reported as `file:line: field: rule`
and written to the rejects file with its reason, every other line is scored and printed in file order, in
requests no larger than the server accepts.
"""

from __future__ import annotations

import json
import sys

from prmflow.scoring.candidates import Solution
from prmflow.serving.requests import SOLUTION_KEYS, RequestError, check_solution, clip, parse_json, solution_from_json
from prmflow.serving.scorer import Scorer, ServingConfig

Line = tuple[dict, Solution, list[str]]  # (the row as read, its solution, its steps)


def checked_line(line: str, config: ServingConfig) -> Line:
    """(row, solution, steps) of one JSON line, by the server's rules; raises RequestError naming the field.

    A file's other fields (`id`, a rollout's labels, ...) are its own columns, not a request's: they are
    left out of the solution (`id` is copied to the output), where the server refuses unknown keys."""
    row = parse_json(line, "")
    solution = solution_from_json({k: v for k, v in row.items() if k in SOLUTION_KEYS} if isinstance(row, dict)
                                  else row, "")
    steps = check_solution(solution, "")
    if len(steps) > config.max_steps_per_request:
        raise RequestError(f"steps: {len(steps)} steps, more than the limit of {config.max_steps_per_request} "
                           f"per request")
    return row, solution, steps


def read_lines(path: str, config: ServingConfig) -> tuple[list[Line], list[dict]]:
    """Each line of a JSON-lines file checked on its own: the good lines in order, and a reject record
    {line, reason, record (the line, clipped to 2,000 characters)} for each bad one."""
    good, rejects = [], []
    with open(path, "rb") as lines:
        for number, data in enumerate(lines, start=1):
            line = data.decode("utf-8", errors="replace")  # what a reject record shows of the line
            if not line.strip():
                continue
            try:
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError as err:  # scoring a replaced character would score another text
                    raise RequestError(f"not UTF-8: byte 0x{data[err.start]:02x} at column {err.start + 1}") from None
                good.append(checked_line(line, config))
            except RequestError as err:
                rejects.append({"line": number, "reason": str(err), "record": clip(line.rstrip("\n"), 2000)})
    return good, rejects


def requests(good: list[Line], config: ServingConfig) -> list[list[Line]]:
    """The good lines in file order, cut into requests no larger than the server accepts."""
    chunks, steps = [[]], 0
    for item in good:
        if len(chunks[-1]) == config.max_solutions_per_request or steps + len(item[2]) > config.max_steps_per_request:
            chunks.append([])
            steps = 0
        chunks[-1].append(item)
        steps += len(item[2])
    return [chunk for chunk in chunks if chunk]

def model_context(prm) -> str:
    """The scorer's context as a warning names it: a trained PRM's prompt format, else a public PRM's own limit."""
    fmt = getattr(prm, "format", None)
    length = getattr(fmt, "max_length", None) or getattr(prm, "max_length", None)
    return f"{length} tokens" if length else "the model"


def score_summary(counts: dict[str, int], context: str, limit: float) -> str:
    """`prmflow score`'s last line: what was scored, cut and dropped; a warning past `limit` unscored steps."""
    line = (f"prmflow score: {counts['solutions']} solutions, {counts['scored_steps']} of {counts['steps']} steps "
            f"scored ({counts['cut_steps']} cut inside, {counts['dropped_steps']} dropped beyond the context of "
            f"{context}); {counts['solutions_with_dropped_steps']} solutions lost steps, "
            f"{counts['unscored_solutions']} not scored")
    unscored = counts["steps"] - counts["scored_steps"]  # beyond the context, or of a solution refused whole
    if counts["steps"] and unscored / counts["steps"] > limit:
        line += (f"\nprmflow score: WARNING {unscored / counts['steps']:.0%} of the steps were not "
                 f"scored (more than --max-unscored-step-fraction {limit:g}): their solutions' scores judge only "
                 f"the steps that fit")
    return line


def score_file(scorer: Scorer, path: str, aggregation: str, rejects_path: str | None = None, *,
               max_unscored_step_fraction: float) -> int:
    """Print one prediction a good line of `path` to stdout (its `id` first, when it has one), then on stderr
    what was scored, cut and dropped (a warning past `max_unscored_step_fraction` of the steps); write the
    rejected lines to `rejects_path` (default: PATH.rejects.jsonl) and say so on stderr. Returns the number
    of rejected lines."""
    good, rejects = read_lines(path, scorer.config)
    counts = dict.fromkeys(("solutions", "steps", "scored_steps", "cut_steps", "dropped_steps",
                            "solutions_with_dropped_steps", "unscored_solutions"), 0)
    for chunk in requests(good, scorer.config):
        predictions = scorer.score([solution for _, solution, _ in chunk], aggregation)
        for (row, _, steps), prediction in zip(chunk, predictions):
            print(json.dumps(({"id": row["id"]} if "id" in row else {}) | prediction.model_dump()))
            scored = len(prediction.step_scores)
            counts = {"solutions": counts["solutions"] + 1, "steps": counts["steps"] + len(steps),
                      "scored_steps": counts["scored_steps"] + scored,
                      "cut_steps": counts["cut_steps"] + len(prediction.truncated_steps),
                      "dropped_steps": counts["dropped_steps"] + prediction.dropped_steps,
                      "solutions_with_dropped_steps": counts["solutions_with_dropped_steps"] + (0 < scored < len(steps)),
                      "unscored_solutions": counts["unscored_solutions"] + (scored == 0)}
    print(score_summary(counts, model_context(scorer.prm), max_unscored_step_fraction), file=sys.stderr)
    if rejects:
        rejects_path = rejects_path or f"{path}.rejects.jsonl"
        with open(rejects_path, "w") as written:
            for reject in rejects:
                print(f"prmflow score: {path}:{reject['line']}: {reject['reason']}", file=sys.stderr)
                written.write(json.dumps({"file": path, **reject}) + "\n")
        print(f"prmflow score: {len(rejects)} of {len(good) + len(rejects)} lines rejected -> {rejects_path}",
              file=sys.stderr)
    return len(rejects)
