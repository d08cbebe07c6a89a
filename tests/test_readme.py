"""Every Python block of README.md runs as written, from the root of a tiny project that has what the
README names (`models/prm`, `models/orm`), so the README's code cannot drift from the package."""

import re
import subprocess
import sys

import pytest

from conftest import REPO
from tiny_models import build_tiny_orm, build_tiny_prm

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    build_tiny_prm(root / "models" / "prm", seed=0)
    build_tiny_orm(root / "models" / "orm", seed=1)
    return root


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_a_readme_python_block_runs_as_written(project, index):
    proc = subprocess.run([sys.executable, "-c", BLOCKS[index]], cwd=project, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"README python block {index + 1}:\n{BLOCKS[index]}\n{proc.stderr[-3000:]}"
