"""Corrupted labels stop the real pipeline at validate: `dvc repro` fails and says why.

(The Prefect flow failing at validate with the same message is tested in tests/test_flow.py.)

A tiny project runs ingest and label with `dvc repro label`; one label in the training rollouts
is then corrupted and `dvc commit`-ed as the label stage's output (as if labeling had written
it), so DVC treats the bad file as current and only validate stands between it and training.
"""

import json

import pytest

from tiny_project import make_project, run

LABELING_ONLY = {"ingest": {"num_train": 20, "num_test": 6}, "label": {"trajectories_per_problem": 3, "completions_per_step": 4}}
CHECK = "rollouts.labels_are_plus_minus"


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("corrupted"), LABELING_ONLY)
    proc = run(["dvc", "repro", "label"], root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    path = root / "data" / "rollouts" / "train.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[5]["labels"][0] = "?"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    proc = run(["dvc", "commit", "-f", "label"], root)
    assert proc.returncode == 0, proc.stderr
    return root, rows[5]["id"]


def test_dvc_repro_stops_at_validate(corrupted):
    root, bad_id = corrupted
    repro = run(["dvc", "repro"], root)
    output = repro.stdout + repro.stderr
    assert repro.returncode != 0
    assert "Running stage 'validate'" in output and CHECK in output and bad_id in output
    assert "Running stage 'tokenize'" not in output
    assert not (root / "data" / "tokenized").exists()
    assert (root / "reports" / "validation_docs" / "index.html").exists()
