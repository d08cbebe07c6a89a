"""The served model through real `mlflow models serve` processes on loopback.

Two small real PRMs (random weights, two seeds) are logged exactly as the register stage logs
them, into a sqlite store under tmp. One server answers the contract, every bad-request case,
truncation and a burst of malformed requests; `prmflow score` must print what it answers.
Then a rollback must change which version a restarted server serves, and a combined model (a PRM
and a trained ORM, logged as register logs `model_kind: combined`) must answer the outcome score and
the weighted score computed in process.
"""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from prmflow.serving.model_server import model_server
from tiny_models import build_tiny_orm, build_tiny_prm, log_version, server_env, sharpen_label_rows, tracking_store

LIMITS = {"max_solutions_per_request": 4, "max_steps_per_solution": 12}
PROBLEM = "Ava has 3 apples. Then Ava buys 2 more apples. How many apples does Ava have at the end?"
SOLUTIONS = [
    {"problem": PROBLEM, "steps": ["Ava has 3 + 2 = <<3+2=5>>5 apples."]},
    {"problem": PROBLEM, "steps": ["Ava buys 2 apples.", "Ava has 3 + 2 = <<3+2=6>>6 apples."]},
    {"problem": "Tom has 7 pens and gives away 4.", "steps": ["7 - 4 = <<7-4=3>>3", "Tom has 3 pens.", "3"]},
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    with tracking_store(root) as uri:
        versions = {seed: log_version(build_tiny_prm(root / f"seed{seed}", seed), **LIMITS) for seed in (0, 1)}
        yield {"root": root, "uri": uri, "versions": versions}


@pytest.fixture(scope="module")
def server(store):
    with model_server(f"models:/prm/{store['versions'][0]}", server_env(store["uri"]), store["root"],
                      store["root"] / "serve.log") as url:
        yield url


def invoke(url: str, payload) -> requests.Response:
    return requests.post(f"{url}/invocations", json=payload, timeout=60)


def test_contract_and_padded_batch_equal_one_at_a_time(server):
    response = invoke(server, {"inputs": SOLUTIONS, "params": {"aggregation": "min"}})
    assert response.status_code == 200, response.text
    batched = response.json()["predictions"]
    assert [p["scored_steps"] for p in batched] == [len(s["steps"]) for s in SOLUTIONS]
    for solution, prediction in zip(SOLUTIONS, batched):
        scores = prediction["step_scores"]
        assert all(0 < s < 1 for s in scores) and prediction["score"] == pytest.approx(min(scores))
        below = [i for i, s in enumerate(scores) if s < 0.5]
        assert prediction["first_error"] == (below[0] if below else -1)
        alone = invoke(server, {"inputs": [solution]}).json()["predictions"][0]  # default aggregation: min
        assert alone["step_scores"] == pytest.approx(scores, abs=1e-5)  # right padding changes nothing
    for how, expected in {"prod": lambda s: s[0] * s[1], "last": lambda s: s[-1], "mean": lambda s: sum(s) / 2}.items():
        prediction = invoke(server, {"inputs": SOLUTIONS[1:2], "params": {"aggregation": how}}).json()["predictions"][0]
        assert prediction["score"] == pytest.approx(expected(prediction["step_scores"]))


def test_long_solution_is_truncated_by_whole_steps(server):
    steps = [f"Ava counts {i} + 1 = <<{i}+1={i + 1}>>{i + 1} apples." for i in range(12)]
    prediction = invoke(server, {"inputs": [{"problem": PROBLEM, "steps": steps}]}).json()["predictions"][0]
    kept = prediction["scored_steps"]
    assert 0 < kept < len(steps) and len(prediction["step_scores"]) == kept
    prefix = invoke(server, {"inputs": [{"problem": PROBLEM, "steps": steps[:kept]}]}).json()["predictions"][0]
    assert prefix["scored_steps"] == kept and prefix["step_scores"] == pytest.approx(prediction["step_scores"], abs=1e-5)


@pytest.mark.parametrize("payload, message", [
    ({"inputs": [{"steps": ["a"]}]}, "problem"),
    ({"inputs": [{"problem": "p", "steps": "not a list"}]}, "steps"),
    ({"inputs": [{"problem": "p", "steps": [1, 2]}]}, "steps"),
    ({"inputs": [{"problem": "p", "steps": []}]}, "inputs[0].steps: must be a non-empty list"),
    ({"inputs": [{"problem": " ", "steps": ["a"]}]}, "inputs[0].problem: must be a non-empty string"),
    ({"inputs": [{"problem": "p", "steps": ["a", " "]}]}, "inputs[0].steps[1]: empty step"),
    ({"inputs": [{"problem": "p", "steps": ["a"]}], "params": {"aggregation": "max"}}, "params.aggregation"),
    ({"inputs": [{"problem": "p", "steps": ["a"]}] * 5}, "inputs: 5 solutions, more than the limit of 4"),
    ({"inputs": [{"problem": "p", "steps": ["a"] * 13}]}, "inputs[0].steps: 13 steps, more than the limit of 12"),
    ({"inputs": [{"problem": "p " * 200, "steps": ["a"]}]}, "inputs[0]: the problem and first step do not fit"),
])
def test_bad_request_is_a_400_that_names_the_field(server, payload, message):
    response = invoke(server, payload)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]


