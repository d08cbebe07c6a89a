"""The linter's rules ([tool.ruff] in pyproject.toml) hold over every Python file of the project."""

import shutil
import subprocess
import sys

import pytest

from conftest import REPO

FOLDERS = ("src", "tests", "bench", "scripts", "flows")


def ruff() -> list[str] | None:
    """The ruff of this environment (the dev extra installs it), as a command."""
    if shutil.which("ruff"):
        return ["ruff"]
    found = subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True)
    return [sys.executable, "-m", "ruff"] if found.returncode == 0 else None


@pytest.mark.skipif(ruff() is None, reason="ruff is not installed: pip install -e '.[dev]'")
def test_ruff_finds_nothing():
    result = subprocess.run([*ruff(), "check", "--no-cache", *FOLDERS], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
