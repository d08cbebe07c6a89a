"""Teacher step scores from a PRM asked now: a served PRM, vLLM's pooling server of one, a folder or a registry URI.

The teacher source of step labels (teacher.py) reads cached scores from a file; here the same scores come from
any PRM `prmflow.load` reads (`label.teacher_model`), e.g. a 7B PRM served by vLLM on a GPU:

    prm = teacher_prm(params)                                  # prmflow.load(label.teacher_model, ...)
    scores, rejects = model_teacher_scores(candidates, prm, params, problems_file)
    rows, more = teacher_rows(candidates, scores, params, problems_file)      # teacher.py, as for a file

The scores take teacher.py's entry shape (`{id: {"line", "first_step", "scores": {teacher_model: [float]}}}`),
so combination, soft/hard values, the threshold and the rejects are the file's. A candidate the teacher cannot
score whole (a step cut or dropped by its context, or nothing of it scorable) is rejected with the PRM's
reason, never labeled from part of its steps. `write_teacher_file` writes the scores in the teacher file's
layout (`prmflow teacher-scores`), so a teacher on a GPU is asked once and the file reused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from prmflow.config import LabelParams
from prmflow.labeling.teacher import teacher_reject

if TYPE_CHECKING:  # the label stage's other methods do not pay for importing the scoring stack
    from prmflow.scoring.load import PRM
    from prmflow.scoring.predictions import Prediction


def teacher_prm(params: LabelParams) -> PRM:
    """The PRM at `label.teacher_model` (prmflow.load): `label.batch_size` solutions per request or forward,
    `request_timeout_s` per request, a served teacher's requests retried by `max_retries` / `retry_backoff_s`
    (http_retry.Retrying), `teacher_checkpoint` encoding for a /pooling URL. Raises what load raises, naming the
    knob: FileNotFoundError for a folder without config.json, ValueError for an unknown format."""
    from prmflow.http_retry import Retrying
    from prmflow.scoring.load import load

    retrying = Retrying(max_retries=params.max_retries, backoff_s=params.retry_backoff_s, knob="label.max_retries")
    try:
        return load(params.teacher_model, checkpoint=params.teacher_checkpoint or None, batch_size=params.batch_size,
                    request_timeout_s=params.request_timeout_s, retrying=retrying)
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"label.teacher_model {params.teacher_model!r}: {err}") from err


def _whole_problem(prediction: Prediction, steps: int) -> str | None:
    """Why `prediction` does not score every one of `steps` steps whole, or None when it does."""
    if prediction.score is None or not prediction.step_scores:
        return f"the teacher scored none of it ({prediction.reason or 'unscorable'})"
    if prediction.truncated_steps or prediction.dropped_steps or len(prediction.step_scores) != steps:
        return (f"the teacher's context cut it: steps {prediction.truncated_steps} cut inside, "
                f"{prediction.dropped_steps} trailing steps dropped, {len(prediction.step_scores)} of {steps} scored")
    return None


def _scored(prm: PRM, pairs: list[tuple[str, list[str]]], params: LabelParams) -> list[Prediction]:
    """`prm.score(pairs)`; a served teacher that still fails after its retries (teacher_prm) is a ConnectionError
    naming label.teacher_model."""
    from prmflow.http_retry import RequestFailed

    try:
        return prm.score(pairs)
    except RequestFailed as err:
        raise ConnectionError(f"label.teacher_model {params.teacher_model!r}: {err}") from err


def model_teacher_scores(problems: Iterable[dict], prm: PRM, params: LabelParams,
                         problems_file: str | Path) -> tuple[dict[str, dict], list[dict]]:
    """teacher.py's score entries of the candidate solutions in `problems` (rows with `id`, `problem`, `steps`;
    pre-labeled rows and problems without steps are left to teacher_rows), asked of `prm` `label.batch_size`
    at a time, and the candidates it could not score whole (rejects naming `problems_file`'s line)."""
    name = params.teacher_model or prm.description
    todo = [(lineno, row) for lineno, row in enumerate(problems, start=1) if "labels" not in row and row.get("steps")]
    scores, rejects = {}, []
    for start in range(0, len(todo), params.batch_size):
        batch = todo[start:start + params.batch_size]
        for (lineno, row), prediction in zip(batch, _scored(prm, [(r["problem"], r["steps"]) for _, r in batch],
                                                            params)):
            why = _whole_problem(prediction, len(row["steps"]))
            if why:
                rejects.append(teacher_reject(problems_file, lineno, "steps", why, row["id"]))
            else:
                scores[row["id"]] = {"line": lineno, "first_step": row.get("leading_steps_dropped", 0),
                                     "scores": {name: list(prediction.step_scores)}}
    return scores, rejects


def write_teacher_file(path: Path, scores: dict[str, dict], name: str) -> int:
    """Write `scores` (model_teacher_scores', one teacher) in the teacher file's layout, `{id, first_step,
    step_scores: {name: [float]}}` a line, for `label.teacher_file` with `teacher_models: [name]`; returns the
    lines written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for row_id, entry in scores.items():
            (step_scores,) = entry["scores"].values()
            handle.write(json.dumps({"id": row_id, "first_step": entry["first_step"],
                                     "step_scores": {name: step_scores}}) + "\n")
    return len(scores)


def teacher_scores_file(candidates: Path, params: LabelParams, out: Path, name: str) -> tuple[int, list[dict]]:
    """Ask the PRM at `params.teacher_model` for the step scores of a candidates file (StrictPRMBench's pool
    layout, read as ingest reads it: the same ids, a chat transcript cut) and write them to `out` in the teacher
    file's layout under `name`. Returns the lines written and the rejects (candidates file, line, reason): lines
    ingest would reject and candidates the teacher cannot score whole."""
    from prmflow.data.ingest import with_ids
    from prmflow.data.sources import read_source

    records, rejects = read_source({"format": "candidates", "path": str(candidates)}, seed=0)
    rows = [with_ids(record.row, str(candidates)) for record in records]
    scores, unscored = model_teacher_scores(rows, teacher_prm(params), params, candidates)
    for reject in unscored:  # model_teacher_scores counts rows; the file's line is the record's
        reject["line"] = records[reject["line"] - 1].line
    return write_teacher_file(out, scores, name), rejects + unscored
