"""The served model through real `mlflow models serve` processes on loopback.

Two small real PRMs (random weights, two seeds) are logged exactly as the register stage logs
them, into a sqlite store under tmp. One server answers the contract, per-candidate isolation (a
degenerate candidate in a batch of 64), long traces and `text`, every bad-request case with a short
body, and a burst of malformed requests; `prmflow score` must print what it answers, line by line.
Then a rollback must change which version a restarted server serves, and a combined model (a PRM
and a trained ORM, logged as register logs `model_kind: combined`) must answer the outcome score and
the weighted score computed in process.
"""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from model_server import model_server
from tiny_models import build_tiny_orm, build_tiny_prm, log_version, server_env, sharpen_label_rows, tracking_store

LIMITS = {"max_solutions_per_request": 64, "max_steps_per_request": 310, "max_request_bytes": 150_000}
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
    """POST `payload` as JSON, or as it is when it is bytes (a body that is not JSON)."""
    if isinstance(payload, bytes):
        return requests.post(f"{url}/invocations", data=payload, headers={"Content-Type": "application/json"},
                             timeout=60)
    return requests.post(f"{url}/invocations", json=payload, timeout=60)


LONG_STEPS = [f"Ava counts {i} + 1 = <<{i}+1={i + 1}>>{i + 1} apples." for i in range(300)]


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


def test_one_degenerate_candidate_leaves_the_others_as_they_are_alone(server):
    degenerate = {"problem": PROBLEM, "steps": ["Ava has 3 apples.", "The total is " + "7" * 6000 + " apples."]}
    unscorable = {"problem": "p " * 200, "steps": ["a"]}  # the problem alone fills the 192-token context
    batch = [SOLUTIONS[i % 3] for i in range(62)]
    batch[17:17], batch[40:40] = [degenerate], [unscorable]
    response = invoke(server, {"inputs": batch})
    assert response.status_code == 200, response.text[:1000]
    predictions = response.json()["predictions"]
    assert len(predictions) == 64
    cut = predictions[17]
    assert (cut["scored_steps"], cut["truncated_steps"], cut["dropped_steps"], cut["reason"]) == (2, [1], 0, None)
    assert cut["score"] == pytest.approx(min(cut["step_scores"]))
    nothing = predictions[40]
    assert (nothing["score"], nothing["first_error"], nothing["step_scores"], nothing["scored_steps"]) == (
        None, None, [], 0)
    assert "model.truncate_problem_left" in nothing["reason"]
    alone = [invoke(server, {"inputs": [s]}).json()["predictions"][0] for s in SOLUTIONS]
    for index, prediction in enumerate(predictions):
        if index not in (17, 40):
            expected = alone[SOLUTIONS.index(batch[index])]
            assert prediction["step_scores"] == pytest.approx(expected["step_scores"], abs=1e-5), index
            assert (prediction["first_error"], prediction["reason"]) == (expected["first_error"], None)


def test_bytes_that_are_not_utf8_in_one_candidate_cost_that_candidate_only(server):
    """Raw bytes, not a JSON escape: the body is read as text with each bad byte kept as a lone surrogate in its
    own string, so the candidate holding it gets the lone surrogate's `reason` and its batch-mates their scores."""
    good = json.dumps(SOLUTIONS[0]).encode()
    bad = b'{"problem": "p", "steps": ["a", "Ava has \xff\xfe apples."]}'
    response = invoke(server, b'{"inputs": [' + good + b", " + bad + b", " + good + b"]}")
    assert response.status_code == 200, response.text[:500]
    first, faulty, last = response.json()["predictions"]
    assert faulty["reason"] == "steps[1]: not valid Unicode text (surrogates not allowed at character 8)"
    assert (faulty["score"], faulty["step_scores"], faulty["first_error"]) == (None, [], None)
    alone = invoke(server, {"inputs": SOLUTIONS[:1]}).json()["predictions"][0]
    assert first == last and first["step_scores"] == pytest.approx(alone["step_scores"], abs=1e-5)
    # Outside a candidate's text a bad byte breaks the request's own rules: a short 400 naming the field.
    refused = invoke(server, b'{"inputs": [' + good + b'], "params": {"aggregation": "m\xffin"}}')
    assert refused.status_code == 400 and "params.aggregation" in refused.json()["message"]
    assert len(refused.content) < 1024