def test_server_keeps_answering_after_a_burst_of_malformed_requests(server):
    bad = [b"{not json", b"[]", b'{"inputs": 3}', b'{"inputs": [{"problem": "p", "steps": [""]}]}'] * 10
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda body: requests.post(f"{server}/invocations", data=body, timeout=60,
                                                         headers={"Content-Type": "application/json"}).status_code,
                              bad))
    assert all(400 <= code < 500 for code in codes), codes
    assert invoke(server, {"inputs": SOLUTIONS[:1]}).status_code == 200


def test_score_command_prints_what_the_server_answers(server, store, tmp_path, capsys):
    from prmflow.cli import main

    path = tmp_path / "solutions.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in SOLUTIONS * 2))  # 6 > 4: scored in two requests
    main(["score", str(path), "--model", f"models:/prm/{store['versions'][0]}", "--aggregation", "mean"])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    served = invoke(server, {"inputs": SOLUTIONS, "params": {"aggregation": "mean"}}).json()["predictions"]
    assert printed == served * 2


def test_rollback_changes_what_a_restarted_server_serves(store):
    from mlflow import MlflowClient

    from prmflow.serving.registry import promote, rollback

    client, first, second = MlflowClient(), store["versions"][0], store["versions"][1]
    promote(client, "prm", first, "champion", "test", "first champion")
    promote(client, "prm", second, "champion", "test", "better on paper")

    def champion_scores() -> list[float]:
        with model_server("models:/prm@champion", server_env(store["uri"]), store["root"],
                          store["root"] / "champion.log") as url:
            return invoke(url, {"inputs": SOLUTIONS[2:]}).json()["predictions"][0]["step_scores"]

    served_second = champion_scores()
    assert rollback(client, "prm", "champion", "test", "bad outputs") == first
    served_first = champion_scores()
    assert served_first != served_second
    from prmflow.serving.scorer import Solution, load_scorer

    expected = [load_scorer(f"models:/prm/{v}").score([Solution(**SOLUTIONS[2])])[0].step_scores
                for v in (first, second)]
    assert served_first == pytest.approx(expected[0], abs=1e-6)
    assert served_second == pytest.approx(expected[1], abs=1e-6)


def test_combined_model_serves_the_outcome_score_and_the_weighted_score(store, server, tmp_path, capsys):
    from prmflow.cli import main
    from prmflow.model.aggregation import aggregate, predicted_first_error
    from prmflow.model.modeling import ProcessRewardModel
    from prmflow.model.rewards import TrainedOutcomeRewardModel

    root = store["root"]
    prm_dir, orm_dir = root / "seed0", build_tiny_orm(root / "orm", seed=2)
    version = log_version(prm_dir, "prm-combined", orm_dir, process_weight=0.6, outcome_weight=0.4, **LIMITS)
    prm, orm = ProcessRewardModel(prm_dir), TrainedOutcomeRewardModel(orm_dir)
    plain = invoke(server, {"inputs": SOLUTIONS[:1]}).json()["predictions"][0]
    assert set(plain) == {"step_scores", "score", "first_error", "scored_steps"}  # the PRM alone: no outcome
    with model_server(f"models:/prm-combined/{version}", server_env(store["uri"]), root,
                      root / "combined.log") as url:
        served = {}
        for how in ("min", "mean"):
            response = invoke(url, {"inputs": SOLUTIONS, "params": {"aggregation": how}})
            assert response.status_code == 200, response.text
            served[how] = response.json()["predictions"]
            for solution, prediction in zip(SOLUTIONS, served[how]):
                steps = prm.get_rewards_for_steps(solution["problem"], solution["steps"])
                outcome = orm.get_reward_for_problem_solution(solution["problem"], solution["steps"])
                assert prediction["step_scores"] == pytest.approx(steps, abs=1e-5)  # the PRM's, as before
                assert prediction["first_error"] == predicted_first_error(prediction["step_scores"], 0.5)
                assert prediction["outcome_score"] == pytest.approx(outcome, abs=1e-5)
                assert abs(prediction["outcome_score"] - steps[-1]) > 1e-4  # another model than the PRM
                assert prediction["score"] == pytest.approx(0.6 * aggregate(steps, how) + 0.4 * outcome, abs=1e-5)
        bad = invoke(url, {"inputs": [{"problem": "p", "steps": ["a", " "]}]})
        assert bad.status_code == 400 and "inputs[0].steps[1]: empty step" in bad.json()["message"]
    path = tmp_path / "solutions.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in SOLUTIONS))
    main(["score", str(path), "--model", f"models:/prm-combined/{version}", "--aggregation", "mean"])
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == served["mean"]


