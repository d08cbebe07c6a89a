"""The registry under concurrent register runs, rollback
through the champion history, and reports/registry.json after hand moves; on real SQLite MLflow registries.
"""

import json
import os
import subprocess

import pytest
import yaml

from conftest import BIN, REPO
from prmflow.cli import main as cli
from prmflow.serving.registry import alias_history, alias_version, promote, registry_lock, rollback
from test_registry import heldout_rows
from tiny_models import build_tiny_prm, tracking_store


@pytest.fixture
def versions(tmp_path):
    """A registered model `prm` with five versions (no weights needed to move aliases)."""
    from mlflow import MlflowClient

    with tracking_store(tmp_path) as uri:
        client = MlflowClient()
        client.create_registered_model("prm")
        for _ in range(5):
            client.create_model_version("prm", source=(tmp_path / "model").as_uri())
        yield client, uri


def champion(client) -> str:
    return str(alias_version(client, "prm", "champion").version)


def test_rollback_walks_back_through_every_earlier_champion(versions):
    """After promotions 1, 2, 3, 5 and `promote 3` again, rollbacks go 5, 3, 2, 1 (they used to toggle 5, 3, 5)."""
    client, _ = versions
    for version in ("1", "2", "3", "5", "3"):
        promote(client, "prm", version, "champion", "ana", "test")
    assert alias_history(client, "prm", "champion") == ["1", "2", "3", "5", "3"]
    walked = [rollback(client, "prm", "champion", "bo", "bad outputs") for _ in range(4)]
    assert walked == ["5", "3", "2", "1"] and champion(client) == "1"
    tags = alias_version(client, "prm", "champion").tags
    assert tags["champion.reason"] == "rollback from 2: bad outputs" and tags["champion.set_by"] == "bo"
    with pytest.raises(ValueError, match="version 1 is the first version in the alias history"):
        rollback(client, "prm", "champion", "bo", "again")
    assert champion(client) == "1"


def test_rollback_to_a_version_truncates_the_history_or_adds_it(versions):
    client, _ = versions
    for version in ("1", "2", "3"):
        promote(client, "prm", version, "champion", "ana", "test")
    assert rollback(client, "prm", "champion", "bo", "skip 2", to="1") == "1"
    assert alias_history(client, "prm", "champion") == ["1"]
    assert rollback(client, "prm", "champion", "bo", "try 4", to="4") == "4"
    assert alias_history(client, "prm", "champion") == ["1", "4"]
    assert rollback(client, "prm", "champion", "bo", "back") == "1"


def test_a_registry_from_before_the_history_tag_rolls_back_to_its_previous(versions):
    client, _ = versions
    for version in ("2", "4"):
        client.set_registered_model_alias("prm", "champion", version)
    client.set_model_version_tag("prm", "4", "champion.previous", "2")
    assert alias_history(client, "prm", "champion") == ["2", "4"]
    assert rollback(client, "prm", "champion", "bo", "old registry") == "2"


def test_promote_and_rollback_rewrite_registry_json_to_what_the_registry_holds(versions, tmp_path):
    """`prmflow promote` and `prmflow rollback` leave reports/registry.json saying where @champion is."""
    client, _ = versions
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": {"reports_dir": str(tmp_path / "reports")}}))
    promote(client, "prm", "1", "champion", "register", "no current champion")
    (tmp_path / "reports").mkdir()
    decision = {"version": 1, "promoted": True, "champion_version": 1, "reason": "no current champion"}
    (tmp_path / "reports/registry.json").write_text(json.dumps(decision))

    def report() -> dict:
        return json.loads((tmp_path / "reports/registry.json").read_text())

    cli(["promote", "2", "--reason", "canary passed", "--who", "ana", "--params", str(params)])
    assert report()["champion_version"] == 2 and report()["registry"]["champion_history"] == [1, 2]
    assert report()["registry"]["champion_set"]["reason"] == "canary passed"
    assert report()["version"] == 1 and report()["reason"] == "no current champion"  # the register decision kept
    cli(["rollback", "--reason", "bad outputs", "--who", "bo", "--params", str(params)])
    assert report()["champion_version"] == 1 == int(champion(client))
    assert report()["registry"]["champion_history"] == [1]
    assert report()["registry"]["champion_set"]["set_by"] == "bo"


def test_the_registry_lock_is_exclusive_across_processes(versions):
    """While this process holds the lock, another process's `prmflow promote` cannot move the alias."""
    import filelock

    _, uri = versions
    code = ("from prmflow.serving.registry import registry_lock\n"
            f"with registry_lock({uri!r}, 'prm', timeout_s=1): pass\n")
    with registry_lock(uri, "prm"):
        blocked = subprocess.run([str(BIN / "python"), "-c", code], capture_output=True, text=True, timeout=120)
    assert blocked.returncode != 0 and filelock.Timeout.__name__ in blocked.stderr
    free = subprocess.run([str(BIN / "python"), "-c", code], capture_output=True, text=True, timeout=120)
    assert free.returncode == 0, free.stderr[-2000:]


@pytest.fixture
def register_project(tmp_path):
    """What `prmflow register` reads: a trained (tiny) PRM, its metrics, the held-out rollouts, dvc.yaml and
    params; no MLflow database yet."""
    build_tiny_prm(tmp_path / "models/prm", seed=0)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/metrics.json").write_text(json.dumps({"first_error_f1": 0.5, "first_error_threshold": 0.5}))
    (tmp_path / "data/rollouts").mkdir(parents=True)
    (tmp_path / "data/rollouts/test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in heldout_rows()))
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"register": {"gate_bootstrap_samples": 200}}))
    return tmp_path


def test_two_register_runs_at_once_on_a_fresh_database_each_gate_against_the_champion_of_their_decision(
        register_project):
    """Two `prmflow register` processes started together on a project with no MLflow database: neither crashes in
    the schema migration; the first decision finds no champion and promotes; the second compares the same
    weights with that new champion (difference 0) and keeps it. They used to both promote against no champion."""
    from mlflow import MlflowClient

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([str(BIN / "prmflow"), "register"], cwd=register_project, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=500)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n---\n".join(o[-3000:] for o in outputs)

    client = MlflowClient(tracking_uri=f"sqlite:///{register_project}/mlflow/mlflow.db")
    tags = {v: client.get_model_version("prm", v).tags for v in ("1", "2")}
    [first] = [v for v, t in tags.items() if t["gate.promoted"] == "True"]
    [second] = [v for v in tags if v != first]
    assert tags[first]["gate.reason"] == "no current champion" and tags[first]["gate.champion_version"] == "None"
    assert tags[second]["gate.champion_version"] == first and tags[second]["gate.difference"] == "0.0"
    assert tags[second]["gate.promoted"] == "False"
    assert champion(client) == first and alias_history(client, "prm", "champion") == [first]
    assert str(alias_version(client, "prm", "challenger").version) == second
    report = json.loads((register_project / "reports/registry.json").read_text())
    assert report["version"] == int(second) and report["registry"]["champion_version"] == int(first)
