"""The promotion gate, lineage helpers, and hand-moved aliases on a real MLflow registry (sqlite in tmp)."""

import json
import math
import subprocess

import pytest
import yaml

from conftest import REPO
from prmflow.config import BaseParams, Params, RegisterParams
from prmflow.evaluation.heldout_metrics import evaluate_solutions
from prmflow.serving.register import gate_new_version, step_scores_of
from prmflow.serving.registry import (
    GATE_DONE_TAG, alias_version, dvc_hashes, dvc_md5, file_md5, gate, git_commit, lineage_paths, lineage_tags, promote,
)
from tiny_models import build_tiny_prm, log_version, tracking_store


def test_gate_promotes_only_when_the_whole_interval_clears_the_margin():
    assert gate(None, 0.01).promote
    assert gate((0.05, 0.02, 0.08), 0.01).promote
    assert not gate((0.05, 0.005, 0.09), 0.01).promote  # better on average, but the interval reaches the margin
    assert not gate((0.20, -0.01, 0.41), 0.01).promote  # a large difference that noise could make
    assert not gate((0.0, 0.0, 0.0), 0.0).promote       # an identical retrain
    assert not gate((math.nan, math.nan, math.nan), 0.0).promote
    assert gate((0.05, 0.02, 0.08), 0.01, "first_error_f1").reason == (
        "first_error_f1 challenger - champion +0.0500 (95% interval [+0.0200, +0.0800]): its lower bound is above "
        "the margin 0.01")


