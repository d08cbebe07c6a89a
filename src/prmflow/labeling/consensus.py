"""Consensus filtering: keep a labeled solution only where a second source puts its first error on the same step.

Qwen's "Lessons of developing process reward models" (Zhang et al., 2025) keeps a solution only where
Monte-Carlo labels and an LLM judge agree on the first error (about 40% kept, matching the judge-labelled
PRM with 40% of the data). Here the second source is a file of labels of the same solutions, matched by id:

    second, rejects = read_first_errors(Path("data/mc-rollouts/train.jsonl"))
    kept, dropped, counts = agreeing(rows, second, "data/mc-rollouts/train.jsonl")

One JSON object a line (a file, or every `.jsonl` file of a folder) with `id` and one of: `first_error` (index of the first wrong step, -1 for none: a
labeled rollouts file of this project, e.g. Monte-Carlo or teacher labels), `label` (the same, ProcessBench's
layout) or `labels` (`+`/`-` per step; its first `-`). A solution the second source does not label, labels
with another step count (where it gives `labels`), or places the first error elsewhere is dropped, with
its reason, into the rejects; the report counts kept and dropped by reason.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


def _reject(file: str | Path, line: int, field: str, reason: str, row_id: str | None) -> dict:
    return {"file": str(file), "line": line, "kind": "consensus", "field": field, "id": row_id,
            "reason": f"{field}: {reason}"}


def _first_error(raw: dict) -> tuple[int, int | None, str]:
    """(first error, step count where known, field it came from); raises ValueError saying what is wrong."""
    for field in ("first_error", "label"):
        if field in raw:
            value = raw[field]
            if isinstance(value, bool) or not isinstance(value, int) or value < -1:
                raise ValueError(f"{field}: {value!r} is not a step index or -1")
            return value, None, field
    labels = raw.get("labels")
    if isinstance(labels, list) and labels and all(x in ("+", "-") for x in labels):
        return next((i for i, x in enumerate(labels) if x == "-"), -1), len(labels), "labels"
    raise ValueError("first_error: none of first_error, label (ProcessBench) or labels (+/- per step)")


def read_first_errors(path: Path) -> tuple[dict[str, dict], list[dict]]:
    """`{id: {first_error, steps (None where unknown), line, field}}` and the rejected lines, from a file or
    from every `.jsonl` file of a folder (a labeled run's data/rollouts: both splits).

    Raises FileNotFoundError when `path` does not exist."""
    if not path.exists():
        raise FileNotFoundError(f"label.consensus_file {path}: no such file or folder")
    found, rejects = {}, []
    for file in sorted(path.glob("*.jsonl")) if path.is_dir() else [path]:
        with file.open("rb") as handle:
            for lineno, data in enumerate(handle, start=1):
                if data.strip():
                    _read_line(file, lineno, data, found, rejects)
    return found, rejects


def _read_line(file: Path, lineno: int, data: bytes, found: dict, rejects: list) -> None:
    row_id = None
    try:
        raw = json.loads(data.decode("utf-8"))
        row_id = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(row_id, str) or not row_id:
            raise ValueError(f"id: expected a non-empty string, got {row_id!r}")
        if row_id in found:
            earlier = found[row_id]
            raise ValueError(f"id: {row_id!r} repeats {earlier['file']}:{earlier['line']}")
        first, steps, field = _first_error(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        rejects.append(_reject(file, lineno, "(line)", f"not valid JSON: {err}", None))
        return
    except ValueError as err:
        field, _, reason = str(err).partition(": ")
        rejects.append(_reject(file, lineno, field, reason, row_id if isinstance(row_id, str) else None))
        return
    found[row_id] = {"first_error": first, "steps": steps, "file": str(file), "line": lineno, "field": field}


def agreeing(rows: list[dict], second: dict[str, dict], second_file: str | Path) -> tuple[list[dict], list[dict],
                                                                                           dict[str, int]]:
    """The rows whose first error the second source shares (their label_source names it), the dropped ones as
    rejects, and counts (`kept`, and one per reason: `unlabeled`, `step_count`, `disagree`)."""
    kept, dropped, counts = [], [], Counter()
    for row in rows:
        other = second.get(row["id"])
        if other is None:
            counts["unlabeled"] += 1
            dropped.append(_reject(second_file, 0, "id", f"{row['id']!r}: the second source labels no such "
                                   f"solution", row["id"]))
        elif other["steps"] is not None and other["steps"] != len(row["steps"]):
            counts["step_count"] += 1
            dropped.append(_reject(other["file"], other["line"], other["field"], f"{other['steps']} labels for "
                                   f"{len(row['steps'])} steps of {row['id']!r}", row["id"]))
        elif other["first_error"] != row["first_error"]:
            counts["disagree"] += 1
            dropped.append(_reject(other["file"], other["line"], other["field"], f"first error {other['first_error']}"
                                   f", this source's {row['first_error']} ({row['id']!r})", row["id"]))
        else:
            counts["kept"] += 1
            kept.append({**row, "label_source": {**row["label_source"], "consensus_with": str(second_file)}})
    return kept, dropped, {"kept": counts["kept"], "unlabeled": counts["unlabeled"],
                           "step_count": counts["step_count"], "disagree": counts["disagree"]}
