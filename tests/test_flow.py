"""The prm-pipeline flow against a real `prefect server`: the scheduled deployment, retraining
only on new problems, `dvc push`, and failures that stop the flow and resume after a fix.

One tiny project and one server serve the whole module: `flows/schedule.py` serves the
deployment (flow.serve, no worker) against the server, prefect.yaml is deployed to a process
work pool beside it, and the tests trigger runs through the Prefect client and read back
states, task runs and the summary artifact.
"""

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from conftest import BIN, REPO
from model_server import free_port, loopback_process, stop_process_group
from tiny_project import make_project, run

sys.path.insert(0, str(REPO / "flows"))
from pipeline import ARTIFACT_KEY, new_problem_changes, stage_names, stage_task  # noqa: E402

CRON = "17 3 1 1 *"  # yearly: a scheduled run never races the triggered ones during a test
DEPLOYMENT = "prm-pipeline/nightly-retrain"
RUN_TIMEOUT_S = 600  # a full training run; on 2 cores shared with other work it has taken over 300 s


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny project (the end-to-end test's configuration) with a local-folder DVC remote."""
    root = make_project(tmp_path_factory.mktemp("flow-project"))
    remote = tmp_path_factory.mktemp("dvc-remote")
    assert run(["dvc", "remote", "add", "-d", "storage", str(remote)], root).returncode == 0
    return root


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory):
    """A real `prefect server` on a free loopback port; yields the environment that points at it."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PREFECT_HOME": str(home),
           "PREFECT_API_URL": api}
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with loopback_process(cmd, f"{api}/health", env, None, home / "server.log", ready_timeout=90):
        yield env


@pytest.fixture(scope="module")
def client(prefect_env):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_env["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as prefect_client:
            yield prefect_client


@pytest.fixture(scope="module")
def deployment(prefect_env, client, project):
    """`flows/schedule.py` serving the retraining deployment; stopped before the server."""
    log = open(project / "schedule.log", "w")
    serve = subprocess.Popen(
        [str(BIN / "python"), str(REPO / "flows" / "schedule.py"), "--project-dir", str(project), "--cron", CRON,
         "--push", "--retry-backoff-seconds", "1"],
        cwd=REPO, env=prefect_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while "is being served" not in (project / "schedule.log").read_text():
            assert serve.poll() is None, (project / "schedule.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "flows/schedule.py did not start serving in 90 s"
            time.sleep(0.5)
        yield client.read_deployment_by_name(DEPLOYMENT)
    finally:
        stop_process_group(serve)
        log.close()


def trigger(client, deployment, **parameters):
    """A run of the served deployment, now; waits for its final state."""
    flow_run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters or None)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (flow_run := client.read_flow_run(flow_run.id)).state.is_final():
        assert time.monotonic() < deadline, f"flow run still {flow_run.state.type} after {RUN_TIMEOUT_S} s"
        time.sleep(1)
    return flow_run


def task_states(client, flow_run) -> dict[str, str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    return {r.name: r.state.type.value for r in runs}


def summary(client, flow_run) -> str:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    return next(a.data for a in artifacts if a.key == ARTIFACT_KEY)


# The served deployment's runs tell one story (a full training run costs about a minute, so
# there is one): labels are made and corrupted; the flow fails at validate; the fix is committed
# and a rerun resumes at validate and completes. A worker runs the prefect.yaml deployment on the
# same project: ingest is up to date, so that scheduled run finds nothing new and ends early.


def commit_rollouts(project, lines: list[str]) -> None:
    """Replace the train rollouts and record them as the label stage's output (`dvc commit`)."""
    rollouts = project / "data" / "rollouts" / "train.jsonl"
    rollouts.unlink()  # DVC may have linked the file to its cache: write a new one
    rollouts.write_text("\n".join(lines) + "\n")
    assert run(["dvc", "commit", "--force", "label"], project).returncode == 0


