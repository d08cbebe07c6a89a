"""Stage `train_orm`: the outcome reward model, trained by the train stage's code (train.py).

    prmflow train_orm         # reads params.yaml: base, model, train, train_orm

Same model, tags and loss as the PRM; every step tag's target is the rollout's final-answer
correctness. Writes models/orm/ and reports/train_orm.json (see train.py).
"""

from __future__ import annotations

from prmflow.config import Params


def main(params: Params) -> None:
    from prmflow.training.train import main as train_main

    train_main(params, kind="outcome")
