"""Bad bytes and broken files are refused with file, line and field; a diverged model's
NaN scores are never printed; checkpoints that declare remote code are refused by every loader."""

import json
import math
import shutil

import pytest
import torch

from conftest import REPO
from prmflow.cli import main as cli
from prmflow.config import BaseParams, Params
from prmflow.data.sources import read_source
from prmflow.jsonl import RecordError, write_jsonl
from tiny_models import build_tiny_prm

SOLUTIONS = [{"id": "a", "problem": "Ava has 3 apples and buys 2 more.", "steps": ["Ava has 3 + 2 = 5 apples."]},
             {"id": "b", "problem": "Tom has 4 pens.", "steps": ["Tom buys 3 pens.", "Tom has 7 pens."]}]


def strict_json(line: str) -> dict:
    """json.loads that refuses NaN and Infinity, which are not JSON (Python's json accepts them by default)."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(line, parse_constant=refuse)


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory):
    return build_tiny_prm(tmp_path_factory.mktemp("prm") / "model", seed=0)


def test_score_rejects_a_line_that_is_not_utf8_and_scores_the_others(prm_dir, tmp_path, capsys):
    path = tmp_path / "solutions.jsonl"
    bad = json.dumps({"problem": "Caf\u00e9 owner has 3 cups.", "steps": ["She has 3 cups."]}).encode()
    bad = bad.replace("Caf\\u00e9".encode(), b"Caf\xe9")
    path.write_bytes(b"\n".join([json.dumps(SOLUTIONS[0]).encode(), bad, json.dumps(SOLUTIONS[1]).encode()]) + b"\n")
    with pytest.raises(SystemExit) as exit_:
        cli(["score", str(path), "--model", str(prm_dir), "--threshold", "0.5", "--params", str(tmp_path / "none")])
    assert exit_.value.code == 1
    out, err = capsys.readouterr()
    assert [strict_json(line)["id"] for line in out.splitlines()] == ["a", "b"]
    column = bad.index(b"\xe9") + 1
    assert f"{path}:2: not UTF-8: byte 0xe9 at column {column}" in err
    [reject] = [json.loads(line) for line in (tmp_path / "solutions.jsonl.rejects.jsonl").read_text().splitlines()]
    assert reject["line"] == 2 and reject["reason"] == f"not UTF-8: byte 0xe9 at column {column}"


def test_a_diverged_model_scores_null_with_a_reason_never_nan(prm_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    diverged = tmp_path / "diverged"
    shutil.copytree(prm_dir, diverged)
    model = AutoModelForCausalLM.from_pretrained(diverged)
    with torch.no_grad():
        model.lm_head.weight.fill_(math.inf)  # what training at learning_rate .inf left: every logit NaN
    model.save_pretrained(diverged)
    path = tmp_path / "solutions.jsonl"
    write_jsonl(path, SOLUTIONS)
    cli(["score", str(path), "--model", str(diverged), "--threshold", "0.5", "--params", str(tmp_path / "none")])
    predictions = [strict_json(line) for line in capsys.readouterr().out.splitlines()]
    assert len(predictions) == 2
    for prediction in predictions:
        assert (prediction["score"], prediction["first_error"], prediction["step_scores"]) == (None, None, [])
        assert "not numbers (NaN)" in prediction["reason"]


def label_params(tmp_path) -> Params:
    return Params(base=BaseParams(data_dir=str(tmp_path / "data"), reports_dir=str(tmp_path / "reports"),
                                  mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                                  mlflow_artifacts_dir=str(tmp_path / "artifacts")))


GOOD = {"id": "p1", "problem": "Ava has 3 apples and buys 2 more. How many?", "answer": "5",
        "reference_steps": ["Ava has 3 + 2 = <<3+2=5>>5 apples."], "source": "generator"}


@pytest.mark.parametrize("line, message", [
    (json.dumps(GOOD).encode().replace(b"Ava has 3 apples", b"Ava has 3 apples \xff"),
     r"train.jsonl:2: not UTF-8: byte 0xff at column \d+"),
    (json.dumps(GOOD | {"reference_steps": "Ava has 5."}).encode(),
     "train.jsonl:2: reference_steps: expected list\\[str\\], got str \"Ava has 5.\""),
    (json.dumps(GOOD | {"problem": 12345}).encode(), "train.jsonl:2: problem: expected str, got int 12345"),
    (b"", "train.jsonl: no problems"),
])
def test_label_refuses_a_corrupted_problems_file_naming_file_line_and_field(tmp_path, line, message):
    from prmflow.labeling import label

    problems = tmp_path / "data/problems"
    problems.mkdir(parents=True)
    (problems / "train.jsonl").write_bytes(json.dumps(GOOD).encode() + b"\n" + line + b"\n" if line else b"")
    (problems / "test.jsonl").write_text(json.dumps(GOOD) + "\n")
    with pytest.raises(RecordError, match=message):
        label.main(label_params(tmp_path))


def test_a_source_folder_reads_any_case_of_jsonl_and_rejects_other_files(tmp_path):
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    shutil.copy(REPO / "tests/fixtures/ingest/gsm8k.jsonl", folder / "train.JSONL")
    (folder / "notes.txt").write_text("downloaded from the hub\n")
    (folder / ".gitkeep").write_text("")
    records, rejects = read_source({"format": "gsm8k", "path": str(folder), "split": "train"}, seed=0)
    assert [r.row["answer"] for r in records] == ["48", "600"]
    assert [(r["file"], r["reason"].split(":")[0]) for r in rejects] == [
        (str(folder / "notes.txt"), "not a .jsonl or .json file (any case)")]


def test_every_loader_refuses_a_checkpoint_that_declares_remote_code(prm_dir, tmp_path):
    from prmflow.scoring.modeling import StepTagScorer
    from prmflow.scoring.rewards import load_reward_model

    remote = tmp_path / "remote"
    shutil.copytree(prm_dir, remote)
    config = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps(config | {"auto_map": {"AutoModelForCausalLM": "x.Model"}}))
    for load in (StepTagScorer, load_reward_model):
        with pytest.raises(ValueError, match="config.json: auto_map: this checkpoint needs remote code"):
            load(remote)
    StepTagScorer(prm_dir)  # the same checkpoint without auto_map loads