@pytest.fixture(scope="module")
def good_rollouts(project) -> list[str]:
    """The project's problems and labels, made by DVC before any flow run."""
    labeled = run(["dvc", "repro", "label"], project)
    assert labeled.returncode == 0, labeled.stdout[-2000:] + labeled.stderr[-2000:]
    return (project / "data" / "rollouts" / "train.jsonl").read_text().splitlines()


@pytest.fixture(scope="module")
def failed_run(client, deployment, project, good_rollouts):
    """A corrupted label committed as the label stage's output, then a full run."""
    bad = json.loads(good_rollouts[0])
    bad["labels"][0] = "?"
    commit_rollouts(project, [json.dumps(bad), *good_rollouts[1:]])
    return trigger(client, deployment, only_if_new_problems=False), bad["id"]


@pytest.fixture(scope="module")
def fixed_run(client, deployment, project, good_rollouts, failed_run):
    """The fix drops the corrupted solution; a full run again."""
    commit_rollouts(project, good_rollouts[1:])
    return trigger(client, deployment, only_if_new_problems=False)


def test_serve_registers_the_deployment_with_its_cron_schedule(deployment):
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == CRON and schedule.schedule.timezone == "UTC" and schedule.active
    assert deployment.parameters["only_if_new_problems"] is True and deployment.parameters["push"] is True


def test_flow_fails_at_validate_with_the_validation_message(client, failed_run):
    flow_run, bad_id = failed_run
    assert flow_run.state.is_failed()
    message = flow_run.state.message
    assert "stage validate failed" in message and "validation failed" in message
    assert "labels_are_plus_minus" in message and bad_id in message
    states = task_states(client, flow_run)
    assert (states["ingest"], states["label"], states["validate"]) == ("COMPLETED", "COMPLETED", "FAILED")
    assert "tokenize" not in states


def test_rerun_after_the_fix_resumes_at_validate_and_completes(client, project, fixed_run):
    assert fixed_run.state.is_completed(), fixed_run.state.message
    states = task_states(client, fixed_run)
    assert all(states[stage] == "COMPLETED" for stage in stage_names(project)), states
    text = summary(client, fixed_run)
    stages = stage_names(project)
    assert "| check | skipped |" in text and "| ingest | skipped |" in text and "| label | skipped |" in text
    assert all(f"| {stage} | ran |" in text for stage in stages[stages.index("label") + 1:]), text
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert f"| step_auroc | {metrics['step_auroc']:.4f} |" in text
    registry = json.loads((project / "reports/registry.json").read_text())
    assert f"Registered `prm` version {registry['version']}" in text
    assert "Pipeline run `" in text and "/runs/" in text
    # The deployment pushes: the local-folder remote now holds every output.
    remote_status = run(["dvc", "status", "--cloud", "--json"], project)
    assert remote_status.returncode == 0 and json.loads(remote_status.stdout) == {}, remote_status.stdout


@pytest.fixture(scope="module")
def pool_deployment(prefect_env, client):
    """prefect.yaml deployed to a process work pool, as its header says."""
    for cmd in (["work-pool", "create", "prmflow", "--type", "process"], ["--no-prompt", "deploy", "--all"]):
        proc = subprocess.run([str(BIN / "prefect"), *cmd], cwd=REPO, env=prefect_env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return client.read_deployment_by_name("prm-pipeline/pool-nightly-retrain")


def test_prefect_yaml_deploys_the_nightly_schedule_to_the_work_pool(pool_deployment):
    [schedule] = pool_deployment.schedules
    assert schedule.schedule.cron == "0 2 * * *" and pool_deployment.work_pool_name == "prmflow"
    assert pool_deployment.parameters["only_if_new_problems"] is True
    assert pool_deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]


