"""Rewards for RL trainers (prmflow.integrations): the text rules, the reward rules, and the OpenRLHF and verl
adapters called as their trainers call them (documented payloads and signatures) against a real
`mlflow models serve` of a PRM trained on labeled rollouts (conftest.served_prm). Every reward is checked
against the server's own answer to the contract's `steps` form of the same solution.
"""

import functools
import http.server
import importlib.util
import re
import shlex
import subprocess
import threading
import time

import pytest
import requests

from prmflow.integrations.client import PRMClient, RewardConfig, RewardError, reward_from_prediction
from prmflow.integrations.text import completion_text, problem_from_prompt, response_from_query
from prmflow.integrations.verl import compute_score_batch
from model_server import free_port, loopback_process

from conftest import BIN, docs_block

CHATML = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"


def load_file(path):
    """A Python file loaded as a module, as OpenRLHF and verl load a user's reward file."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def served_answer(url: str, problem: str, steps: list[str], aggregation: str = "min") -> dict:
    response = requests.post(f"{url}/invocations", json={"inputs": [{"problem": problem, "steps": steps}],
                                                         "params": {"aggregation": aggregation}}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]


@pytest.fixture(scope="module")
def solutions(labeled_rows):
    """Labeled rollouts of three problems, each finished with its final-answer line, and one that stops early
    (cut in the middle of its last step: it states no final answer)."""
    finished = [{**row, "steps": [*row["steps"], f"#### {row['predicted_answer']}"]} for row in labeled_rows]
    picked = [finished[0], finished[10], finished[20]]
    assert len({row["problem_id"] for row in picked}) == 3
    stopped = labeled_rows[30]["steps"]
    return picked + [{**labeled_rows[30], "steps": [*stopped[:-1], stopped[-1][:len(stopped[-1]) // 2].rstrip(" .")]}]


# --- the text rules -------------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt", [
    "Tom has 3 pens.",
    "Question: Tom has 3 pens.\nAnswer:\n",
    CHATML.format(q="Tom has 3 pens."),
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nTom has 3 pens.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "<bos><start_of_turn>user\nTom has 3 pens.<end_of_turn>\n<start_of_turn>model\n",
    "<s>[INST] Tom has 3 pens. [/INST]",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tom has 3 pens."}],
    [{"role": "user", "content": [{"type": "text", "text": "Tom has 3 pens."}]}],
])
def test_the_problem_is_read_out_of_every_prompt_form(prompt):
    assert problem_from_prompt(prompt) == "Tom has 3 pens."


def test_the_last_user_turn_is_the_problem_and_a_conversation_needs_one():
    two_turns = CHATML.format(q="first") + "ok<|im_end|>\n<|im_start|>user\nsecond<|im_end|>\n"
    assert problem_from_prompt(two_turns) == "second"
    with pytest.raises(ValueError, match=r"without a user message \(roles: \['system'\]\)"):
        problem_from_prompt([{"role": "system", "content": "x"}])
    with pytest.raises(ValueError, match="must be a string or a list of chat messages, got int"):
        problem_from_prompt(3)


def test_completions_lose_end_of_turn_tokens_and_queries_their_prompt():
    assert completion_text("a\nb<|im_end|>\n<|endoftext|>") == "a\nb"
    assert completion_text([{"role": "assistant", "content": "a\nb"}]) == "a\nb"
    prompt = CHATML.format(q="Tom has 3 pens.")
    assert response_from_query("<s>" + prompt + "3 - 1 = 2\n#### 2</s>", prompt, 0) == "3 - 1 = 2\n#### 2"
    with pytest.raises(ValueError, match=r"queries\[4\]: does not contain prompts\[4\]"):
        response_from_query("something else", prompt, 4)


# --- the reward rules -------------------------------------------------------------------------------------

PREDICTION = {"step_scores": [0.9, 0.4], "score": 0.4, "first_error": 1, "scored_steps": 2, "truncated_steps": [],
              "dropped_steps": 0, "has_final_answer": True, "reason": None, "steps": ["a", "b"], "split": "lines"}


def test_the_reward_is_the_score_unless_no_answer_or_nothing_scored():
    config = RewardConfig(endpoint="http://x")
    assert reward_from_prediction(PREDICTION, config).reward == 0.4
    unfinished = reward_from_prediction({**PREDICTION, "has_final_answer": False}, config)
    assert (unfinished.reward, unfinished.reason, unfinished.score) == (0.0, "no final answer", 0.4)
    as_scored = RewardConfig(endpoint="http://x", no_answer_reward=None)
    assert reward_from_prediction({**PREDICTION, "has_final_answer": False}, as_scored).reward == 0.4
    nothing = {**PREDICTION, "score": None, "first_error": None, "step_scores": [], "reason": "does not fit"}
    floor = RewardConfig(endpoint="http://x", unscorable_reward=-1.0)
    assert (reward_from_prediction(nothing, floor).reward, reward_from_prediction(nothing, floor).reason) == \
        (-1.0, "does not fit")


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of endpoint"), ({"endpoint": "http://x", "model": "m"}, "exactly one of endpoint"),
    ({"endpoint": "http://x", "aggregation": "max"}, "aggregation: 'max' is not one of"),
    ({"endpoint": "http://x", "batch_size": 0}, "batch_size: must be positive"),
])
def test_a_bad_config_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RewardConfig(**kwargs)
    with pytest.raises(TypeError, match=r"unknown reward option\(s\) \['endpoit'\]"):
        RewardConfig.from_kwargs(endpoit="http://x")



def test_the_old_timeout_keyword_works_for_one_release_with_a_warning_naming_the_new_one():
    with pytest.warns(DeprecationWarning, match=r"timeout_s=\.\.\.\) is deprecated .*request_timeout_s=\.\.\.\)"):
        assert RewardConfig(endpoint="http://x", timeout_s=7.0).request_timeout_s == 7.0
    with pytest.warns(DeprecationWarning, match="request_timeout_s"):  # a trainer's reward kwargs
        assert RewardConfig.from_kwargs(endpoint="http://x", timeout_s=3.0).request_timeout_s == 3.0
    with pytest.raises(TypeError, match="give request_timeout_s= or the deprecated timeout_s=, not both"):
        RewardConfig(endpoint="http://x", timeout_s=1.0, request_timeout_s=2.0)
    with pytest.raises(ValueError, match="request_timeout_s: must be positive"):
        RewardConfig(endpoint="http://x", request_timeout_s=0)


# --- against the served PRM --------------------------------------------------------------------------------

def test_client_rewards_equal_the_servers_scores_of_the_same_steps(served_prm, solutions):
    client = PRMClient(RewardConfig(endpoint=served_prm["url"], aggregation="prod", batch_size=2))
    rewards = client.score([s["problem"] for s in solutions], ["\n".join(s["steps"]) for s in solutions] + [])
    for solution, reward in zip(solutions, rewards):
        expected = served_answer(served_prm["url"], solution["problem"], solution["steps"], "prod")
        assert reward.step_scores == pytest.approx(expected["step_scores"], abs=1e-6)
        assert reward.steps == solution["steps"] and reward.first_error == expected["first_error"]
    assert [r.reward for r in rewards[:3]] == pytest.approx([r.score for r in rewards[:3]])
    assert rewards[3].reason == "no final answer" and rewards[3].reward == 0.0 < rewards[3].score
    empty = client.score(["Tom has 3 pens."], ["  \n"])[0]
    assert (empty.reward, empty.reason, empty.score) == (0.0, "text: must be a non-empty string", None)


def test_a_served_batch_with_unscorable_completions_gets_solo_rewards_for_the_rest(served_prm, solutions, tmp_path):
    """`Step 1:`, an empty prompt and a lone surrogate among finished solutions, through the served PRM: each costs
    its own reward; the others get what they get alone, by TRL's, verl's and OpenRLHF's paths."""
    from prmflow.integrations.openrlhf import make_reward_func
    from prmflow.integrations.trl import prm_reward

    texts = ["\n".join(s["steps"]) for s in solutions[:3]]
    problems = [solutions[0]["problem"], solutions[0]["problem"], "", solutions[1]["problem"], solutions[2]["problem"],
                solutions[2]["problem"]]
    completions = [texts[0], "Step 1:", texts[1], "x \ud800 y", texts[2], "Step 1:\nStep 2:"]
    client = PRMClient(RewardConfig(endpoint=served_prm["url"], unscorable_reward=-1.0))
    solo = [client.score([p], [c])[0].reward for p, c in zip(problems, completions)]
    assert [r == -1.0 for r in solo] == [False, True, True, True, False, True]
    assert prm_reward(endpoint=served_prm["url"], unscorable_reward=-1.0)(problems, completions) == \
        pytest.approx(solo, abs=1e-6)
    verl = compute_score_batch(["d"] * 6, completions, ["5"] * 6, [{"question": p} for p in problems],
                               endpoint=served_prm["url"], unscorable_reward=-1.0)
    assert [a["score"] for a in verl] == pytest.approx(solo, abs=1e-6)
    openrlhf = make_reward_func(endpoint=served_prm["url"], unscorable_reward=-1.0)(
        [p + c for p, c in zip(problems, completions)], problems)
    assert openrlhf["rewards"].tolist() == pytest.approx(solo, abs=1e-6)


