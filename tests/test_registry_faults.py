"""The registry under concurrent register runs, rollback through the champion history, reports/registry.json
after hand moves, version names as numbers, moves killed at every write, and orphan versions; on real SQLite
MLflow registries, with real `kill -9`s (the process SIGKILLs itself at a chosen write).
"""

import json
import os
import subprocess

import pytest
import yaml

from conftest import BIN, REPO
from prmflow.cli import main as cli
from prmflow.serving.registry import (
    KILL_ENV, MOVE_POINTS, alias_history, alias_version, promote, registry_lock, registry_state, rollback,
    unfinished_moves,
)
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
    assert alias_history(client, "prm", "champion") == [1, 2, 3, 5, 3]
    walked = [rollback(client, "prm", "champion", "bo", "bad outputs") for _ in range(4)]
    assert walked == [5, 3, 2, 1] and champion(client) == "1"
    tags = alias_version(client, "prm", "champion").tags
    assert tags["champion.reason"] == "rollback from 2: bad outputs" and tags["champion.set_by"] == "bo"
    with pytest.raises(ValueError, match="version 1 is the first version in the alias history"):
        rollback(client, "prm", "champion", "bo", "again")
    assert champion(client) == "1"


def test_rollback_to_a_version_truncates_the_history_or_adds_it(versions):
    client, _ = versions
    for version in ("1", "2", "3"):
        promote(client, "prm", version, "champion", "ana", "test")
    assert rollback(client, "prm", "champion", "bo", "skip 2", to="1") == 1
    assert alias_history(client, "prm", "champion") == [1]
    assert rollback(client, "prm", "champion", "bo", "try 4", to="4") == 4
    assert alias_history(client, "prm", "champion") == [1, 4]
    assert rollback(client, "prm", "champion", "bo", "back") == 1


