"""The openai policy against a real OpenAI-compatible server: `transformers serve` on loopback, CPU.

The server serves the tiny random GPT-2 of the transformers-policy tests from a local directory
(offline). Its samples are garbage; what is checked is the request/response round trip, one
continuation per prefix, the counters, seeding, the labeling stage on top, and the retry rules
against a port where nothing listens and against a server that comes up late.
"""

import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from prmflow.config import ConfigError, LabelParams, params_from_dict
from prmflow.labeling.label import label_split
from model_server import free_port
from prmflow.labeling.openai_policy import EndpointError, OpenAIPolicy
from prmflow.labeling.policy import Continuation
from prmflow.labeling.step_labels import AnswerChecker, mc_labels
from tiny_models import POLICY_PROBLEM as PROBLEM
from tiny_models import build_tiny_policy_lm, sample_by_default
from tiny_models import serve_policy_lm as serve

PREFIXES = [[], ["She has 3 apples."], ["She has 3 apples.", "Then 3 + 5 = 8 apples."], ["x"], ["one", "two"]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # Sampling by default, or seeds would not show.
    return sample_by_default(build_tiny_policy_lm(tmp_path_factory.mktemp("tiny-gpt2")))


@pytest.fixture(scope="module")
def endpoint(model_dir, tmp_path_factory):
    port = free_port()
    with serve(model_dir, port, tmp_path_factory.mktemp("serve") / "server.log"):
        yield f"http://127.0.0.1:{port}/v1"


def test_complete_returns_one_continuation_per_prefix_and_counts_calls_and_tokens(endpoint, model_dir):
    # The model id the server is pinned to, sent as vLLM requires it.
    policy = OpenAIPolicy(LabelParams(endpoint=endpoint, model_name=str(model_dir), max_new_tokens=12, temperature=1.0,
                                      concurrency=3))
    out = policy.complete(PROBLEM, PREFIXES, random.Random(0))
    assert len(out) == len(PREFIXES)
    for continuation in out:
        assert all(isinstance(step, str) and step for step in continuation.steps)
        assert isinstance(continuation.final_answer, str) and continuation.first_slip is None
    assert policy.generate_calls == len(PREFIXES)  # one request per completion
    assert 0 < policy.generated_tokens <= len(PREFIXES) * 12  # from the responses' `usage`
    assert policy.retries == 0
    policy.sample_trajectory(PROBLEM, random.Random(0))
    assert policy.generate_calls == len(PREFIXES) + 1


def test_next_steps_returns_one_step_per_prefix_cut_at_the_line_end(endpoint):
    policy = OpenAIPolicy(LabelParams(endpoint=endpoint, max_new_tokens=12, temperature=1.0, concurrency=3))
    out = policy.next_steps(PROBLEM, PREFIXES, random.Random(0))
    assert len(out) == len(PREFIXES) and policy.generate_calls == len(PREFIXES)
    for step in out:
        assert len(step.steps) <= 1 and all(s and "\n" not in s for s in step.steps)
        assert step.finished or step.final_answer == ""


def test_seeds_from_the_stream_make_a_run_reproducible(endpoint):
    # Concurrency 1: `transformers serve` seeds one global generator, so concurrent requests would interleave.
    policy = OpenAIPolicy(LabelParams(endpoint=endpoint, max_new_tokens=10, temperature=1.0, concurrency=1))
    first = [c.steps for c in policy.complete(PROBLEM, [[]] * 3, random.Random(7))]
    again = [c.steps for c in policy.complete(PROBLEM, [[]] * 3, random.Random(7))]
    other = [c.steps for c in policy.complete(PROBLEM, [[]] * 3, random.Random(8))]
    assert first == again
    assert first != other  # the seed reached the sampler


def test_labeling_with_the_openai_policy(endpoint, model_dir):
    params = LabelParams(policy="openai", method="mc", endpoint=endpoint, model_name=str(model_dir),
                         trajectories_per_problem=2, completions_per_step=2, max_new_tokens=16, temperature=1.0,
                         concurrency=4)
    second = {**PROBLEM, "id": "p2", "problem": "Tom has 4 pears and eats 1. How many are left?", "answer": "3"}
    results = label_split([PROBLEM, second], params, seed=0)  # the policy made from params, as the stage does
    rows = [row for result in results for row in result.rows]
    assert [row["problem_id"] for row in rows] == ["p1", "p1", "p2", "p2"]
    for row in rows:
        assert len(row["steps"]) == len(row["labels"]) == len(row["values"])
        assert set(row["labels"]) <= {"+", "-"} and row["policy"] == "openai" and row["true_first_error"] is None
    assert sum(result.policy_calls for result in results) >= 4  # at least the trajectories

    # The tiny model rarely writes a second line, so the prefixes' completions are driven from a fixed
    # trajectory: every completion mc counts is one request.
    trajectory = Continuation(steps=["She has 12 apples.", "She buys 5 more.", "12 + 5 = 17.", "#### 16"],
                              final_answer="16", first_slip=None)
    policy = OpenAIPolicy(LabelParams(endpoint=endpoint, max_new_tokens=8, temperature=1.0, concurrency=4))
    mc = mc_labels(policy, PROBLEM, trajectory, completions=3, rng=random.Random(0), check=AnswerChecker())
    assert (mc.policy_calls, policy.generate_calls) == (9, 9)  # 3 prefixes x 3 completions
    assert len(mc.labels) == len(mc.values) == 4 and mc.labels[-1] == "-"  # 16 is not 17


def test_a_refused_request_fails_at_once_with_the_endpoint_status_and_server_message(endpoint):
    policy = OpenAIPolicy(LabelParams(endpoint=endpoint, model_name="some-other-model", max_new_tokens=4, max_retries=3,
                                      retry_backoff_s=0.01, concurrency=8))
    with pytest.raises(EndpointError, match=r"/v1/completions refused the request: HTTP 400: .*pinned") as err:
        policy.complete(PROBLEM, [[]], random.Random(0))
    assert endpoint in str(err.value)
    assert policy.retries == 0 and policy.generate_calls == 0


def test_no_server_fails_after_max_retries_naming_the_endpoint():
    endpoint = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    policy = OpenAIPolicy(LabelParams(endpoint=endpoint, max_retries=2, retry_backoff_s=0.01, concurrency=2))
    with pytest.raises(EndpointError, match=r"no completion after 3 attempts .*last failure: ConnectError") as err:
        policy.complete(PROBLEM, [[], ["x"]], random.Random(0))
    assert endpoint in str(err.value)
    assert 2 <= policy.retries <= 4 and policy.generate_calls == 0  # the second request may be cancelled unsent


def test_retries_reach_a_server_that_starts_after_the_first_attempts_failed(model_dir, tmp_path):
    port = free_port()
    policy = OpenAIPolicy(LabelParams(endpoint=f"http://127.0.0.1:{port}/v1", max_new_tokens=8, max_retries=10,
                                      retry_backoff_s=0.2, concurrency=8))
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(policy.complete, PROBLEM, [[], ["x"]], random.Random(0))
        deadline = time.monotonic() + 30
        while policy.retries == 0 and time.monotonic() < deadline:  # wait for a refused first attempt
            time.sleep(0.05)
        assert policy.retries > 0 and not pending.done()
        with serve(model_dir, port, tmp_path / "server.log"):
            out = pending.result(timeout=120)
    assert len(out) == 2 and policy.generate_calls == 2


def test_the_openai_policy_needs_an_endpoint_url():
    with pytest.raises(ConfigError, match="label.endpoint: the openai policy needs the server's base URL"):
        params_from_dict({"label": {"policy": "openai"}})
    params = params_from_dict({"label": {"policy": "openai", "endpoint": "http://127.0.0.1:8000/v1"}})
    assert (params.label.concurrency, params.label.max_retries) == (32, 5)
    with pytest.raises(ConfigError, match="label.endpoint: .*got 'http://a:8000/v1, b:8000/v1'"):
        params_from_dict({"label": {"policy": "openai", "endpoint": "http://a:8000/v1, b:8000/v1"}})
    several = params_from_dict({"label": {"policy": "openai", "endpoint": "http://a:8000/v1, https://b/v1/"}})
    assert OpenAIPolicy(several.label).urls == ["http://a:8000/v1/completions", "https://b/v1/completions"]


def test_with_several_endpoints_requests_go_to_the_ones_that_answer(endpoint):
    dead = f"http://127.0.0.1:{free_port()}/v1"  # listed first: the first request goes there and fails
    policy = OpenAIPolicy(LabelParams(endpoint=f"{dead},{endpoint}", max_new_tokens=4, concurrency=2, max_retries=2,
                                      retry_backoff_s=0.01))
    out = policy.complete(PROBLEM, [[]] * 6, random.Random(0))
    assert len(out) == 6 and policy.generate_calls == 6
    assert 1 <= policy.retries <= 2  # the requests sent before the dead one failed; later ones avoid it
    assert policy.in_flight == {f"{dead}/completions": 0, f"{endpoint}/completions": 0}


def test_the_api_key_comes_from_the_named_environment_variable(monkeypatch):
    with pytest.raises(ValueError, match="label.api_key_env: environment variable PRMFLOW_TEST_KEY is not set"):
        OpenAIPolicy(LabelParams(endpoint="http://127.0.0.1:8000/v1", api_key_env="PRMFLOW_TEST_KEY", concurrency=8))
    monkeypatch.setenv("PRMFLOW_TEST_KEY", "sk-test")
    policy = OpenAIPolicy(LabelParams(endpoint="http://127.0.0.1:8000/v1", api_key_env="PRMFLOW_TEST_KEY",
                                      concurrency=8))
    assert policy.client.headers["Authorization"] == "Bearer sk-test"
