"""PRM800K's stepwise-critic layout (one rated step a row) rebuilt into solution paths.

Each row of the layout is one step rated by a human: `instruction` (the problem), `responses` (the steps
before it), `next_response` (the step), `rating` (1 correct, 0 ambiguous, -1 wrong; none for a
human-written step), `is_human_response`, `is_preferred_response` (the step the labeler chose to go on
from), `answer` (the reference answer, on some rows). Labelers rated several alternatives at a step and
went on from one, so the rows of a problem form a tree; every leaf (a step no other row goes on from) ends
one solution path: the problem, the steps from the root to it, and each step's rating from the row that
rated it. Paths that end on a rejected alternative are the negative examples; the chosen path ends where the
labeler stopped. The source of the rules: PRM800K ("Let's Verify Step by Step", Lightman et al., 2023).

    paths = solution_paths(pandas.read_parquet("phase1_train.stepwise-critic.parquet"))
"""

from __future__ import annotations

import math

import pandas as pd

COLUMNS = ("instruction", "responses", "next_response", "rating", "is_human_response")


def _rating(value: object) -> int | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)


def solution_paths(frame: pd.DataFrame) -> list[tuple[int, dict]]:
    """`(row number of the leaf, 1-based, path)` per leaf, in the order of the leaf rows; a path is
    `{problem, answer, steps, ratings (int or None), human (bool per step), missing (steps no row rates)}`.

    Raises ValueError naming the columns the frame lacks.
    """
    absent = [c for c in COLUMNS if c not in frame.columns]
    if absent:
        raise ValueError(f"not the stepwise-critic layout: no column {', '.join(absent)}")
    rated: dict[tuple, tuple[int | None, bool]] = {}  # (problem, prefix..., step) -> (rating, human)
    goes_on: set[tuple] = set()  # (problem, steps...) that some row's prefix equals
    answers: dict[str, str] = {}
    rows = []
    for index, row in enumerate(frame.itertuples(index=False), start=1):
        prefix = tuple(str(step) for step in row.responses)
        key = (row.instruction, *prefix, row.next_response)
        rated.setdefault(key, (_rating(row.rating), bool(row.is_human_response)))
        goes_on.add((row.instruction, *prefix))
        answer = getattr(row, "answer", None)
        if isinstance(answer, str) and answer.strip():
            answers.setdefault(row.instruction, answer.strip())
        rows.append((index, key))
    paths, seen = [], set()
    for index, key in rows:
        if key in goes_on or key in seen:
            continue
        seen.add(key)
        problem, steps = key[0], list(key[1:])
        found = [rated.get((problem, *steps[:i + 1])) for i in range(len(steps))]
        paths.append((index, {
            "problem": problem, "answer": answers.get(problem, ""), "steps": steps,
            "ratings": [f[0] if f else None for f in found], "human": [bool(f and f[1]) for f in found],
            "missing": [i for i, f in enumerate(found) if f is None],
        }))
    return paths