def test_a_server_with_the_bfloat16_override_scores_within_0_05_of_float32(store):
    """Scores spread over (0, 1) (sharpened label rows), so the tolerance is not met by scores near 0.5."""
    from prmflow.model.modeling import ProcessRewardModel

    directory = sharpen_label_rows(build_tiny_prm(store["root"] / "sharp", seed=3))
    version = log_version(directory, name="prm-sharp", **LIMITS)
    pairs = [(s["problem"], s["steps"]) for s in SOLUTIONS]
    env = server_env(store["uri"]) | {"PRMFLOW_DTYPE": "bfloat16"}  # the model was stored with dtype: auto
    with model_server(f"models:/prm-sharp/{version}", env, store["root"], store["root"] / "bf16.log") as url:
        response = invoke(url, {"inputs": SOLUTIONS})
    assert response.status_code == 200, response.text
    served = [s for p in response.json()["predictions"] for s in p["step_scores"]]
    float32 = ProcessRewardModel(directory, "cpu", "float32").score_batch(pairs)
    expected = [s for steps in float32 for s in steps]
    assert max(expected) - min(expected) > 0.3 and served != expected  # bfloat16 really served, spread scores
    assert max(abs(a - b) for a, b in zip(served, expected)) <= 0.05


def test_the_served_model_loads_in_its_stored_placement_unless_the_environment_overrides_it(store, monkeypatch):
    import mlflow
    import torch

    from prmflow.serving.scorer import load_scorer

    uri = f"models:/prm/{store['versions'][0]}"
    stored = mlflow.models.get_model_info(uri).flavors["python_function"]["config"]
    assert (stored["device"], stored["dtype"]) == ("auto", "auto")
    assert load_scorer(uri).prm.model.dtype == (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    monkeypatch.setenv("PRMFLOW_DEVICE", "cpu")
    monkeypatch.setenv("PRMFLOW_DTYPE", "bfloat16")
    scorer = load_scorer(uri)
    assert scorer.prm.model.dtype == torch.bfloat16 and scorer.prm.device.type == "cpu"
    assert (scorer.config.device, scorer.config.dtype) == ("cpu", "bfloat16")
    monkeypatch.setenv("PRMFLOW_DTYPE", "float8")
    with pytest.raises(ValueError, match="dtype: 'float8' is not one of"):
        load_scorer(uri)


def test_the_registered_model_carries_the_step_tag_and_label_ids_of_its_tokenizer(store):
    """What `vllm serve` needs to score with STEP pooling (README): checked against the tokenizer itself."""
    import mlflow
    from transformers import AutoTokenizer

    metadata = mlflow.models.get_model_info(f"models:/prm/{store['versions'][0]}").metadata
    tokenizer = AutoTokenizer.from_pretrained(store["root"] / "seed0")
    step_tag_id = int(metadata["step_tag_id"])
    assert tokenizer.encode("Step 1: a<step>", add_special_tokens=False)[-1] == step_tag_id
    assert tokenizer.convert_ids_to_tokens(step_tag_id) == "<step>"
    assert tokenizer.convert_ids_to_tokens(int(metadata["positive_token_id"])) == "+"
    assert tokenizer.convert_ids_to_tokens(int(metadata["negative_token_id"])) == "-"
    assert json.loads(metadata["vllm_pooler_config"]) == {
        "pooling_type": "STEP", "step_tag_id": step_tag_id,
        "returned_token_ids": [int(metadata["positive_token_id"]), int(metadata["negative_token_id"])]}