def test_a_registry_from_before_the_history_tag_rolls_back_to_its_previous(versions):
    client, _ = versions
    for version in ("2", "4"):
        client.set_registered_model_alias("prm", "champion", version)
    client.set_model_version_tag("prm", "4", "champion.previous", "2")
    assert alias_history(client, "prm", "champion") == [2, 4]
    assert rollback(client, "prm", "champion", "bo", "old registry") == 2


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
    # --force: both register the same weights whichever reads the registry first (a second one would keep version 1)
    runs = [subprocess.Popen([str(BIN / "prmflow"), "register", "--force"], cwd=register_project, env=env,
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
    assert champion(client) == first and alias_history(client, "prm", "champion") == [int(first)]
    assert str(alias_version(client, "prm", "challenger").version) == second
    report = json.loads((register_project / "reports/registry.json").read_text())
    assert report["version"] == int(second) and report["registry"]["champion_version"] == int(first)


def _params(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": {"reports_dir": str(tmp_path / "reports")}}))
    return str(params)


def _report(tmp_path) -> dict:
    return json.loads((tmp_path / "reports/registry.json").read_text())


def test_promote_03_is_version_3_and_a_rollback_after_it_moves_the_champion(versions, tmp_path, capsys):
    """`promote 03` and `promote " 3"` promote version 3 and store 3 in the history; the rollback after them moves
    the champion back (a stored "03" used to make every rollback report success and leave the champion)."""
    client, _ = versions
    params = _params(tmp_path)
    for version in ("1", "2", "03", " 3"):
        cli(["promote", version, "--reason", "canary", "--who", "ana", "--params", params])
    assert champion(client) == "3" and alias_history(client, "prm", "champion") == [1, 2, 3]
    assert json.loads(client.get_registered_model("prm").tags["champion.history"]) == [1, 2, 3]
    assert "promote: prm@champion -> version 3 (was 2)" in capsys.readouterr().out
    cli(["rollback", "--reason", "bad outputs", "--params", params])
    assert champion(client) == "2" and _report(tmp_path)["registry"]["champion_history"] == [1, 2]
    for text in ("3.0", "+3", "three", "0", ""):
        with pytest.raises(SystemExit):
            cli(["promote", text, "--reason", "typo", "--params", params])
        assert f"version {text!r}: not a version number" in capsys.readouterr().err
    assert champion(client) == "2" and alias_history(client, "prm", "champion") == [1, 2]


def test_a_history_an_older_prmflow_wrote_as_text_rolls_back(versions):
    """The state today's registries can be in: history ["1", "2", "03"] with version 3 the champion."""
    client, _ = versions
    client.set_registered_model_alias("prm", "champion", "3")
    client.set_registered_model_tag("prm", "champion.history", json.dumps(["1", "2", "03"]))
    assert rollback(client, "prm", "champion", "bo", "bad outputs") == 2 and champion(client) == "2"


def test_a_reason_too_long_for_the_registry_is_refused_before_any_write(versions):
    client, _ = versions
    promote(client, "prm", "1", "champion", "ana", "first")
    with pytest.raises(ValueError, match="shorten the reason"):
        promote(client, "prm", "2", "champion", "ana", "x" * 6000)
    assert champion(client) == "1" and alias_history(client, "prm", "champion") == [1]
    assert unfinished_moves(client, "prm", ("champion",)) == {}


def _killed(args: list[str], point: str, cwd=None) -> None:
    """Run `prmflow ARGS` until it SIGKILLs itself right after the write `point`."""
    env = os.environ | {KILL_ENV: point, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([str(BIN / "prmflow"), *args], env=env, cwd=cwd, capture_output=True, text=True,
                         timeout=500)
    assert run.returncode == -9, run.stdout[-2000:] + run.stderr[-2000:]


@pytest.mark.parametrize("point", MOVE_POINTS)
def test_a_promote_killed_at_any_write_is_reported_then_completed_by_the_next_command(versions, tmp_path, point,
                                                                                      capsys):
    """Killed after any write of the move, the registry says the move is unfinished (or is complete); the next
    command completes it: alias, tags, history and reports/registry.json all say version 3, and a rollback then
    walks back to 2."""
    client, _ = versions
    params = _params(tmp_path)
    for version in ("1", "2"):
        cli(["promote", version, "--reason", "setup", "--params", params])
    _killed(["promote", "03", "--reason", "canary passed", "--who", "ana", "--params", params], point)
    state = registry_state(client, "prm", "champion", "challenger")
    complete = point == "done"
    assert state["unfinished_moves"] == ({} if complete else {"champion": 3})
    assert _report(tmp_path)["champion_version"] == 2  # the killed command never rewrote it
    capsys.readouterr()
    cli(["registry", "--params", params])
    out = capsys.readouterr().out
    assert ("completed an interrupted move to version 3 (by ana" in out) != complete
    assert "prm@champion: version 3" in out
    assert champion(client) == "3" and alias_history(client, "prm", "champion") == [1, 2, 3]
    tags = alias_version(client, "prm", "champion").tags
    assert (tags["champion.set_by"], tags["champion.reason"], tags["champion.previous"]) == ("ana", "canary passed",
                                                                                              "2")
    assert _report(tmp_path)["registry"] == registry_state(client, "prm", "champion", "challenger")
    assert _report(tmp_path)["champion_version"] == 3 and _report(tmp_path)["registry"]["unfinished_moves"] == {}
    cli(["rollback", "--reason", "bad outputs", "--params", params])
    assert champion(client) == "2" and alias_history(client, "prm", "champion") == [1, 2]


def test_a_rollback_killed_after_the_alias_is_completed_by_the_next_promote(versions, tmp_path):
    client, _ = versions
    params = _params(tmp_path)
    for version in ("1", "2", "3"):
        cli(["promote", version, "--reason", "setup", "--params", params])
    _killed(["rollback", "--reason", "bad outputs", "--who", "bo", "--params", params], "alias")
    assert champion(client) == "2" and alias_history(client, "prm", "champion") == [1, 2, 3]  # half a move
    cli(["promote", "4", "--reason", "fix", "--params", params])
    assert alias_history(client, "prm", "champion") == [1, 2, 4]  # the rollback popped 3, then 4 was pushed
    assert client.get_model_version("prm", "2").tags["champion.reason"] == "rollback from 3: bad outputs"


def test_a_register_killed_before_its_gate_leaves_an_orphan_that_promote_refuses_unless_forced(
        register_project, monkeypatch, capsys):
    """`kill -9` of `prmflow register` at its first alias write: the version has its lineage tags but no gate
    decision. The next command completes the challenger move and names the version an orphan; `promote` refuses
    it without --force."""
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(register_project)
    _killed(["register"], "intent", cwd=register_project)
    client = MlflowClient(tracking_uri=f"sqlite:///{register_project}/mlflow/mlflow.db")
    assert "git.commit" in client.get_model_version("prm", "1").tags
    cli(["registry"])
    out = capsys.readouterr().out
    assert "completed an interrupted move to version 1" in out and "orphan versions of prm" in out
    assert str(alias_version(client, "prm", "challenger").version) == "1"
    with pytest.raises(SystemExit):
        cli(["promote", "1", "--reason", "looks fine"])
    assert "prm version 1 is an orphan" in capsys.readouterr().err and alias_version(client, "prm", "champion") is None
    cli(["promote", "1", "--reason", "checked by hand", "--force"])
    assert champion(client) == "1"
    report = json.loads((register_project / "reports/registry.json").read_text())
    assert report["registry"]["orphan_versions"] == [1] and report["champion_version"] == 1


def test_an_evaluation_only_change_registers_nothing_and_each_version_says_why_it_exists(register_project):
    from mlflow import MlflowClient

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"OMP_NUM_THREADS": "1"}
    params_path, metrics_path = register_project / "params.yaml", register_project / "reports/metrics.json"

    def register(*args: str) -> str:
        proc = subprocess.run([str(BIN / "prmflow"), "register", *args], cwd=register_project, env=env,
                              capture_output=True, text=True, timeout=500)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return proc.stdout

    def edit_params(section: str, **values) -> None:
        params = yaml.safe_load(params_path.read_text())
        params.setdefault(section, {}).update(values)
        params_path.write_text(yaml.safe_dump(params))

    register()
    client = MlflowClient(tracking_uri=f"sqlite:///{register_project}/mlflow/mlflow.db")
    first = client.get_model_version("prm", "1").tags
    assert first["registered_because"] == "first version of prm"
    assert {"inputs.weights", "inputs.served_config", "inputs.gate"} <= set(first)

    # What `dvc exp run -S evaluate.external=...` changes: the evaluate params the gate does not read, new metrics.
    edit_params("evaluate", external=[{"name": "more", "path": "more.jsonl", "format": "outcome"}],
                bootstrap_samples=50)
    metrics_path.write_text(json.dumps(json.loads(metrics_path.read_text()) | {"external_more_best_of_n": 0.7}))
    output = register()
    assert "nothing registered: version 1 holds the same weights, served config and gate inputs" in output
    assert [str(v.version) for v in client.search_model_versions("name = 'prm'")] == ["1"]
    report = json.loads((register_project / "reports/registry.json").read_text())
    assert report["registered"] is False and report["version"] == 1 and report["champion_version"] == 1

    edit_params("register", promotion_margin=0.02)  # what the gate compares changed: a version, saying so
    register()
    assert client.get_model_version("prm", "2").tags["registered_because"] == "changed since version 1: gate"
    edit_params("register", max_request_bytes=1000000)  # the served config: the version must carry it
    register()
    assert client.get_model_version("prm", "3").tags["registered_because"] == \
        "changed since version 2: served config"

    register("--force")
    assert client.get_model_version("prm", "4").tags["registered_because"].startswith("forced (prmflow register")