def test_scheduled_run_with_no_new_problems_ends_early(client, prefect_env, pool_deployment, project, good_rollouts):
    """A worker runs the work-pool deployment; ingest is up to date, so the run ends at the check."""
    flow_run = client.create_flow_run_from_deployment(pool_deployment.id, parameters={"project_dir": str(project)})
    worker = subprocess.run([str(BIN / "prefect"), "worker", "start", "--pool", "prmflow", "--run-once"],
                            cwd=project, env=prefect_env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert worker.returncode == 0, worker.stdout[-2000:] + worker.stderr[-2000:]
    flow_run = client.read_flow_run(flow_run.id)
    assert flow_run.state.is_completed(), flow_run.state.message
    assert flow_run.state.message.startswith("No new problems: `dvc status ingest`")
    [only_task] = task_states(client, flow_run)  # the check ran, no stage did
    assert only_task.startswith("new_problem_changes")
    assert "nothing new" in summary(client, flow_run)


def test_new_problems_are_whatever_dvc_status_reports_for_ingest(project, good_rollouts):
    assert new_problem_changes.fn(str(project)) == {}
    params_file = project / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["ingest"]["num_train"] += 1
    params_file.write_text(yaml.safe_dump(params))
    try:
        assert "ingest" in new_problem_changes.fn(str(project))
    finally:
        params_file.write_text(original)

    ingest_deps = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]["ingest"]["deps"]
    incoming_is_a_dep = any(dep.rstrip("/") == "data/incoming" for dep in ingest_deps)
    extra = project / "data" / "incoming" / "extra.jsonl"
    extra.write_text(json.dumps({"problem": "Ava has 2 apples and buys 3 more. How many now?", "answer": "5"}) + "\n")
    try:
        assert ("ingest" in new_problem_changes.fn(str(project))) is incoming_is_a_dep
    finally:
        extra.unlink()
    assert new_problem_changes.fn(str(project)) == {}


def test_only_the_label_stage_retries_with_exponential_backoff():
    label = stage_task("label", retry_backoff_seconds=5)
    assert label.retries == 3 and label.retry_delay_seconds == [5, 10, 20]
    assert stage_task("train", retry_backoff_seconds=5).retries == 0


def test_after_promote_and_rollback_the_report_and_the_summary_say_what_the_registry_holds(client, deployment,
                                                                                          project, fixed_run):
    """`prmflow promote` then `prmflow rollback` leave reports/registry.json on the champion
    the registry holds, and a later all-skipped run's summary says so too (read from the registry), without
    making an empty "pipeline" run in MLflow."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    mlflow_client = MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow/mlflow.db")
    experiment = mlflow_client.get_experiment_by_name("prmflow").experiment_id

    def pipeline_runs() -> int:
        return len(mlflow_client.search_runs([experiment], "tags.`prmflow.stage` = 'pipeline'",
                                             run_view_type=ViewType.ALL))

    def report() -> dict:
        return json.loads((project / "reports/registry.json").read_text())

    champion = report()["champion_version"]
    proc = run(["prmflow", "register", "--force"], project)  # the same model again, forced: kept as the challenger
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    challenger = report()["version"]
    assert not report()["promoted"] and report()["registry"]["champion_version"] == champion
    for cmd in (["promote", str(challenger)], ["rollback"]):
        proc = run(["prmflow", *cmd, "--reason", "test", "--who", "ana"], project)
        assert proc.returncode == 0, proc.stderr[-2000:]
        expected = challenger if cmd[0] == "promote" else champion
        assert report()["champion_version"] == expected == report()["registry"]["champion_version"]
        assert str(mlflow_client.get_model_version_by_alias("prm", "champion").version) == str(expected)

    before = pipeline_runs()
    skipped = trigger(client, deployment, only_if_new_problems=False)
    assert skipped.state.is_completed(), skipped.state.message
    text = summary(client, skipped)
    assert all(f"| {stage} | skipped |" in text for stage in stage_names(project)), text
    assert f"Now `prm@champion` is version {champion} (set by ana" in text
    assert f"history [{champion}]" in text and f"`@challenger` is version {challenger}" in text
    assert "Registered `prm`" not in text  # the register decision of an earlier run is not this run's news
    assert "no MLflow run was made" in text and pipeline_runs() == before
