"""What a new user meets first: the trainer's progress bar, the CLI's help, one-metric-a-line output, and
the project's settings (offline, no telemetry, quiet libraries) wherever a command is typed in the checkout."""

import os
import sys
import subprocess

import pytest

from conftest import BIN, REPO
from prmflow import cli
from prmflow.training.progress import postfix, tokens_per_second


def test_the_bar_shows_the_loss_and_tokens_per_second():
    assert postfix({"loss": 0.123456, "learning_rate": 1e-3}, 31657.2) == {"loss": "0.1235", "tok/s": "31,657"}
    assert postfix({"train_runtime": 3.0}, 0.0) == {"tok/s": "0"}  # the final summary log has no loss


def test_tokens_per_second_between_two_readings():
    assert tokens_per_second(100, 1100, 4.0) == 250.0
    assert tokens_per_second(100, 100, 0.0) == 0.0


def test_metric_lines_one_metric_a_line_in_key_order():
    metrics = {"step_auroc": 0.745123, "first_error_f1": 0.28, "solutions": 400, "step_auroc_ci_low": 0.7}
    assert cli.metric_lines(metrics, []) == ["first_error_f1     0.28", "solutions          400",
                                             "step_auroc         0.7451", "step_auroc_ci_low  0.7"]
    assert cli.metric_lines(metrics, ["auroc"]) == ["step_auroc         0.7451", "step_auroc_ci_low  0.7"]
    assert cli.metric_lines(metrics, ["nothing"]) == []


def test_prmflow_metrics_prints_a_file(tmp_path):
    (tmp_path / "m.json").write_text('{"b": 2, "a": 0.5}')
    proc = subprocess.run([str(BIN / "prmflow"), "metrics", "--file", str(tmp_path / "m.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "a  0.5\nb  2\n", proc.stderr


@pytest.mark.parametrize("verbose", ["", "1"])
def test_prmflow_sets_the_project_environment(monkeypatch, verbose):
    for key in (*cli.PROJECT_ENV, *cli.QUIET_ENV):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PRMFLOW_VERBOSE", verbose)
    monkeypatch.setenv("DO_NOT_TRACK", "0")  # a value the user set wins
    cli._project_environment()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert os.environ["DO_NOT_TRACK"] == "0"
    quiet = {key: os.environ.get(key) for key in cli.QUIET_ENV}
    assert quiet == (cli.QUIET_ENV if not verbose else dict.fromkeys(cli.QUIET_ENV))


def help_text(*args: str) -> str:
    out = subprocess.run([str(BIN / "prmflow"), *args, "--help"], capture_output=True, text=True, timeout=120)
    return " ".join(out.stdout.split())  # argparse wraps lines


def test_every_subcommand_and_argument_has_help():
    out = help_text()
    for command in cli.COMMANDS:
        assert command.help[:40] in out, command.name
    score = help_text("score")
    assert "one {problem, steps | text, id?} object per line" in score and "how the step scores" in score
    assert "the registered model version to serve" in help_text("promote")


def test_the_checkout_settings_hold_outside_make():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DVC_", "DO_NOT_TRACK"))}
    prefect = subprocess.run([str(BIN / "prefect"), "config", "view", "--show-sources"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    assert "PREFECT_SERVER_ANALYTICS_ENABLED='False' (from prefect.toml)" in prefect.stdout, prefect.stdout
    dvc = subprocess.run([str(BIN / "dvc"), "config", "core.analytics"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert dvc.stdout.strip() == "false"


def test_the_best_of_n_plot_bands_are_the_reported_intervals():
    from prmflow.evaluation.report import interval_bands

    metrics = {f"best_of_n_prm_min_at_{n}_ci_{side}": n / 10 + (0.1 if side == "high" else 0)
               for n in (1, 2) for side in ("low", "high")}
    metrics |= {"best_of_n_majority_at_1_ci_low": 0.1, "best_of_n_majority_at_1_ci_high": 0.3}  # N = 2 missing
    assert interval_bands(metrics, [1, 2]) == {"prm_min": ([0.1, 0.2], [0.2, 0.30000000000000004])}
    assert interval_bands(metrics, []) == {}


def test_a_failing_stage_reports_its_own_exit_status_not_dvcs():
    sys.path.insert(0, str(REPO / "flows"))
    from pipeline import stage_exit_code

    failed = subprocess.CompletedProcess(["dvc"], 255, "", "ERROR: failed to reproduce 'validate': failed to run: "
                                                          "prmflow validate, exited with 1\n")
    assert stage_exit_code(failed) == 1
    assert stage_exit_code(subprocess.CompletedProcess(["dvc"], 255, "", "ERROR: unexpected error\n")) == 255
