"""Deprecated: `prmflow.model` was split (prmflow 0.2) into `prmflow.scoring` (reading P(+): tokenization, formats,
modeling, rewards), `prmflow.training` (the tokenize, train and train_orm stages) and `prmflow.labeling` (pairs).

`import prmflow.model.rewards` and the others keep working for one release: each old name is the new module's
contents under the old name, with a DeprecationWarning naming the new one. See docs/changelog.md.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {"aggregation": "prmflow.scoring.aggregation", "formats": "prmflow.scoring.formats",
         "modeling": "prmflow.scoring.modeling", "public_prms": "prmflow.scoring.public_prms",
         "reward_config": "prmflow.scoring.reward_config", "rewards": "prmflow.scoring.rewards",
         "tokenization": "prmflow.scoring.tokenization", "zero_shot": "prmflow.scoring.zero_shot",
         "pairs": "prmflow.labeling.pairs", "progress": "prmflow.training.progress",
         "tokenize_stage": "prmflow.training.tokenize_stage", "train": "prmflow.training.train",
         "train_orm": "prmflow.training.train_orm"}

warnings.warn("prmflow.model is deprecated and will be removed in the next release: its modules moved to "
              "prmflow.scoring, prmflow.training and prmflow.labeling (e.g. prmflow.model.rewards -> "
              "prmflow.scoring.rewards; the reward classes: from prmflow import ProcessRewardModel)",
              DeprecationWarning, stacklevel=2)


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `prmflow.model.<old>` and fills it with the moved module's names (the same objects)."""

    def find_spec(self, fullname, path, target=None):
        package, _, old = fullname.rpartition(".")
        return importlib.util.spec_from_loader(fullname, self) if package == __name__ and old in MOVED else None

    def exec_module(self, module) -> None:
        new = MOVED[module.__name__.rpartition(".")[2]]
        warnings.warn(f"{module.__name__} is deprecated and will be removed in the next release: use {new}",
                      DeprecationWarning, stacklevel=2)
        module.__dict__.update({k: v for k, v in vars(importlib.import_module(new)).items()
                                if not k.startswith("__")})


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