def test_a_300_step_trace_is_scored_on_what_fits_and_text_is_split(server):
    prediction = invoke(server, {"inputs": [{"problem": PROBLEM, "steps": LONG_STEPS}]}).json()["predictions"][0]
    assert 0 < prediction["scored_steps"] < 300 and prediction["truncated_steps"] == []
    assert prediction["scored_steps"] + prediction["dropped_steps"] == 300
    assert (prediction["steps"], prediction["split"]) == (None, None)  # sent as steps: nothing to say
    for separator, rule in (("\n\n", "blank_lines"), ("\n", "step_markers")):
        text = separator.join(f"Step {i + 1}: {step}" for i, step in enumerate(SOLUTIONS[1]["steps"]))
        split = invoke(server, {"inputs": [{"problem": PROBLEM, "text": text}]}).json()["predictions"][0]
        assert (split["steps"], split["split"]) == (SOLUTIONS[1]["steps"], rule)
        by_steps = invoke(server, {"inputs": SOLUTIONS[1:2]}).json()["predictions"][0]
        assert split["step_scores"] == pytest.approx(by_steps["step_scores"], abs=1e-6)


def test_has_final_answer_is_read_from_the_text(server):
    """The registered (default, flexible) reading: a marker or a concluding sentence; a step cut mid-sentence
    states nothing."""
    answered = {"problem": PROBLEM, "steps": ["Ava has 3 + 2 = <<3+2=5>>5 apples.", "#### 5"]}
    cut = {"problem": PROBLEM, "steps": ["Ava buys 2 apples.", "Ava has 3 + 2 ="]}
    predictions = invoke(server, {"inputs": [answered, SOLUTIONS[0], cut]}).json()["predictions"]
    assert [p["has_final_answer"] for p in predictions] == [True, True, False]


@pytest.mark.parametrize("payload, message", [
    ({"inputs": [{"steps": ["a"]}]}, "inputs[0].problem: must be a string, got null"),
    ({"inputs": [{"problem": "p", "steps": "not a list"}]}, "inputs[0].steps: must be a list of strings, got a str"),
    ({"inputs": [{"problem": "p", "steps": None}]}, "inputs[0].steps: must be a list of strings, got null"),
    ({"inputs": [{"problem": "p", "steps": ["a", 2]}]}, "inputs[0].steps[1]: must be a string, got int 2"),
    ({"inputs": [{"problem": "p", "steps": ["a"], "text": "a"}]}, "inputs[0]: give exactly one of steps"),
    ({"inputs": [{"problem": "p", "steps": ["a"], "answer": "5"}]}, "inputs[0]: unknown key 'answer'"),
    ({"inputs": [{"problem": "p", "steps": ["a"]}], "params": {"aggregation": "max"}}, "params.aggregation"),
    ({"inputs": [{"problem": "p", "steps": ["a"]}], "params": {"threshold": 0.3}},
     "params: unknown key 'threshold' (known: aggregation)"),
    ({"inputs": [{"problem": "p", "steps": ["a"]}] * 65}, "inputs: 65 solutions, more than the limit of 64"),
    ({"inputs": [{"problem": "p", "steps": ["a"] * 311}]}, "inputs: 311 steps in all, more than the limit of 310"),
    ([{"problem": "p", "steps": ["a"]}], 'request body: must be an object of the form {"inputs": ['),
    ({"problem": "p", "steps": ["a"]}, "request body: must be an object of the form"),
    (b"{not json", 'request body: not JSON (Expecting property name enclosed in double quotes at line 1 column 2)'),
    (b'{"inputs": [{"problem": "p", "steps": ["' + b"x" * 100_000 + b'"', "request body: not JSON"),
    ({"inputs": [{"problem": "p", "steps": "x" * 100_000}]}, "inputs[0].steps: must be a list of strings, got a str"),
    ({"inputs": [{"problem": "p", "steps": ["a"]}] * 63 + [{"problem": "p" * 100_000}]}, "inputs[63]: give exactly"),
    (b'{"inputs": ' + b"[" * 1000 + b"]" * 1000 + b"}", "request body: nested too deep to read"),
    (b'{"inputs": [{"problem": "p", "steps": ["a"]}], "params": {"aggregation": ' + b"9" * 5000 + b"}}",
     "request body: a value cannot be read (Exceeds the limit"),
])
def test_bad_request_is_a_short_400_that_names_the_field(server, payload, message):
    response = invoke(server, payload)
    assert response.status_code == 400, response.text[:1000]
    assert message in response.json()["message"]
    assert len(response.content) < 1024  # whatever the request's size: nothing of it is repeated