def test_a_local_model_directory_gives_the_servers_rewards(served_prm, solutions):
    texts = ([s["problem"] for s in solutions], ["\n".join(s["steps"]) for s in solutions])
    served = PRMClient(RewardConfig(endpoint=served_prm["url"])).score(*texts)
    local = PRMClient(RewardConfig(model=str(served_prm["model_dir"]))).score(*texts)
    assert [r.reward for r in local] == pytest.approx([r.reward for r in served], abs=1e-6)


def test_a_dead_endpoint_is_retried_then_named(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    client = PRMClient(RewardConfig(endpoint=url, max_retries=2, retry_backoff_s=0.01))
    with pytest.raises(RewardError, match=rf"PRM endpoint {url}/invocations: no answer after 3 attempts .*Connect"):
        client.score(["Tom has 3 pens."], ["3 pens.\n#### 3"])
    assert client.retries == 2


class FlakyProxy(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first `failures` requests, then passes them on to the served PRM."""

    failures, target, seen = 2, "", 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen += 1
        if type(self).seen <= type(self).failures:
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"warming up")
            return
        answer = requests.post(self.target + self.path, data=body, headers={"Content-Type": "application/json"})
        self.send_response(answer.status_code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *args):
        pass


def test_a_5xx_is_retried_with_backoff_and_a_4xx_is_not(served_prm, solutions):
    FlakyProxy.target = served_prm["url"]
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        client = PRMClient(RewardConfig(endpoint=f"http://127.0.0.1:{proxy.server_port}", retry_backoff_s=0.05))
        started = time.monotonic()
        reward = client.score([solutions[0]["problem"]], ["\n".join(solutions[0]["steps"])])[0]
        assert client.retries == 2 and time.monotonic() - started >= 0.05  # two backoffs of >= 0.025 s and 0.05 s
        assert reward.step_scores == pytest.approx(
            served_answer(served_prm["url"], solutions[0]["problem"], solutions[0]["steps"])["step_scores"], abs=1e-6)
    finally:
        proxy.shutdown()
    refused = PRMClient(RewardConfig(endpoint=served_prm["url"], batch_size=100))
    with pytest.raises(RewardError, match=r"/invocations refused the request: HTTP 400: .*more than the limit of 64"):
        refused.score(["Tom has 3 pens."] * 70, ["#### 3"] * 70)
    assert refused.retries == 0


# --- OpenRLHF ---------------------------------------------------------------------------------------------

def openrlhf_batch(solutions) -> tuple[list[str], list[str], list[str]]:
    """What OpenRLHF sends: chat-templated prompts, queries = prompt + response + end-of-turn, labels."""
    prompts = [CHATML.format(q=s["problem"]) for s in solutions]
    queries = [p + "\n".join(s["steps"]) + "<|im_end|>" for p, s in zip(prompts, solutions)]
    return queries, prompts, [s["answer"] for s in solutions]


def test_openrlhf_reward_func_as_its_file_is_loaded_and_called(served_prm, solutions, tmp_path):
    # The file docs/rl-trainers.md gives for --reward.remote_url, loaded and called as OpenRLHF does
    # (openrlhf/utils/agent.py: spec_from_file_location, then reward_func(queries, prompts, labels)).
    path = tmp_path / "prm_reward.py"
    path.write_text(docs_block("make_reward_func").replace("http://127.0.0.1:5001", served_prm["url"]))
    answer = load_file(path).reward_func(*openrlhf_batch(solutions))
    expected = [served_answer(served_prm["url"], s["problem"], s["steps"])["score"] for s in solutions[:3]]
    assert answer["rewards"].tolist() == pytest.approx(expected + [0.0], abs=1e-6)
    assert answer["scores"].tolist() == answer["rewards"].tolist()
    assert answer["extra_logs"]["prm_has_final_answer"].tolist() == [1, 1, 1, 0]
    assert answer["extra_logs"]["prm_scored_steps"].tolist() == [len(s["steps"]) for s in solutions]


def test_openrlhf_remote_endpoint_answers_its_payload(served_prm, solutions, tmp_path):
    block = docs_block("--reward.remote_url http://127.0.0.1", "bash")
    command = next(line for line in block.splitlines() if line.startswith("prmflow reward-server"))
    url = re.search(r"--reward.remote_url (\S+)", block).group(1)
    port = free_port()
    command = command.replace("http://127.0.0.1:5001", served_prm["url"]).replace("5002", str(port))
    cmd = [str(BIN / "prmflow"), *shlex.split(command)[1:]]
    with loopback_process(cmd, f"http://127.0.0.1:{port}/health", None, tmp_path, tmp_path / "reward.log"):
        url = url.replace("5002", str(port))
        queries, prompts, labels = openrlhf_batch(solutions)
        answer = requests.post(url, json={"query": queries, "prompts": prompts, "labels": labels}, timeout=60)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        expected = [served_answer(served_prm["url"], s["problem"], s["steps"])["score"] for s in solutions[:3]]
        assert body["rewards"] == pytest.approx(expected + [0.0], abs=1e-6) and body["scores"] == body["rewards"]
        assert body["extra_logs"]["prm_has_final_answer"] == [1, 1, 1, 0]
        bad = requests.post(url, json={"query": queries, "prompts": prompts[:1]}, timeout=60)
        assert bad.status_code == 400 and bad.json()["error"] == "prompts: 1 prompts for 4 queries"
        missing = requests.post(url, json={"query": ["x"], "prompts": ["y"]}, timeout=60)
        assert missing.status_code == 400 and "queries[0]: does not contain prompts[0]" in missing.json()["error"]


def test_reward_server_refuses_a_bad_config():
    proc = subprocess.run([str(BIN / "prmflow"), "reward-server"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "give exactly one of endpoint" in proc.stderr


# --- verl ---------------------------------------------------------------------------------------------------

def verl_reward_fn(tmp_path, url: str, name: str | None = None, **extra_kwargs):
    """The reward function verl builds from docs/rl-trainers.md's overrides (verl's get_custom_reward_fn: the file
    at custom_reward_function.path, the function named custom_reward_function.name, reward_kwargs bound)."""
    block = docs_block("custom_reward_function", "bash").replace("\\\n", " ")  # the shell's line continuation
    overrides = dict(item.split("=", 1) for item in shlex.split(block))
    path = tmp_path / overrides["custom_reward_function.path"]
    path.write_text(docs_block("prmflow.integrations.verl"))
    kwargs = {key.rsplit(".", 1)[1]: value.replace("http://127.0.0.1:5001", url) for key, value in overrides.items()
              if key.startswith("+custom_reward_function.reward_kwargs.")}
    return functools.partial(getattr(load_file(path), name or overrides["custom_reward_function.name"]),
                             **kwargs, **extra_kwargs)


def test_verl_compute_score_as_the_docs_configure_it(served_prm, solutions, tmp_path):
    score = verl_reward_fn(tmp_path, served_prm["url"], aggregation="mean")
    answers = [score(data_source="openai/gsm8k", solution_str="\n".join(s["steps"]) + "<|im_end|>",
                     ground_truth=s["answer"], extra_info={"split": "train", "index": i, "question": s["problem"]})
               for i, s in enumerate(solutions)]
    for solution, answer in zip(solutions[:3], answers):
        assert answer["score"] == pytest.approx(
            served_answer(served_prm["url"], solution["problem"], solution["steps"], "mean")["score"], abs=1e-6)
    assert answers[3]["score"] == 0.0 and answers[3]["prm_score"] > 0 and answers[3]["prm_has_final_answer"] == 0
    assert len({tuple(sorted(a)) for a in answers}) == 1  # the same keys for every sample: verl stacks them
    batch = verl_reward_fn(tmp_path, served_prm["url"], "compute_score_batch", aggregation="mean")(
        data_sources=["gsm8k"] * 4, solution_strs=["\n".join(s["steps"]) for s in solutions],
        ground_truths=[s["answer"] for s in solutions], extra_infos=[{"question": s["problem"]} for s in solutions])
    assert [a["score"] for a in batch] == pytest.approx([a["score"] for a in answers], abs=1e-6)
    with pytest.raises(ValueError, match=r"extra_infos\[1\]: no problem text under 'question' \(has \['index'\]\)"):
        compute_score_batch(["d", "d"], ["a", "b"], ["1", "2"], [{"question": "q"}, {"index": 1}],
                            endpoint=served_prm["url"])
