"""`prmflow check`, the first dvc.yaml stage: a params mistake stops `dvc repro` before DVC deletes any
stage's outputs, and a passing check reruns nothing after it."""

import yaml

from tiny_project import make_project, run


def test_a_params_typo_stops_repro_before_outputs_are_deleted(tmp_path):
    project = make_project(tmp_path)
    first = run(["dvc", "repro", "ingest"], project)
    assert first.returncode == 0, first.stdout + first.stderr
    problems = project / "data" / "problems" / "train.jsonl"
    kept = problems.read_text()

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["search"]["sizes"] = [1, 4]  # a section ingest does not read: checked, and nothing else reruns
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    quiet = run(["dvc", "repro", "ingest"], project)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "Running stage 'check'" in quiet.stdout and "Running stage 'ingest'" not in quiet.stdout

    params["ingest"]["num_train"] = 30  # ingest would rerun and delete data/problems first ...
    params["serach"] = params.pop("search")  # ... but the misspelled section stops the check before it
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    failed = run(["dvc", "repro", "ingest"], project)
    assert failed.returncode != 0
    assert "serach: unknown section" in failed.stdout + failed.stderr
    assert "Running stage 'ingest'" not in failed.stdout
    assert problems.read_text() == kept
