import os
import random
import re
import sys
from pathlib import Path

import pytest

# Offline and quiet before anything imports transformers, mlflow or prefect (they read these at import).
for key, value in {"HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1",
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "OMP_NUM_THREADS": "1",
                   "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(key, value)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's bin: prmflow, dvc, mlflow


@pytest.fixture
def rng():
    return random.Random(0)


@pytest.fixture(scope="session")
def labeled_rows():
    """A small labeled dataset from the real generator and simulated policy."""
    from prmflow.config import IngestParams, LabelParams
    from prmflow.data.ingest import build_splits
    from prmflow.labeling.label import rollout_rows

    splits = build_splits(IngestParams(num_train=40, num_test=10), seed=7).splits
    return rollout_rows(splits["train"], LabelParams(trajectories_per_problem=3, completions_per_step=4), seed=7)


@pytest.fixture(scope="session")
def served_prm(tmp_path_factory, labeled_rows):
    """A PRM trained for real on `labeled_rows` (as the train stage trains), logged and registered as the register
    stage does, behind a real `mlflow models serve` on loopback: {"url", "model_dir", "uri"}."""
    from tiny_models import log_version, server_env, tracking_store, train_tiny_model

    from model_server import model_server

    root = tmp_path_factory.mktemp("served_prm")
    model_dir = train_tiny_model(labeled_rows, root / "prm")["dir"]
    with tracking_store(root) as uri:
        version = log_version(model_dir)
        with model_server(f"models:/prm/{version}", server_env(uri), root, root / "serve.log") as url:
            yield {"url": url, "model_dir": model_dir, "uri": f"models:/prm/{version}"}


def docs_block(marker: str, language: str = "python", page: str = "rl-trainers.md") -> str:
    """The one `language` block of docs/`page` that mentions `marker`: tests run the docs' snippets as written."""
    text = (REPO / "docs" / page).read_text()
    blocks = [b for b in re.findall(rf"```{language}\n(.*?)```", text, re.S) if marker in b]
    assert len(blocks) == 1, f"{len(blocks)} {language} blocks of docs/{page} mention {marker!r}"
    return blocks[0]