def test_a_body_over_the_byte_limit_is_a_413_and_csv_a_415(server):
    response = invoke(server, {"inputs": [{"problem": "p", "steps": ["x" * 160_000]}]})
    assert response.status_code == 413 and len(response.content) < 1024
    assert "more than the limit of 150000 (register.max_request_bytes)" in response.json()["message"]
    csv = requests.post(f"{server}/invocations", data=b"problem,steps\np,a", headers={"Content-Type": "text/csv"},
                        timeout=60)
    assert csv.status_code == 415 and "Content-Type: must be application/json" in csv.json()["message"]


def test_server_keeps_answering_after_a_burst_of_malformed_requests(server):
    bad = [b"{not json", b"[]", b'{"inputs": 3}', b'{"inputs": [{"problem": "p", "steps": [3]}]}'] * 10
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda body: requests.post(f"{server}/invocations", data=body, timeout=60,
                                                         headers={"Content-Type": "application/json"}).status_code,
                              bad))
    assert all(400 <= code < 500 for code in codes), codes
    assert invoke(server, {"inputs": SOLUTIONS[:1]}).status_code == 200


def test_score_command_prints_what_the_server_answers(server, store, tmp_path, capsys):
    from prmflow.cli import main

    path = tmp_path / "solutions.jsonl"
    long = {"problem": PROBLEM, "steps": LONG_STEPS}  # 6 + 300 + 6 steps > 310: scored in two requests
    path.write_text("".join(json.dumps(s) + "\n" for s in SOLUTIONS + [long] + SOLUTIONS))
    main(["score", str(path), "--model", f"models:/prm/{store['versions'][0]}", "--aggregation", "mean"])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    served = invoke(server, {"inputs": SOLUTIONS + [long], "params": {"aggregation": "mean"}}).json()["predictions"]
    assert printed == served + served[:3]


def test_score_command_rejects_bad_lines_and_scores_the_others(server, store, tmp_path, capsys):
    from prmflow.cli import main

    path, rejects = tmp_path / "solutions.jsonl", tmp_path / "rejects.jsonl"
    lines = [json.dumps({"id": "a", **SOLUTIONS[0]}), "{not json", json.dumps({"problem": "p", "steps": ["a", ""]}),
             json.dumps({"id": "b", **SOLUTIONS[1]}), json.dumps({"problem": "p", "steps": "a", "label": 1}),
             json.dumps({"id": "c", **SOLUTIONS[2]}), '{"problem": ' + "[" * 1000 + "]" * 1000 + "}"]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit) as exited:
        main(["score", str(path), "--model", f"models:/prm/{store['versions'][0]}", "--rejects", str(rejects)])
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    printed = [json.loads(line) for line in out.splitlines()]
    served = invoke(server, {"inputs": SOLUTIONS}).json()["predictions"]
    assert printed == [{"id": key} | prediction for key, prediction in zip("abc", served)]
    assert f"{path}:2: not JSON" in err and f"{path}:3: steps[1]: empty step" in err
    assert f"{path}:5: steps: must be a list of strings" in err and "4 of 7 lines rejected" in err
    assert f"{path}:7: nested too deep to read" in err
    recorded = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["line"], r["record"][:40]) for r in recorded] == [(n, lines[n - 1][:40]) for n in (2, 3, 5, 7)]
    assert all(r["reason"] and r["file"] == str(path) for r in recorded)


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
    assert rollback(client, "prm", "champion", "test", "bad outputs") == int(first)
    served_first = champion_scores()
    assert served_first != served_second
    from prmflow.serving.scorer import Solution, load_scorer

    expected = [load_scorer(f"models:/prm/{v}").score([Solution(**SOLUTIONS[2])])[0].step_scores
                for v in (first, second)]
    assert served_first == pytest.approx(expected[0], abs=1e-6)
    assert served_second == pytest.approx(expected[1], abs=1e-6)


