"""Teacher step labels from a PRM asked now (label.teacher_model): a real `mlflow models serve` on loopback, the
same model's folder and a teacher file written from the served scores label alike; candidates the teacher cannot
score whole are rejects; a bad teacher_model is refused by name."""

import json
import subprocess
from pathlib import Path

import pytest

from prmflow.config import ConfigError, LabelParams, params_from_dict
from prmflow.data import ingest
from prmflow.jsonl import read_jsonl
from prmflow.labeling import label
from prmflow.labeling.teacher_model import teacher_prm

from conftest import BIN, REPO

STRICTPRM_GSM8K = REPO.parent / "shared" / "data" / "strictprm" / "gsm8k_bon16_dev.jsonl"


def pool_of(labeled_rows: list[dict], path: Path) -> Path:
    """Candidates (the candidates layout) from the generator's labeled solutions, and one whose step is far
    longer than the teacher's context."""
    rows = labeled_rows[:12]
    candidates = [{"id": f"c{i}", "problem": r["problem"], "answer": r["answer"], "steps": r["steps"],
                   "predicted_answer": r.get("predicted_answer", ""), "correct": r["correct"]}
                  for i, r in enumerate(rows)]
    long_step = " ".join(["The sum is 3 + 4 = 7."] * 600)
    candidates.append({**candidates[0], "id": "too-long", "steps": [candidates[0]["steps"][0], long_step]})
    path.write_text("".join(json.dumps(c) + "\n" for c in candidates))
    return path


def labeled_by(root: Path, pool: Path, label_section: dict) -> tuple[dict[str, dict], list[dict], dict]:
    """Ingest `pool` (and the first real QwQ-32B candidates when ../shared/data holds them) and run the label
    stage for real in `root`: rows by id, rejects and the labeling report."""
    sources = [{"format": "candidates", "path": str(pool), "name": "pool"}]
    if STRICTPRM_GSM8K.is_file():
        sources.append({"format": "candidates", "path": str(STRICTPRM_GSM8K), "name": "qwq", "limit": 16})
    params = params_from_dict({
        "base": {"data_dir": str(root / "data"), "reports_dir": str(root / "reports"),
                 "mlflow_tracking_uri": f"sqlite:///{root}/mlflow/mlflow.db",
                 "mlflow_artifacts_dir": str(root / "mlflow" / "artifacts")},
        "ingest": {"sources": sources, "test_fraction": 0.5},
        "label": {"method": "teacher", "batch_size": 4, **label_section},
    })
    ingest.main(params)
    label.main(params)
    rollouts = root / "data" / "rollouts"
    rows = {r["id"]: r for split in ("train", "test") for r in read_jsonl(rollouts / f"{split}.jsonl")}
    return rows, read_jsonl(rollouts / "rejects.jsonl"), json.loads((root / "reports" / "labeling.json").read_text())


