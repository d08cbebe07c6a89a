"""`reward_config.json`: what kind of reward model a saved directory holds, and how to read it back.

Written beside the weights by the reward-model classes' `save` and by the train_orm stage; read by
`load_reward_model` and each class's `load`.
"""

from __future__ import annotations

import json
from pathlib import Path

REWARD_CONFIG = "reward_config.json"
DEFAULT_DELIMITER = "\n"  # what separates steps in a solution given as one text


def write_config(path: Path, config: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / REWARD_CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def read_config(path: str | Path, kind: str | None = None) -> dict:
    file = Path(path, REWARD_CONFIG)
    if not file.exists():
        raise FileNotFoundError(f"{file}: no reward-model config (save the model with .save(path) first)")
    config = json.loads(file.read_text())
    if kind is not None and config.get("kind") != kind:
        raise ValueError(f"{file}: kind: expected {kind!r}, got {config.get('kind')!r}")
    return config


def trained_outcome_config(delimiter: str) -> dict:
    return {"kind": "outcome", "mode": "tag", "delimiter": delimiter}


def write_outcome_config(path: str | Path, delimiter: str = DEFAULT_DELIMITER) -> None:
    """The reward_config.json of a trained ORM (the train_orm stage writes it into models/orm)."""
    write_config(Path(path), trained_outcome_config(delimiter))
