"""The promotion gate's paired bootstrap on really trained tiny PRMs: promotion follows a real improvement
on held-out problems, never noise, whatever the bootstrap seed."""

from pathlib import Path

import pytest

from prmflow.config import BaseParams, EvaluateParams, Params, RegisterParams
from prmflow.serving.register import gate_comparison
from prmflow.serving.registry import gate

from tiny_models import train_tiny_model

SEEDS = (0, 1, 2, 3, 4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Held-out rows and the step scores of one tiny PRM trained 0.2 epochs and one trained 8, on the same
    generator and simulated-policy data (every slip an operation slip, so that the words of a step show it:
    "loses" with a "+", which a one-layer model can learn in seconds; arithmetic slips it cannot; and no
    per-problem misconceptions, whose skipped steps and misread quantities no word shows)."""
    from prmflow.config import IngestParams, LabelParams
    from prmflow.data.ingest import build_splits
    from prmflow.labeling.label import rollout_rows
    from prmflow.scoring.modeling import StepTagScorer

    splits = build_splits(IngestParams(num_train=100, num_test=100, max_steps=3), seed=7).splits
    policy = LabelParams(trajectories_per_problem=4, completions_per_step=4, slip_rate=0.3,
                         operation_slip_fraction=1.0, misconception_rate=0.0)
    train, heldout = rollout_rows(splits["train"], policy, seed=7), rollout_rows(splits["test"], policy, seed=8)
    scores = {}
    for epochs in (0.2, 8.0):
        directory = tmp_path_factory.mktemp(f"prm-{epochs}")
        train_tiny_model(train, Path(directory), epochs=epochs)
        scores[epochs] = StepTagScorer(directory).score_batch([(r["problem"], r["steps"]) for r in heldout])
    return heldout, scores[0.2], scores[8.0]


def decide(rows, challenger, champion, metric: str, seed: int):
    params = Params(base=BaseParams(seed=seed), evaluate=EvaluateParams(),
                    register=RegisterParams(gate_metric=metric, promotion_margin=0.01))
    compared = gate_comparison(rows, challenger, champion, params)
    return gate((compared["difference"], compared["ci_low"], compared["ci_high"]), 0.01, metric), compared


@pytest.mark.parametrize("metric", ["first_error_f1", "step_auroc"])
def test_an_identical_retrain_is_never_promoted(trained, metric):
    rows, _, longer = trained
    for seed in SEEDS:
        decision, compared = decide(rows, longer, [list(s) for s in longer], metric, seed)
        assert not decision.promote and (compared["difference"], compared["ci_low"], compared["ci_high"]) == (0, 0, 0)


def test_the_longer_trained_model_is_promoted_and_the_shorter_one_is_not(trained):
    rows, shorter, longer = trained
    for seed in SEEDS:
        decision, compared = decide(rows, longer, shorter, "step_auroc", seed)
        assert decision.promote, compared
        assert compared["ci_low"] > 0.01 and compared["challenger"] > compared["champion"] + 0.1
        decision, compared = decide(rows, shorter, longer, "step_auroc", seed)
        assert not decision.promote and compared["ci_high"] < 0, compared


def test_a_first_error_f1_that_noise_could_make_promotes_neither_way(trained):
    """On these ~100 problems the two first-error F1s differ by less than their noise: neither direction passes."""
    rows, shorter, longer = trained
    for seed in SEEDS:
        for challenger, champion in ((longer, shorter), (shorter, longer)):
            decision, compared = decide(rows, challenger, champion, "first_error_f1", seed)
            assert not decision.promote and compared["ci_low"] < 0 < compared["ci_high"], compared