def dvc_data_md5(path) -> str:
    """The md5 dvc_data itself builds for `path` (what `dvc add` / dvc.lock record), for an independent check."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()
    _, _, obj = build(HashFileDB(fs, str(path.parent / ".cache")), str(path), fs, "md5", dry_run=True)
    return obj.hash_info.value


def test_dvc_md5_is_the_hash_dvc_computes_for_a_file_and_a_directory(tmp_path):
    folder = tmp_path / "models" / "prm"
    (folder / "nested" / "deeper").mkdir(parents=True)
    files = {"config.json": b'{"a": 1}\n', "model.safetensors": bytes(range(256)) * 10, "nested/b.txt": b"b\r\n",
             "nested/deeper/z.bin": b"", "a b.txt": b"space in the name"}
    for name, body in files.items():
        (folder / name).write_bytes(body)
    assert dvc_md5(folder) == dvc_data_md5(folder)
    assert dvc_md5(folder / "nested" / "b.txt") == dvc_data_md5(folder / "nested" / "b.txt")
    before = dvc_md5(folder)
    (folder / "nested" / "b.txt").write_bytes(b"c\n")
    assert dvc_md5(folder) != before


def test_lineage_paths_are_the_data_and_models_of_dvc_yaml_and_hashes_skip_missing_ones(tmp_path):
    paths = lineage_paths(REPO / "dvc.yaml", ("data", "models"))
    assert {"data/problems", "data/rollouts", "data/rollouts/test.jsonl", "models/prm", "models/orm"} <= set(paths)
    assert all(p.split("/")[0] in ("data", "models") for p in paths) and len(paths) == len(set(paths))
    (tmp_path / "data" / "rollouts").mkdir(parents=True)
    (tmp_path / "data" / "rollouts" / "test.jsonl").write_text("{}\n")
    assert dvc_hashes(paths, tmp_path) == {"data/rollouts": dvc_md5(tmp_path / "data" / "rollouts"),
                                           "data/rollouts/test.jsonl": file_md5(tmp_path / "data/rollouts/test.jsonl")}


def test_a_retrained_version_is_tagged_with_the_hash_of_the_model_it_serves(tmp_path):
    """Retrain with changed params and register again: the tags are the new files' hashes, not dvc.lock's old ones."""
    from mlflow import MlflowClient

    from tiny_project import make_project, run

    project = make_project(tmp_path)
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"]):
        assert run(cmd, project).returncode == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow/mlflow.db")
    tags = []
    for epochs in (2.0, 3.0):
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["train"]["epochs"] = epochs  # the second run changes a tracked file: a dirty tree
        (project / "params.yaml").write_text(yaml.safe_dump(params))
        proc = run(["dvc", "repro"], project)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        version = json.loads((project / "reports" / "registry.json").read_text())["version"]
        tags.append(client.get_model_version("prm", version).tags)
        lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
        trained = next(out["md5"] for out in lock["train"]["outs"] if out["path"] == "models/prm")
        assert tags[-1]["dvc.models/prm"] == dvc_data_md5(project / "models" / "prm") == trained
        assert tags[-1]["dvc.data/rollouts/test.jsonl"] == dvc_data_md5(project / "data/rollouts/test.jsonl")
        assert tags[-1]["dvc.data/rollouts"] == dvc_data_md5(project / "data" / "rollouts")
    assert tags[0]["dvc.models/prm"] != tags[1]["dvc.models/prm"]
    assert tags[0]["dvc.data/rollouts"] == tags[1]["dvc.data/rollouts"]  # same data, retrained model
    assert (tags[0]["git.dirty"], tags[1]["git.dirty"]) == ("false", "true")
    assert tags[1]["git.commit"] == tags[0]["git.commit"] + "-dirty"


def test_git_commit_outside_a_repository_is_none(tmp_path):
    assert git_commit(tmp_path) == "none"


def test_git_commit_is_dirty_for_changed_code_but_not_for_what_the_pipeline_writes(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "reports").mkdir()
    for name in ("code.py", "dvc.lock", "reports/metrics.json"):
        (tmp_path / name).write_text("1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    generated = ("dvc.lock", "reports")
    (tmp_path / "dvc.lock").write_text("2\n")
    (tmp_path / "reports" / "metrics.json").write_text("2\n")
    assert git_commit(tmp_path, generated) == head
    assert git_commit(tmp_path) == f"{head}-dirty"
    (tmp_path / "code.py").write_text("2\n")
    assert git_commit(tmp_path, generated) == f"{head}-dirty"


def test_lineage_tags_name_code_data_params_runs_and_metrics():
    tags = lineage_tags("abc123", {"data/rollouts": "b.dir"}, {"train": {"epochs": 2.0}}, {"train": "run1"},
                        {"first_error_f1": 0.5, "step_auroc": 0.75, "solutions": 48}, "heldout1")
    assert tags == {"git.commit": "abc123", "git.dirty": "false", "heldout.md5": "heldout1",
                    "dvc.data/rollouts": "b.dir",
                    "params.train": '{"epochs": 2.0}', "run.train": "run1",
                    "metric.first_error_f1": "0.500000", "metric.step_auroc": "0.750000"}
    assert [lineage_tags(commit, {}, {}, {}, {}, "h")["git.dirty"] for commit in ("abc-dirty", "none")] == ["true",
                                                                                                      "unknown"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """One real logged tiny PRM; versions are registered from it as the tests need them."""
    import mlflow
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("registry")
    with tracking_store(root) as uri:
        model_dir = build_tiny_prm(root / "model", seed=0)
        first = log_version(model_dir)
        source = MlflowClient().get_model_version("prm", first).source

        def new_version(heldout_md5: str, metrics: dict) -> str:
            """A version as a register run leaves it: lineage tags, and a gate decision (else it is an orphan)."""
            version = str(mlflow.register_model(source, "prm").version)
            tags = lineage_tags("c0ffee", {}, {}, {}, metrics, heldout_md5) | {GATE_DONE_TAG: "False"}
            for key, value in tags.items():
                MlflowClient().set_model_version_tag("prm", version, key, value)
            return version

        yield {"client": MlflowClient(), "uri": uri, "root": root, "first": first, "new_version": new_version}


def holder(client, alias: str) -> str:
    return str(alias_version(client, "prm", alias).version)


def heldout_rows() -> list[dict]:
    """A small labeled held-out set: per problem, one right and one wrong solution."""
    rows = []
    for a in range(2, 6):
        problem = f"Ava has {a} apples and buys 3 more. How many apples does Ava have?"
        for wrong in (0, 1):
            total = a + 3 + wrong
            rows.append({"problem_id": f"p{a}", "problem": problem, "predicted_answer": str(total),
                         "steps": ["Ava buys 3 apples.", f"Ava has {a} + 3 = <<{a}+3={total}>>{total} apples."],
                         "labels": ["+", "-" if wrong else "+"], "first_error": 1 if wrong else -1,
                         "correct": not wrong})
    return rows


def test_first_version_is_promoted_then_an_identical_one_or_noise_is_not(registry):
    """The gate scores both registered versions on the current held-out rows and tags what it decided."""
    from prmflow.scoring.modeling import StepTagScorer

    client, new_version, root = registry["client"], registry["new_version"], registry["root"]
    rows = heldout_rows()
    params = Params(base=BaseParams(seed=3), register=RegisterParams(promotion_margin=0.0))
    first = new_version("heldout1", {"first_error_f1": 0.60})
    decision = gate_new_version(client, params, first, step_scores=step_scores_of(rows, params), rows=rows,
                                heldout_md5="heldout1", who="test")
    assert decision["promoted"] and decision["reason"] == "no current champion"
    assert decision["gate"]["champion_version"] is None and "difference" not in decision["gate"]

    same = new_version("heldout1", {"first_error_f1": 0.60})  # the same weights registered again
    decision = gate_new_version(client, params, same, step_scores=step_scores_of(rows, params), rows=rows,
                                heldout_md5="heldout1", who="test")
    assert not decision["promoted"] and decision["champion_version"] == int(first)
    assert (decision["gate"]["difference"], decision["gate"]["ci_low"], decision["gate"]["ci_high"]) == (0, 0, 0)
    assert json.loads(json.dumps(decision)) == decision  # what reports/registry.json records
    prm = StepTagScorer(root / "model")  # the champion measured afresh on these rows, not its tags
    scores = prm.score_batch([(r["problem"], r["steps"]) for r in rows])
    expected = evaluate_solutions(rows, scores, params.evaluate).metrics
    assert decision["gate"]["champion"] == expected["first_error_f1"] == decision["gate"]["challenger"]
    tags = client.get_model_version("prm", same).tags
    assert (tags["gate.promoted"], tags["gate.difference"], tags["gate.ci_low"], tags["gate.champion_version"]) == (
        "False", "0.0", "0.0", first)
    assert tags["gate.reason"] == decision["reason"] and "its lower bound is not above the margin 0.0" in tags[
        "gate.reason"]
    assert holder(client, "champion") == first and holder(client, "challenger") == same

    other = log_version(build_tiny_prm(root / "other", seed=1))  # another random model, on 4 problems
    decision = gate_new_version(client, params, other, step_scores=step_scores_of(rows, params), rows=rows,
                                heldout_md5="heldout1", who="test")
    assert decision["gate"]["ci_low"] <= 0 <= decision["gate"]["ci_high"] and not decision["promoted"]
    assert holder(client, "champion") == first


def test_promote_and_rollback_commands_move_the_champion_and_record_why(registry, tmp_path, capsys):
    from prmflow.cli import main

    client, new_version = registry["client"], registry["new_version"]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"register": {"model_name": "prm", "alias": "champion"},
                                      "base": {"reports_dir": str(tmp_path / "reports")}}))  # promote writes there
    before = new_version("heldout1", {"first_error_f1": 0.5})
    promote(client, "prm", before, "champion", "test", "setup")
    target = new_version("heldout1", {"first_error_f1": 0.1})
    main(["promote", target, "--reason", "canary passed", "--who", "ana", "--params", str(params)])
    champion = alias_version(client, "prm", "champion")
    assert str(champion.version) == target and champion.tags["champion.reason"] == "canary passed"
    assert champion.tags["champion.set_by"] == "ana" and champion.tags["champion.previous"] == before

    main(["rollback", "--reason", "bad outputs", "--who", "bo", "--params", str(params)])
    champion = alias_version(client, "prm", "champion")
    assert str(champion.version) == before
    assert champion.tags["champion.set_by"] == "bo" and champion.tags["champion.reason"] == (
        f"rollback from {target}: bad outputs")
    assert "rollback: prm@champion -> version" in capsys.readouterr().out

    with pytest.raises(SystemExit):
        main(["promote", "999", "--reason", "typo", "--params", str(params)])
    assert "999" in capsys.readouterr().err and holder(client, "champion") == before