def test_combined_model_serves_the_outcome_score_and_the_weighted_score(store, server, tmp_path, capsys):
    from prmflow.cli import main
    from prmflow.scoring.aggregation import aggregate, predicted_first_error
    from prmflow.scoring.modeling import StepTagScorer
    from prmflow.scoring.rewards import TrainedOutcomeRewardModel

    root = store["root"]
    prm_dir, orm_dir = root / "seed0", build_tiny_orm(root / "orm", seed=2)
    version = log_version(prm_dir, "prm-combined", orm_dir, process_weight=0.6, outcome_weight=0.4, **LIMITS)
    prm, orm = StepTagScorer(prm_dir), TrainedOutcomeRewardModel(orm_dir)
    plain = invoke(server, {"inputs": SOLUTIONS[:1]}).json()["predictions"][0]
    assert "outcome_score" not in plain  # the PRM alone
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
        bad = invoke(url, {"inputs": [{"problem": "p", "steps": ["a", 2]}]})
        assert bad.status_code == 400 and "inputs[0].steps[1]: must be a string" in bad.json()["message"]
    path = tmp_path / "solutions.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in SOLUTIONS))
    main(["score", str(path), "--model", f"models:/prm-combined/{version}", "--aggregation", "mean"])
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == served["mean"]


def test_a_model_directory_and_its_registered_version_give_the_same_first_error(store, tmp_path, capsys):
    """`--model models/prm` takes the threshold evaluate chose (reports/metrics.json), as register stores it."""
    import shutil

    from prmflow.cli import main
    from prmflow.scoring.aggregation import predicted_first_error

    shutil.copytree(store["root"] / "seed0", tmp_path / "models" / "prm")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "metrics.json").write_text(json.dumps({"first_error_threshold": 0.51}))
    params = tmp_path / "params.yaml"
    params.write_text(f"base:\n  models_dir: {tmp_path / 'models'}\n  reports_dir: {tmp_path / 'reports'}\n")
    path = tmp_path / "solutions.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in SOLUTIONS))
    version = log_version(store["root"] / "seed0", "prm-threshold", threshold=0.51)

    main(["score", str(path), "--model", str(tmp_path / "models" / "prm"), "--params", str(params)])
    from_directory, err = capsys.readouterr()
    assert f"first_error threshold 0.51 from {tmp_path / 'reports' / 'metrics.json'} (chosen by evaluate)" in err
    main(["score", str(path), "--model", f"models:/prm-threshold/{version}"])
    from_registry, err = capsys.readouterr()
    assert "first_error threshold 0.51 from the registered model's config" in err
    assert from_directory == from_registry
    for line in from_directory.splitlines():
        prediction = json.loads(line)
        assert prediction["first_error"] == predicted_first_error(prediction["step_scores"], 0.51)
    main(["score", str(path), "--model", str(store["root"] / "seed0"), "--params", str(params)])
    assert "the default 0.5 (no evaluate threshold for this directory)" in capsys.readouterr().err


def test_search_picks_the_same_with_the_served_prm_as_in_process(server, store):
    import random

    from prmflow.config import LabelParams
    from prmflow.devices import Placement
    from prmflow.evaluation.search import SearchScorer
    from prmflow.scoring.load import load
    from prmflow.evaluation.search_methods import beam_search, best_of_n, sample_solutions
    from prmflow.labeling.simulated import SimulatedPolicy

    policy = SimulatedPolicy(LabelParams(slip_rate=0.3, misconception_rate=0.3), seed=1)
    served = SearchScorer(load(server, batch_size=LIMITS["max_solutions_per_request"]))
    local = SearchScorer(load(store["root"] / "seed0", batch_size=8, placement=Placement()))
    problems = [{"id": f"p{b}", "problem": f"Ava has 3 apples and buys {b}. She gives 1 away. How many are left?",
                 "answer": str(2 + b), "reference_steps": [f"Ava has 3 + {b} = <<3+{b}={3 + b}>>{3 + b} apples.",
                                                           f"Left: {3 + b} - 1 = <<{3 + b}-1={2 + b}>>{2 + b}."]}
                for b in (2, 5, 9)]  # short enough for the tiny PRM's context: the server refuses what does not fit
    for problem in problems:
        samples = sample_solutions(policy, problem, 6, random.Random(0))
        by_scorer = [scorer.score(problem["problem"], [s.steps for s in samples]) for scorer in (served, local)]
        for a, b in zip(*by_scorer):
            assert a == pytest.approx(b, abs=1e-5)
        picks = [best_of_n(samples, scores, "min", 0).solution for scores in by_scorer]
        assert picks[0] == picks[1]
        beams = [beam_search(policy, scorer, problem, n=8, beam_width=2, max_steps=12, how="min", rng=random.Random(3))
                 for scorer in (served, local)]
        assert beams[0].solution == beams[1].solution and beams[0].answer == beams[1].answer
    assert local.forward_tokens > 0 and served.forward_tokens == 0  # the endpoint does not say what it read


