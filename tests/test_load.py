"""`prmflow.load`, the one door to a PRM: each supported format, a registered model, the served endpoint and the
public reward API give the server's step scores and predictions."""

import pytest

import prmflow

from tiny_models import CHAT_TEMPLATE, PLAIN_CORPUS, build_public_prm, build_tiny_prm

PAIRS = [("Ava has 3 apples and buys 2 more.", ["3 + 2 = 5", "5 - 2 = 3", "The answer is 3."]),
         ("Ava has 10 apples and buys 7 more.", ["10 + 7 = 17"])]
# format -> (how a tiny checkpoint of it is built, whether load tells the format from its files)
FORMATS = {
    "prmflow": (lambda d: build_tiny_prm(d, seed=0), True),
    "trl": (lambda d: build_public_prm(d, "gpt2", head="token_classification"), True),
    "math_shepherd": (lambda d: build_public_prm(d, "gpt2"), True),
    "chat": (lambda d: build_public_prm(d, "gpt2", chat_template=CHAT_TEMPLATE, corpus=PLAIN_CORPUS), False),
    "zero_shot": (lambda d: build_public_prm(d, "gpt2", corpus=PLAIN_CORPUS), False),
}


def server_scorer(directory, prm_format: str):
    """What `mlflow models serve` runs for a model of this format (PRMPyfunc.load_context's Scorer)."""
    from prmflow.config import Params
    from prmflow.devices import Placement
    from prmflow.scoring.public_prms import load_prm
    from prmflow.serving.scorer import Scorer, ServingConfig

    config = ServingConfig.from_params(Params(), threshold=0.5, prm_format=prm_format)
    return Scorer(load_prm(directory, prm_format, Placement()), config)


def assert_same(ours, theirs) -> None:
    """Equal predictions, step scores to float rounding (the server batches by tokens, load by solutions)."""
    assert len(ours) == len(theirs) == len(PAIRS)
    for a, b in zip(ours, theirs):
        a, b = (p if isinstance(p, dict) else p.model_dump() for p in (a, b))
        assert a["scored_steps"] > 0 and a["step_scores"] == pytest.approx(b["step_scores"], abs=1e-5)
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert {k: v for k, v in a.items() if k not in ("step_scores", "score")} == \
            {k: v for k, v in b.items() if k not in ("step_scores", "score")}


@pytest.mark.parametrize("prm_format", FORMATS)
def test_each_format_loads_through_the_public_api_and_scores_as_the_server(prm_format, tmp_path):
    from prmflow.serving.requests import Solution

    build, detected = FORMATS[prm_format]
    directory = build(tmp_path / prm_format)
    prm = prmflow.load(directory, format=None if detected else prm_format, threshold=0.5)
    server = server_scorer(directory, prm_format)
    assert_same(prm.score(PAIRS), server.score([Solution(problem=p, steps=s) for p, s in PAIRS]))
    if detected:  # the reward API loads every folder the server can
        reward_model = prmflow.load_reward_model(directory)
        assert reward_model.get_rewards_for_steps(*PAIRS[0]) == pytest.approx(prm.score(PAIRS)[0].step_scores,
                                                                              abs=1e-5)


def test_a_folder_its_registered_model_and_its_server_give_the_same_predictions(served_prm):
    import requests

    registered = prmflow.load(served_prm["uri"])
    folder = prmflow.load(served_prm["model_dir"], threshold=registered.threshold)
    endpoint = prmflow.load(served_prm["url"])
    served = requests.post(f"{served_prm['url']}/invocations", timeout=120,
                           json={"inputs": [{"problem": p, "steps": s} for p, s in PAIRS]}).json()["predictions"]
    for prm in (folder, registered, endpoint):
        assert_same(prm.score(PAIRS), served)
    from_api = prmflow.load_reward_model(served_prm["url"])
    assert from_api.get_rewards_for_steps(*PAIRS[0]) == pytest.approx(served[0]["step_scores"], abs=1e-5)
    assert from_api.get_reward(PAIRS[0][0], "\n".join(PAIRS[0][1])) == pytest.approx(served[0]["score"], abs=1e-5)


def test_every_path_answers_unscorable_candidates_as_the_server_and_scores_their_batch_mates(served_prm):
    """A batch holding candidates the server answers on their own (an empty problem, no step, an empty step, a lone
    surrogate): the folder, its registered model and the served PRM's client each give every one of them the
    server's answer, field by field (the client without sending it), and their batch-mates their scores."""
    import requests

    from load_check import UNSCORABLE_PAIRS

    batch = [pair for mixed in zip(PAIRS * 3, UNSCORABLE_PAIRS) for pair in mixed]
    served = requests.post(f"{served_prm['url']}/invocations", timeout=120,
                           json={"inputs": [{"problem": p, "steps": s} for p, s in batch]}).json()["predictions"]
    assert all(p["reason"] and p["score"] is None for p in served[1::2])
    registered = prmflow.load(served_prm["uri"])
    folder = prmflow.load(served_prm["model_dir"], threshold=registered.threshold)
    for prm in (folder, registered, prmflow.load(served_prm["url"])):
        ours = prm.score(batch)
        assert [p.model_dump() for p in ours[1::2]] == served[1::2], prm.description
        assert_same(ours[0:4:2], served[0:4:2])


def test_a_pooling_endpoint_needs_the_checkpoint_that_encodes_for_it():
    with pytest.raises(ValueError, match="pass checkpoint="):
        prmflow.load("http://127.0.0.1:8000/pooling")