def test_served_teacher_labels_equal_its_folders_and_those_of_a_teacher_file_written_from_it(
        served_prm, labeled_rows, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pool = pool_of(labeled_rows, tmp_path / "pool.jsonl")
    served, served_rejects, report = labeled_by(tmp_path / "served", pool, {"teacher_model": served_prm["url"]})
    folder, folder_rejects, _ = labeled_by(tmp_path / "folder", pool, {"teacher_model": str(served_prm["model_dir"])})

    assert "too-long" not in served and len(served) >= 12
    cut = next(r for r in served_rejects if r["id"] == "too-long")
    assert cut["field"] == "steps" and "context cut it" in cut["reason"] and cut["file"].endswith(".jsonl")
    assert report["rejects"] == len(served_rejects)
    assert report["teacher"]["model"] == served_prm["url"]
    assert report["teacher"]["train_scored_solutions"] + report["teacher"]["test_scored_solutions"] == len(served)
    assert sorted(r["id"] for r in served_rejects) == sorted(r["id"] for r in folder_rejects)
    assert served.keys() == folder.keys()
    for row_id, row in served.items():
        assert row["label_source"]["model"] == served_prm["url"] and row["label_source"]["method"] == "teacher"
        assert len(row["values"]) == len(row["steps"]) and row["labels"] == folder[row_id]["labels"]
        assert row["values"] == pytest.approx(folder[row_id]["values"], abs=1e-5)
        assert row["first_error"] == folder[row_id]["first_error"]
    assert {label for row in served.values() for label in row["labels"]} <= {"+", "-"}

    # the served teacher asked once, its scores written as a teacher file, label from the file: the same labels
    scores_file = tmp_path / "teacher.jsonl"
    sources = [pool] + ([STRICTPRM_GSM8K] if STRICTPRM_GSM8K.is_file() else [])
    lines = []
    for i, source in enumerate(sources):
        if source == STRICTPRM_GSM8K:  # the 16 candidates ingest reads, in a file of their own
            source = tmp_path / "qwq.jsonl"
            source.write_text("".join(STRICTPRM_GSM8K.read_text().splitlines(keepends=True)[:16]))
        done = subprocess.run([str(BIN / "prmflow"), "teacher-scores", str(source), "--model", served_prm["url"],
                               "--out", str(tmp_path / f"part{i}.jsonl"), "--name", "served", "--batch-size", "4"],
                              capture_output=True, text=True, timeout=600)
        assert "candidates scored by" in done.stdout, done.stderr
        if source == pool:  # exit status 1: a candidate rejected, its line and reason said
            assert done.returncode == 1 and f"{pool}:13: steps: the teacher's context cut it" in done.stderr
        lines += (tmp_path / f"part{i}.jsonl").read_text().splitlines(keepends=True)
    assert "too-long" not in "".join(lines)
    scores_file.write_text("".join(lines))
    from_file, file_rejects, _ = labeled_by(tmp_path / "file", pool,
                                            {"teacher_file": str(scores_file), "teacher_models": ["served"]})
    assert from_file.keys() == served.keys()
    assert [r["id"] for r in file_rejects] == ["too-long"]  # the file has no scores of it: rejected by id
    for row_id, row in from_file.items():
        assert row["labels"] == served[row_id]["labels"]
        assert row["values"] == pytest.approx(served[row_id]["values"], abs=1e-6)


def test_a_bad_teacher_model_is_refused_by_name(tmp_path):
    refusals = [
        ({"method": "teacher", "teacher_file": "s.jsonl", "teacher_model": "http://127.0.0.1:1"},
         "teacher_file, teacher_model: the teacher method needs exactly one source"),
        ({"method": "teacher"}, "teacher_file, teacher_model: the teacher method needs exactly one source"),
        ({"method": "mc", "teacher_model": "models/prm"}, "teacher_model: only label.method teacher"),
        ({"method": "teacher", "teacher_model": "http://127.0.0.1:8000/pooling"},
         "teacher_checkpoint: the /pooling teacher_model"),
        ({"method": "teacher", "teacher_model": "models/prm", "teacher_checkpoint": "models/prm"},
         "teacher_checkpoint: only a /pooling teacher_model reads it"),
    ]
    for section, message in refusals:
        with pytest.raises(ConfigError, match=message):
            params_from_dict({"label": section})
    with pytest.raises(FileNotFoundError, match="label.teacher_model '.*nowhere'"):
        teacher_prm(LabelParams(method="teacher", teacher_model=str(tmp_path / "nowhere")))
    unserved = LabelParams(method="teacher", teacher_model="http://127.0.0.1:9", max_retries=1, retry_backoff_s=0)
    from prmflow.labeling.teacher_model import model_teacher_scores

    rows = [{"id": "a", "problem": "What is 1 + 1?", "steps": ["1 + 1 = 2."]}]
    with pytest.raises(ConnectionError, match=r"label.teacher_model 'http://127.0.0.1:9'.*after 2 attempts \(label.max_retries = 1\)"):
        model_teacher_scores(rows, teacher_prm(unserved), unserved, "problems.jsonl")



def test_a_teacher_file_s_first_step_says_where_its_scores_start(tmp_path):
    from prmflow.labeling.teacher import read_teacher_scores, teacher_rows

    scores_file = tmp_path / "scores.jsonl"
    scores_file.write_text("".join(json.dumps(line) + "\n" for line in [
        {"id": "a", "first_step": 2, "step_scores": {"t": [0.9, 0.2]}},    # from the first step ingest kept
        {"id": "b", "first_step": 3, "step_scores": {"t": [0.9]}},         # past the kept steps' start
        {"id": "c", "first_step": "2", "step_scores": {"t": [0.9, 0.2]}},  # not a step index
    ]))
    scores, bad_lines = read_teacher_scores(scores_file, ["t"])
    assert [(r["line"], r["field"], r["reason"]) for r in bad_lines] == [
        (3, "first_step", "first_step: expected a step index >= 0, got '2'")]
    candidates = [{"id": i, "problem_id": "p", "problem": "What is 2 + 2?", "answer": "4", "steps": ["2 + 2 = 4.",
                   "The answer is 4."], "predicted_answer": "4", "correct": True, "source": "pool",
                   "leading_steps_dropped": 2} for i in ("a", "b")]
    params = LabelParams(method="teacher", teacher_file=str(scores_file), teacher_models=["t"])
    rows, rejects = teacher_rows(candidates, scores, params, "train.jsonl")
    assert [(r["id"], r["labels"], r["values"]) for r in rows] == [("a", ["+", "-"], [0.9, 0.2])]
    assert [r["reason"] for r in rejects] == ["step_scores: 1 scores from step 3 for 4 steps of 'b'"]
