"""The linter's rules ([tool.ruff] in pyproject.toml) hold over every Python file of the project."""

import subprocess
import sys

from conftest import REPO

FOLDERS = ("src", "tests", "bench", "scripts", "flows")


def test_ruff_finds_nothing():
    """ruff comes with the dev extra (`make test` installs it): a missing ruff fails here rather than skipping."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *FOLDERS], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
