"""Every Python block of README.md and of the docs pages runs as written, from the root of a tiny project
that has what they name (`models/prm`, `models/orm`), so the documented code cannot drift from the package.
(The README's commands are run by tests/test_fresh_clone.py.)"""

import re
import subprocess
import sys

import pytest

from conftest import REPO
from tiny_models import build_tiny_orm, build_tiny_prm

# Pages whose blocks need a live server or a trainer: their own tests run every block as written.
# (docs/serving.md's vLLM block is fenced `py`: tests/test_vllm_serving.py runs it against a real vLLM server.)
RUN_ELSEWHERE = {"rl-trainers.md": "tests/test_integrations.py, tests/test_integrations_trl.py"}
PAGES = [REPO / "README.md", *sorted(p for p in (REPO / "docs").glob("*.md") if p.name not in RUN_ELSEWHERE)]
BLOCKS = [(page.name, block) for page in PAGES
          for block in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    build_tiny_prm(root / "models" / "prm", seed=0)
    build_tiny_orm(root / "models" / "orm", seed=1)
    return root


def test_the_docs_have_python_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_a_documented_python_block_runs_as_written(project, index):
    page, block = BLOCKS[index]
    proc = subprocess.run([sys.executable, "-c", block], cwd=project, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{page}, python block:\n{block}\n{proc.stderr[-3000:]}"
