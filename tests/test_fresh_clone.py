"""A new user's first run: `make run` in a fresh clone leaves `git status` clean, and its plots open offline.

The repository is cloned (its committed tree) and given the tiny configuration of the end-to-end tests,
committed as that project's own params. A first `make run` plays the developers: its outputs (dvc.lock,
the tracked reports) are committed. That project is cloned again, as a new user would, and `make run`,
exactly as the README writes it, runs there with no data, no models and an empty MLflow registry: every
tracked file must come out byte for byte the same. Both clones share this checkout's venv (a symlink with
an up-to-date install stamp), so make installs nothing. Opt-in (`pytest -m slow`): two tiny pipeline runs
took 14.5 minutes on the 2 shared cores; tests/test_end_to_end.py checks the same rules on its one run.
"""

import json
import os
import re
import subprocess

import pytest
import yaml

from conftest import REPO
from tiny_project import TINY, tool_env

# Less of what the end-to-end tests check already, to keep two runs short: search at two sizes, fewer resamples.
SMALLER = {"search": {"sizes": [1, 4], "num_problems": 6}, "evaluate": {"bootstrap_samples": 100}}
pytestmark = pytest.mark.slow


def sh(cmd: list[str], cwd, timeout: int = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(cwd), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} in {cwd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def clone(source, target) -> None:
    """`git clone`, with the venv of this checkout linked in, its install stamp newer than pyproject.toml."""
    sh(["git", "clone", "-q", str(source), str(target)], target.parent)
    for cmd in (["git", "config", "user.email", "new@user"], ["git", "config", "user.name", "new user"]):
        sh(cmd, target)
    (target / ".venv").symlink_to(REPO / ".venv")
    os.utime(target / "pyproject.toml", (0, 0))  # make's `install` target sees the venv up to date


@pytest.fixture(scope="module")
def new_user(tmp_path_factory):
    base = tmp_path_factory.mktemp("clones")
    developers, user = base / "developers", base / "user"
    clone(REPO, developers)
    params = yaml.safe_load((developers / "params.yaml").read_text())
    for section, values in (TINY | SMALLER).items():
        params[section].update(values)
    (developers / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["make", "run"], developers)
    sh(["git", "add", "-A"], developers)
    sh(["git", "commit", "-qm", "the developers' run on the tiny configuration"], developers)
    clone(developers, user)
    output = sh(["make", "run"], user)
    return user, output


def test_make_run_in_a_fresh_clone_leaves_git_status_clean(new_user):
    user, output = new_user
    assert "Running stage 'register'" in output and "prmflow: prm@champion is version" in output
    status = sh(["git", "status", "--porcelain", "--untracked-files=all"], user)
    assert status == "", f"make run changed or left these in a fresh clone:\n{status}"
    assert str(json.loads((user / "reports" / "registry.json").read_text())["version"]) == "1"  # its own registry


def test_make_run_shows_progress_bars_not_trainer_dicts(new_user):
    _, output = new_user
    assert "{'loss':" not in output and "'learning_rate':" not in output
    assert re.search(r"train: +\d+%.*loss=", output) or re.search(r"train: .*\d+/\d+", output), output[-2000:]
    assert "Loading weights" not in output


def test_dvc_plots_show_renders_offline(new_user):
    user, _ = new_user
    sh(["dvc", "plots", "show"], user)
    page = (user / "dvc_plots" / "index.html").read_text()
    assert "vegaEmbed('#" in page and "window.vegaEmbed" in page  # the plots, and the library inline
    assert not re.search(r"<script[^>]+src=", page), "the page loads a script from elsewhere"
    assert sh(["git", "status", "--porcelain", "--untracked-files=all"], user) == ""  # dvc_plots/ is ignored
