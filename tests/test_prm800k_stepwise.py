"""PRM800K's stepwise-critic layout (one rated step a parquet row) rebuilt into labeled solution paths."""

from collections import Counter

import pandas as pd
import pytest

from prmflow.config import IngestParams, LabelParams
from prmflow.data.ingest import build_splits
from prmflow.data.prm800k import solution_paths
from prmflow.data.sources import read_source
from prmflow.labeling.label import rollout_rows

from conftest import REPO

PRM800K = REPO.parent / "shared" / "data" / "prm800k"
Q = "What is 2 + 3 * 4?"


def step(prefix, text, rating, preferred=False, human=False, answer=None):
    return {"instruction": Q, "responses": list(prefix), "next_response": text, "answer": answer,
            "is_human_response": human, "is_solution": False, "is_preferred_response": preferred,
            "rating": rating}


def tree() -> pd.DataFrame:
    a, b, hint = "First 3 * 4 = 12.", "Then 2 + 12 = 14.", "Remember: multiply before adding."
    return pd.DataFrame([
        step([], a, 1.0, preferred=True),
        step([], "First 2 + 3 = 5.", -1.0),                     # a rejected alternative: a path ending in -
        step([a], "Hmm, maybe 20?", 0.0),                        # ambiguous: the neutral label
        step([a], hint, None, preferred=True, human=True),       # a labeler's hint: +
        step([a, hint], b, 1.0, preferred=True),
        step([a, hint, b], "# Answer\n\n14", 1.0, preferred=True, answer="14"),
        step([a, hint, b], "So 15.", None),                      # unrated and not human: a reject
        step(["Never rated.", a], "Then 14.", 1.0),              # a prefix no row rates: a reject
    ])


def test_every_leaf_of_the_rating_tree_ends_one_path_with_a_rating_per_step(tmp_path):
    paths = solution_paths(tree())
    assert [row for row, _ in paths] == [2, 3, 6, 7, 8]
    assert paths[0][1]["steps"] == ["First 2 + 3 = 5."] and paths[0][1]["ratings"] == [-1]
    assert paths[2][1]["ratings"] == [1, None, 1, 1] and paths[2][1]["human"] == [False, True, False, False]
    assert paths[2][1]["answer"] == "14" and paths[4][1]["missing"] == [0, 1]

    path = tmp_path / "phase1.parquet"
    tree().to_parquet(path)
    for neutral, ambiguous in (("positive", "+"), ("negative", "-")):
        records, rejects = read_source({"format": "prm800k_stepwise", "path": str(path), "neutral": neutral}, 0)
        rows = {r.line: r.row for r in records}
        assert rows[2]["labels"] == ["-"] and rows[3]["labels"] == ["+", ambiguous]
        assert rows[6]["labels"] == ["+"] * 4 and rows[6]["predicted_answer"] == "14" and rows[6]["answer"] == "14"
        assert [(r["line"], r["reason"]) for r in rejects] == [
            (7, "steps[3].rating: None is not -1, 0 or 1 (and not a human-written step)"),
            (8, "steps[0]: no row rates this step of the path")]


def test_a_file_in_another_layout_is_one_reject_naming_what_it_lacks(tmp_path):
    path = tmp_path / "other.parquet"
    pd.DataFrame({"question": ["q"], "label": [1]}).to_parquet(path)
    records, (rejected,) = read_source({"format": "prm800k_stepwise", "path": str(path)}, 0)
    assert records == [] and "no column instruction, responses, next_response, rating" in rejected["reason"]


@pytest.mark.skipif(not (PRM800K / "phase1_test.stepwise-critic.parquet").is_file(),
                    reason="../shared/data/prm800k (PRM800K phase 1, stepwise-critic layout) is absent")
def test_real_phase1_test_ratings_become_labeled_rows_that_pass_through_the_label_stage():
    source = {"format": "prm800k_stepwise", "path": str(PRM800K / "phase1_test.stepwise-critic.parquet"),
              "name": "prm800k-test", "split": "test"}
    result = build_splits(IngestParams(sources=[source]), seed=0)
    rows = result.splits["test"]
    report = result.report["sources"]["prm800k-test"]
    assert report["labeled"] == len(rows) > 3000 and report["reject_fraction"] < 0.05
    assert {r["reason"].split(": ")[0].split(".")[-1] for r in result.rejects if r["kind"] != "duplicate"} == {"rating"}
    assert len({r["problem_id"] for r in rows}) > 60
    last = Counter(r["labels"][-1] for r in rows)
    assert last["-"] > 1000 and last["+"] > 1000  # rejected alternatives and chosen steps both end paths
    rollouts = rollout_rows(rows[:50], LabelParams(), seed=0)
    assert [r["labels"] for r in rollouts] == [r["labels"] for r in rows[:50]]
    assert all(r["label_source"] == {"method": "given", "source": "prm800k-test"} for r in rollouts)
