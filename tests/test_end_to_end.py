"""The whole pipeline on a tiny configuration with the real tools: Prefect -> dvc repro -> MLflow serve.

One temporary project is built per session: the Prefect flow (temporary local server) runs
every dvc.yaml stage; the tests then check the outputs, that a second `dvc repro` does
nothing, the MLflow registry, and a real `mlflow models serve` process on loopback.
"""

import json

import pytest
import requests

from model_server import model_server
from tiny_project import make_project, run, run_flow, tool_env

@pytest.fixture(scope="session")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("project"))
    flow = run_flow(root)
    assert flow.returncode == 0, flow.stdout[-3000:] + flow.stderr[-3000:]
    return root


def test_every_stage_wrote_its_outputs(project):
    for path in ("data/problems/train.jsonl", "data/problems/rejects.jsonl", "data/rollouts/test.jsonl",
                 "data/tokenized/train", "models/prm/prm_config.json", "reports/validation.json",
                 "reports/train.json", "models/orm/reward_config.json", "reports/train_orm.json",
                 "reports/metrics.json", "reports/plots/roc.json", "reports/registry.json",
                 "reports/search.md", "reports/plots/search.png", "dvc.lock"):
        assert (project / path).exists(), path
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["solutions"] == 12 * 4 and 0 <= metrics["step_auroc"] <= 1
    assert metrics["compare_solutions"] == metrics["test_solutions"]
    assert all(0 <= metrics[f"compare_{s}_solution_auroc"] <= 1 for s in ("zero_shot", "prm", "orm", "combined"))
    assert "| combined PRM + ORM |" in (project / "reports/summary.md").read_text()
    assert json.loads((project / "reports/validation.json").read_text())["success"] is True
    search = json.loads((project / "reports/search.json").read_text())
    assert set(search) == {"best_of_n_min", "best_of_n_prod", "best_of_n_last", "weighted_vote", "beam_search", "dvts",
                           "majority", "pass_at_1"}
    assert all(set(by_n) == {"1", "4", "16"} and 0 <= by_n["4"]["accuracy"] <= 1 for by_n in search.values())
    assert search["majority"]["4"]["policy_calls"] == 4 and search["majority"]["4"]["prm_tokens"] == 0


def test_tracked_outputs_hold_nothing_of_this_machine(project):
    """What git tracks must come out the same on any machine (tests/test_fresh_clone.py runs it for real)."""
    from prmflow.serving.register import REGISTERED_RECEIPT
    from prmflow.tracking import RUN_ONLY_KEYS

    for report in ("train.json", "train_orm.json", "metrics.json"):
        assert not set(RUN_ONLY_KEYS) & set(json.loads((project / "reports" / report).read_text())), report
    assert not any(key.startswith("champion_") for key in json.loads((project / "reports/metrics.json").read_text()))
    assert json.loads((project / REGISTERED_RECEIPT).read_text()) == {
        "alias": "champion", "model_name": "prm", "registry": "sqlite:///mlflow/mlflow.db"}
    assert "reports/registry.json" not in (project / "dvc.lock").read_text()


def test_second_repro_does_nothing(project):
    again = run(["dvc", "repro"], project)
    assert again.returncode == 0
    assert "Running stage" not in again.stdout and "up to date" in again.stdout


def test_registry_holds_champion_and_stage_runs_are_grouped(project):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow/mlflow.db")
    registry = json.loads((project / "reports/registry.json").read_text())
    version = client.get_model_version_by_alias("prm", "champion")
    assert version.version == registry["version"]
    experiment = client.get_experiment_by_name("prmflow")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("prmflow.stage") == "pipeline"]
    assert len(parents) == 1
    children = {r.data.tags["prmflow.stage"] for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert children == {"ingest", "label", "validate", "tokenize", "train", "train_orm", "evaluate", "search",
                        "register"}


@pytest.fixture(scope="module")
def server(project):
    with model_server("models:/prm@champion", tool_env(project), project, project / "serve.log") as url:
        yield url


def test_served_model_answers_the_contract(server, project):
    rollouts = [json.loads(line) for line in (project / "data/rollouts/test.jsonl").read_text().splitlines()]
    solutions = [{"problem": r["problem"], "steps": r["steps"]} for r in rollouts[:3]]
    response = requests.post(f"{server}/invocations", json={"inputs": solutions, "params": {"aggregation": "min"}},
                             timeout=60)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 3
    threshold = json.loads((project / "reports/metrics.json").read_text())["first_error_threshold"]
    for solution, prediction in zip(solutions, predictions):
        scores = prediction["step_scores"]
        assert len(scores) == prediction["scored_steps"] == len(solution["steps"])
        assert all(0 <= s <= 1 for s in scores)
        assert prediction["score"] == pytest.approx(min(scores))
        below = [i for i, s in enumerate(scores) if s < threshold]
        assert prediction["first_error"] == (below[0] if below else -1)

    last = requests.post(f"{server}/invocations", json={"inputs": solutions[:1], "params": {"aggregation": "last"}},
                         timeout=60).json()["predictions"][0]
    assert last["score"] == pytest.approx(last["step_scores"][-1])


@pytest.mark.parametrize("payload, message", [
    ({"inputs": [{"problem": "p", "steps": ["a", 2]}]}, "inputs[0].steps[1]: must be a string"),
    ({"inputs": [{"problem": "p", "steps": ["a"]}], "params": {"aggregation": "max"}}, "params.aggregation"),
    ({"inputs": [{"steps": ["a"]}]}, "problem"),
    ({"inputs": [{"problem": "p", "steps": "not a list"}]}, "steps"),
])
def test_bad_requests_get_a_400_that_names_the_field(server, payload, message):
    response = requests.post(f"{server}/invocations", json=payload, timeout=60)
    assert response.status_code == 400
    assert message in response.json()["message"]


def test_register_with_model_kind_combined_logs_both_models(project):
    """`register.model_kind: combined` (another params file, so the DVC state stays as the flow left it):
    the version carries the ORM and answers the outcome score; the gate still compares the PRM's metric."""
    import yaml
    from mlflow import MlflowClient

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["register"]["model_kind"] = "combined"
    (project / "params-combined.yaml").write_text(yaml.safe_dump(params))
    before = json.loads((project / "reports/registry.json").read_text())
    proc = run(["prmflow", "register", "--params", "params-combined.yaml"], project)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((project / "reports/registry.json").read_text())
    assert record["model_kind"] == "combined" and record["version"] == before["version"] + 1
    assert not record["promoted"]  # the same PRM: its gate metric equals the champion's
    assert record["gate"]["challenger"] == pytest.approx(record["gate"]["champion"], abs=1e-6)
    client = MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow/mlflow.db")
    assert client.get_model_version("prm", str(record["version"])).tags["model_kind"] == "combined"
    # `prmflow score` answers exactly what a server of that version answers.
    proc = run(["prmflow", "score", "data/rollouts/test.jsonl", "--model", f"models:/prm/{record['version']}"],
               project)
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictions = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(predictions) == 12 * 4
    for prediction in predictions:
        assert 0 <= prediction["outcome_score"] <= 1
        assert prediction["score"] == pytest.approx(0.7 * min(prediction["step_scores"])
                                                    + 0.3 * prediction["outcome_score"])
