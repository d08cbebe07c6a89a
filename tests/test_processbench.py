"""ProcessBench as published (JSON arrays, parquet), and no verdict credited that the model
never made (an error step, or a correct solution's tail, beyond the steps it scored)."""

import json
from pathlib import Path

import pytest

from prmflow.evaluation.best_of_n import evaluate_external, processbench_verdict
from prmflow.evaluation.inputs import read_external
from prmflow.jsonl import RecordError

FIXTURES = Path(__file__).parent / "fixtures" / "evaluate"


@pytest.mark.parametrize("label, steps, scores, verdict", [
    (1, 3, [0.9, 0.2, 0.8], 1),       # found the error
    (1, 3, [0.9, 0.8, 0.8], -1),      # scored the error step and missed it: a verdict, a wrong one
    (2, 4, [0.9, 0.8], None),         # the context ended before the error: no verdict
    (2, 4, [0.2, 0.8], 0),            # flagged a step it scored: a (wrong) verdict
    (-1, 3, [0.9, 0.8, 0.9], -1),     # a correct solution judged whole
    (-1, 3, [0.9, 0.8], None),        # its last step never scored: "no error" was never said about it
    (0, 2, [], None),                 # nothing fits the context
])
def test_a_verdict_needs_the_steps_it_is_about(label, steps, scores, verdict):
    assert processbench_verdict(label, steps, scores, 0.5) == verdict


def test_unscored_error_steps_and_tails_count_against_the_model():
    rows = [{"label": 1, "steps": ["a", "b", "c"]}, {"label": 2, "steps": ["a", "b", "c"]},
            {"label": -1, "steps": ["a", "b"]}, {"label": -1, "steps": ["a", "b", "c"]}]
    # Row 1: error at 1 found. Row 2: context ends after step 1, the error is step 2. Row 3: judged whole, no error.
    # Row 4: its last step was cut, so its "no error" is no verdict. Before the fix rows 2 and 4 counted right.
    scores = [[0.9, 0.1, 0.9], [0.9, 0.9], [0.9, 0.9], [0.9, 0.9]]
    m = evaluate_external("processbench", rows, scores, 0.5, "min")
    assert (m["first_error_accuracy_erroneous"], m["first_error_accuracy_correct"]) == (0.5, 0.5)
    assert m["first_error_f1"] == 0.5
    assert (m["solutions"], m["unjudged_solutions"], m["unscored_solutions"]) == (4, 2, 0)


def test_processbench_is_read_as_published_json_array_and_parquet(tmp_path):
    import pyarrow
    import pyarrow.parquet

    spec = {"name": "pb", "format": "processbench"}
    lines = read_external(spec | {"path": str(FIXTURES / "processbench.jsonl")})
    published = [{"id": f"gsm8k-{i}", "generator": "Qwen2-7B-Instruct", "final_answer_correct": row["label"] < 0,
                  **row} for i, row in enumerate(lines)]
    (tmp_path / "gsm8k.json").write_text(json.dumps(published, indent=2))
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(published), tmp_path / "gsm8k.parquet")
    for name in ("gsm8k.json", "gsm8k.parquet"):
        rows = read_external(spec | {"path": str(tmp_path / name)})
        assert [(r["problem"], r["steps"], r["label"]) for r in rows] == [
            (r["problem"], r["steps"], r["label"]) for r in lines]


def test_bad_records_of_an_array_name_the_file_and_index(tmp_path):
    bad = tmp_path / "bench.json"
    bad.write_text(json.dumps([{"problem": "p", "steps": ["a"], "label": -1}, {"problem": "p", "steps": ["a"]}]))
    with pytest.raises(RecordError, match=rf"{bad}\[1\]: label: missing required field"):
        read_external({"name": "pb", "path": str(bad), "format": "processbench"})
    bad.write_text(json.dumps([{"problem": "p", "steps": ["a"], "label": True}]))
    with pytest.raises(RecordError, match=rf"{bad}\[0\]: label: expected -1 or a step index below 1, got True"):
        read_external({"name": "pb", "path": str(bad), "format": "processbench"})
    bad.write_text('{"problem": "p"}')
    with pytest.raises(RecordError, match="expected a JSON array of records, got dict"):
        read_external({"name": "pb", "path": str(bad), "format": "processbench"})
