"""Small real PRMs and a throwaway MLflow store, for the registry and serving tests.

The models are untrained (random weights from a seed): what these tests check is packaging,
the registry and the server, and two seeds give two versions whose scores differ.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from conftest import BIN


def build_tiny_prm(directory: Path, seed: int, max_length: int = 192) -> Path:
    import torch

    from prmflow.config import ModelParams
    from prmflow.modeling import build_model, prepare_tokenizer, prompt_format, save_prompt_format

    # A fixed corpus keeps the tokenizer (and so these tests) independent of the data generator.
    corpus = [f"Step {a}: {name} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples, then gives away {b} - {a}."
              for a in range(1, 10) for b in range(1, 10) for name in ("Ava", "Tom")]
    params = ModelParams(vocab_size=300, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                         max_length=max_length)
    tokenizer = prepare_tokenizer(params, corpus)
    torch.manual_seed(seed)
    model = build_model(params, tokenizer)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    save_prompt_format(prompt_format(tokenizer, params), directory)
    return directory


@contextlib.contextmanager
def tracking_store(root: Path) -> Iterator[str]:
    """A sqlite tracking store under `root`, made current (in process and for child processes)."""
    import mlflow

    uri = f"sqlite:///{root}/mlflow.db"
    previous_uri, previous_env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    # An explicit artifact root: the default would write under the current directory.
    experiment_id = mlflow.create_experiment("prmflow-test", artifact_location=(root / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment_id)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(previous_uri)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def log_version(model_dir: Path, name: str = "prm", **serving) -> str:
    """Log `model_dir` exactly as the register stage does and register it; return the version."""
    import dataclasses

    import mlflow

    from prmflow.register import log_prm
    from prmflow.serving import ServingConfig

    with mlflow.start_run():
        info = log_prm(model_dir, dataclasses.asdict(ServingConfig(**serving)), name)
    return str(info.registered_model_version)


def server_env(tracking_uri: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MLFLOW_TRACKING_URI": tracking_uri}