def test_a_server_with_the_bfloat16_override_scores_within_0_05_of_float32(store):
    """Scores spread over (0, 1) (sharpened label rows), so the tolerance is not met by scores near 0.5."""
    from prmflow.devices import Placement
    from prmflow.scoring.modeling import StepTagScorer

    directory = sharpen_label_rows(build_tiny_prm(store["root"] / "sharp", seed=3))
    version = log_version(directory, name="prm-sharp", **LIMITS)
    pairs = [(s["problem"], s["steps"]) for s in SOLUTIONS]
    env = server_env(store["uri"]) | {"PRMFLOW_DTYPE": "bfloat16"}  # the model was stored with dtype: auto
    with model_server(f"models:/prm-sharp/{version}", env, store["root"], store["root"] / "bf16.log") as url:
        response = invoke(url, {"inputs": SOLUTIONS})
    assert response.status_code == 200, response.text
    served = [s for p in response.json()["predictions"] for s in p["step_scores"]]
    float32 = StepTagScorer(directory, Placement("cpu", "float32")).score_batch(pairs)
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


def test_the_registered_model_carries_the_step_tag_label_ids_and_vllm_config_of_its_tokenizer(store):
    """What `prmflow serve-vllm` reads: checked against the tokenizer itself."""
    import mlflow
    from transformers import AutoTokenizer

    metadata = mlflow.models.get_model_info(f"models:/prm/{store['versions'][0]}").metadata
    tokenizer = AutoTokenizer.from_pretrained(store["root"] / "seed0")
    step_tag_id = int(metadata["step_tag_id"])
    assert tokenizer.encode("Step 1: a<step>", add_special_tokens=False)[-1] == step_tag_id
    assert tokenizer.convert_ids_to_tokens(step_tag_id) == "<step>"
    assert tokenizer.convert_ids_to_tokens(int(metadata["positive_token_id"])) == "+"
    assert tokenizer.convert_ids_to_tokens(int(metadata["negative_token_id"])) == "-"
    assert json.loads(metadata["vllm_config"]) == {
        "hf_overrides": {"architectures": ["LlamaForSequenceClassification"], "classifier_from_token": ["-", "+"],
                         "method": "from_2_way_softmax", "num_labels": 1},
        "pooler_config": {"pooling_type": "STEP", "step_tag_id": step_tag_id, "task": "token_classify"}}


def test_the_server_shows_no_api_docs_and_refuses_a_body_with_two_lengths(server):
    import socket
    from urllib.parse import urlparse

    for path in ("/docs", "/redoc", "/openapi.json"):
        assert requests.get(f"{server}{path}", timeout=30).status_code == 404, path
    body = json.dumps({"inputs": SOLUTIONS[:1]}).encode()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    head = (f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    address = urlparse(server)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(head + chunked)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert len(answer) < 1024 and b"Traceback" not in answer


def test_serve_vllm_gives_the_kv_cache_a_quarter_of_available_memory_between_1_and_4_gib():
    """vLLM's CPU build, left to size its KV cache, asks for 92% of the machine and dies where 20 of 24 GB
    are free; serve-vllm's choice fits whatever is available."""
    from prmflow.serving.vllm_server import available_memory_bytes, kv_cache_gib

    gib = 2**30
    assert [kv_cache_gib(n * gib) for n in (0, 3, 7, 8, 12, 20, 500)] == [1, 1, 1, 2, 3, 4, 4]
    assert 0 < available_memory_bytes() and kv_cache_gib(available_memory_bytes()) * gib <= max(
        available_memory_bytes() / 4, gib)
