"""Rewards an RL trainer can trust, tried as a week-long RL job would try them: a completion the PRM cannot score
costs its own reward only, padding and end-of-turn tokens change no reward, batch-mates change no field of an
answer, no credential reaches any output, the reward server refuses hostile bodies with a short 4xx and survives a
storm of concurrent clients, clients and scorers can be built from many threads at once, and work nobody waits
for is not scored. A tiny PRM loaded in process, or behind a real `prmflow reward-server` on loopback.
"""

import asyncio
import http.server
import json
import logging
import random
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from prmflow.integrations.client import PRMClient, RewardConfig, RewardError
from prmflow.integrations.openrlhf import make_reward_func
from prmflow.integrations.text import END_OF_TURN, completion_text
from prmflow.integrations.trl import prm_reward
from prmflow.integrations.verl import compute_score_batch
from load_check import mismatch, reward_door, reward_pool, run_mix, solo_answers
from model_server import free_port, loopback_process
from tiny_models import build_tiny_prm, sharpen_label_rows

from conftest import BIN

SECRET = "hunter2-SECRET-pass"
UNSCORABLE = ["Step 1:", "Step 1:\nStep 2:", "", "   \n ", "Tom has 3 \ud800 pens."]


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory):
    return sharpen_label_rows(build_tiny_prm(tmp_path_factory.mktemp("rewards") / "prm", seed=0, max_length=512), factor=20.0)


@pytest.fixture(scope="module")
def batch(labeled_rows):
    """(problems, completions): finished rollouts with the unscorable completions of an early policy among them,
    and a good completion under an empty problem."""
    good = [(row["problem"], "\n".join([*row["steps"], f"#### {row['predicted_answer']}"]))
            for row in labeled_rows[:12:3]]
    items = good[:2] + [(good[0][0], text) for text in UNSCORABLE] + [("", good[1][1])] + good[2:]
    return [p for p, _ in items], [c for _, c in items]


def reward_server(prm_dir, tmp_path, *extra: str):
    port = free_port()
    cmd = [str(BIN / "prmflow"), "reward-server", "--model", str(prm_dir), "--port", str(port), *extra]
    return loopback_process(cmd, f"http://127.0.0.1:{port}/health", None, tmp_path, tmp_path / "reward.log"), \
        f"http://127.0.0.1:{port}"


# --- one completion, one reward ---------------------------------------------------------------------------

def test_an_unscorable_completion_costs_its_own_reward_in_every_adapter(prm_dir, batch, caplog):
    problems, completions = batch
    client = PRMClient(RewardConfig(model=str(prm_dir), unscorable_reward=-1.0))
    solo = [client.score([p], [c])[0] for p, c in zip(problems, completions)]
    unscorable = [i for i, r in enumerate(solo) if r.score is None]
    assert unscorable == [2, 3, 4, 5, 6, 7]  # the five early-policy outputs and the empty problem
    assert [solo[i].reason for i in unscorable] == [
        "text: holds no step once its `Step k:` markers are taken out",
        "text: holds no step once its `Step k:` markers are taken out", "text: must be a non-empty string",
        "text: must be a non-empty string", "text: not valid Unicode text (surrogates not allowed at character 10)",
        "problem: must be a non-empty string"]
    expected = [r.reward for r in solo]
    assert all(expected[i] == -1.0 for i in unscorable) and all(r.score is not None for r in solo[:2] + solo[8:])
    caplog.set_level(logging.WARNING, logger="prmflow.rewards")
    trl = prm_reward(model=str(prm_dir), unscorable_reward=-1.0)(problems, completions)
    assert trl == pytest.approx(expected, abs=1e-6)
    assert "completion 2 of 10: unscorable (text: holds no step" in caplog.text  # the trainer's log names it
    verl = compute_score_batch(["gsm8k"] * len(problems), completions, ["5"] * len(problems),
                               [{"question": p} for p in problems], model=str(prm_dir), unscorable_reward=-1.0)
    assert [a["score"] for a in verl] == pytest.approx(expected, abs=1e-6)
    assert [a["prm_unscorable"] for a in verl] == [int(i in unscorable) for i in range(len(problems))]
    openrlhf = make_reward_func(model=str(prm_dir), unscorable_reward=-1.0)(
        [p + c for p, c in zip(problems, completions)], problems)
    assert openrlhf["rewards"].tolist() == pytest.approx(expected, abs=1e-6)


def test_the_scoring_server_answers_an_unscorable_candidate_on_its_own(prm_dir):
    from prmflow.devices import Placement
    from prmflow.scoring.modeling import StepTagScorer
    from prmflow.serving.requests import RequestError
    from prmflow.serving.scorer import Scorer, ServingConfig, Solution

    scorer = Scorer(StepTagScorer(prm_dir, Placement("cpu", "float32")), ServingConfig.from_model_config({}))
    good = {"problem": "Ava has 3 apples.", "steps": ["3 + 2 = 5", "#### 5"]}
    faulty = [{"problem": "p", "text": "Step 1:"}, {"problem": " ", "steps": ["a"]}, {"problem": "p", "steps": []},
              {"problem": "p", "steps": ["a", " "]}, {"problem": "p", "steps": ["x \ud800"]}]
    alone = scorer.score([Solution(**good)])[0].model_dump()
    predictions = scorer.score([Solution(**s) for s in [faulty[0], good, *faulty[1:], good]])
    assert mismatch(predictions[1].model_dump(), alone, 1e-6) is None
    assert mismatch(predictions[-1].model_dump(), alone, 1e-6) is None
    assert [p.reason for p in predictions[2:-1]] == [
        "problem: must be a non-empty string", "steps: must be a non-empty list of strings", "steps[1]: empty step",
        "steps[0]: not valid Unicode text (surrogates not allowed at character 2)"]
    assert all(p.score is None and p.first_error is None and p.step_scores == [] for p in [predictions[0],
                                                                                           *predictions[2:-1]])
    with pytest.raises(RequestError, match="params.aggregation"):  # a malformed request is still refused whole
        scorer.score([Solution(**good)], "max")


# --- padding and end-of-turn tokens -----------------------------------------------------------------------

def test_padding_and_end_of_turn_tokens_change_no_reward(prm_dir, batch, tmp_path):
    from tiny_tokenizers import build_family
    from transformers import AutoTokenizer

    policy = build_family("qwen2", ["Tom has 3 pens and 2 more."] * 20, tmp_path / "policy")
    tokenizer = AutoTokenizer.from_pretrained(policy)
    tokenizer.add_special_tokens({"pad_token": "<|policy_pad|>", "additional_special_tokens": ["<|turn_done|>"]})
    tokenizer.save_pretrained(policy)
    problems, completions = batch
    plain = prm_reward(model=str(prm_dir), policy_tokenizer=str(policy))
    tails = ["<|eot_id|><|end_of_text|>", "<pad>" * 9, "</s>", "<|im_end|>\n<|endoftext|>" + "<|endoftext|>" * 5,
             "<|turn_done|>" + "<|policy_pad|>" * 12, " <eos>\n<pad><pad>"]
    expected = plain(problems, completions)
    for tail in tails:
        assert plain(problems, [c + tail for c in completions]) == pytest.approx(expected, abs=1e-6), tail
    # Without the policy's tokenizer only the fallback list is cut: its own pad token would stay and be scored.
    assert completion_text("ok<|policy_pad|>") == "ok<|policy_pad|>" and "<pad>" in END_OF_TURN
    assert completion_text("5 <|eot_id|><|end_of_text|><pad>\n</s>") == "5"


# --- batch-mates ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("count", [600, pytest.param(10_000, marks=pytest.mark.slow)])  # 10,000: ~6 min here
def test_no_field_of_an_answer_changes_with_batch_mates_over_10000_batchings(prm_dir, labeled_rows, count):
    """The threshold evaluate would choose on these scores (choose_threshold), then `count` random batches from
    8 threads through one scoring loop: every field equal to the solo answer (scores to float noise)."""
    from prmflow.devices import Placement
    from prmflow.evaluation.metrics import choose_threshold
    from prmflow.scoring.modeling import StepTagScorer
    from prmflow.serving.scorer import Scorer, ServingConfig, Solution

    pool = [{"problem": r["problem"], "steps": r["steps"][:3]} for r in labeled_rows[:40]]  # short: cheap forwards
    prm = StepTagScorer(prm_dir, Placement("cpu", "float32"))
    probe = Scorer(prm, ServingConfig.from_model_config({}))
    held_out = [p.step_scores for p in probe.score([Solution(**s) for s in pool])]
    threshold, _ = choose_threshold(held_out, [r["first_error"] if r["first_error"] < 3 else -1
                                               for r in labeled_rows[:40]])
    scorer = Scorer(prm, ServingConfig.from_model_config({"threshold": threshold, "batch_tokens": 1024,
                                                           "scoring_threads": 2}))
    solo = [scorer.score([Solution(**s)])[0].model_dump() for s in pool]
    rng = random.Random(0)
    batches = [rng.sample(range(len(pool)), rng.randint(1, 4)) for _ in range(count)]
    with ThreadPoolExecutor(8) as executor:
        answers = list(executor.map(lambda b: scorer.score([Solution(**pool[i]) for i in b]), batches))
    for batch, predictions in zip(batches, answers):
        for index, prediction in zip(batch, predictions):
            assert mismatch(prediction.model_dump(), solo[index], 1e-5) is None, (batch, index)


# --- credentials ------------------------------------------------------------------------------------------

class EchoingServer(http.server.BaseHTTPRequestHandler):
    """A server that refuses every request with a body that echoes its headers (some proxies do)."""

    def do_POST(self):
        body = json.dumps({"error": "unauthorized", "headers": dict(self.headers)}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def echoing_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EchoingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_no_credential_reaches_any_output(echoing_url, tmp_path, monkeypatch, caplog):
    from prmflow.config import LabelParams
    from prmflow.labeling.openai_policy import EndpointError, OpenAIPolicy

    outputs = []
    endpoint = echoing_url.replace("http://", f"http://trainer:{SECRET}@")
    with pytest.raises(RewardError) as refused:
        PRMClient(RewardConfig(endpoint=endpoint)).score(["p"], ["a"])
    outputs.append(str(refused.value))
    assert "401" in outputs[-1] and "***" in outputs[-1]
    dead = f"http://trainer:{SECRET}@127.0.0.1:{free_port()}"
    with pytest.raises(RewardError) as gone:
        PRMClient(RewardConfig(endpoint=dead, max_retries=0)).score(["p"], ["a"])
    outputs.append(str(gone.value))
    monkeypatch.setenv("PRMFLOW_TEST_KEY", f"sk-{SECRET}")
    policy = OpenAIPolicy(LabelParams(policy="openai", endpoint=echoing_url + "/v1", api_key_env="PRMFLOW_TEST_KEY",
                                      max_retries=0))
    with pytest.raises(EndpointError) as label_error:
        policy.next_steps({"problem": "p", "id": "1"}, [[]], random.Random(0))
    outputs.append(str(label_error.value))
    assert "401" in outputs[-1]

    port = free_port()
    cmd = [str(BIN / "prmflow"), "reward-server", "--endpoint", dead, "--port", str(port), "--max-retries", "0"]
    log = tmp_path / "reward.log"
    with loopback_process(cmd, f"http://127.0.0.1:{port}/health", None, tmp_path, log):
        health = requests.get(f"http://127.0.0.1:{port}/health", timeout=10)
        failed = requests.post(f"http://127.0.0.1:{port}/get_reward", json={"query": ["q a"], "prompts": ["q"]},
                               timeout=60)
        assert failed.status_code == 502 and "127.0.0.1" in failed.json()["error"]
        outputs += [health.text, failed.text]
    outputs.append(log.read_text())
    assert "reward-server: POST" in outputs[-1]  # its start-up line is in the log that was searched
    with pytest.raises(ValueError) as both:
        RewardConfig(endpoint=endpoint, model="models/prm")
    outputs += [str(both.value), caplog.text]
    leaked = [text[:300] for text in outputs if SECRET in text or "trainer:" in text]
    assert not leaked, leaked


# --- the reward server's doors ----------------------------------------------------------------------------

def test_the_reward_server_refuses_hostile_bodies_short_and_scores_bad_text_per_query(prm_dir, tmp_path):
    server, url = reward_server(prm_dir, tmp_path)
    with server:
        post = lambda body, content_type="application/json", **headers: requests.post(  # noqa: E731
            f"{url}/get_reward", data=body, headers={"Content-Type": content_type, **headers}, timeout=60)
        deep = post(b'{"query": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
        assert deep.status_code == 400 and deep.json()["error"] == "request body: nested too deep to read"
        assert post(b'{"query": ["q a"], "prompts": ["q"]}', "text/plain").status_code == 415
        assert post(b'{"query": ["q a"], "prompts": ["q"]}', Host="attacker.example").status_code == 421
        smuggled = post(b'{"query": ["q a"], "prompts": ["q"]}', **{"Transfer-Encoding": "chunked"})
        assert smuggled.status_code == 400
        for path in ("/docs", "/openapi.json", "/redoc"):
            assert requests.get(url + path, timeout=10).status_code == 404
        good = "Ava has 3 apples.\n3 + 2 = 5\n#### 5"
        clean = post(json.dumps({"query": ["Q" + good] * 2, "prompts": ["Q", "Q"]}).encode()).json()
        raw = b'{"query": ["Q' + good.encode().replace(b"\n", b"\\n") + b'", "Qbad \xff\xfe bytes"], ' \
              b'"prompts": ["Q", "Q"]}'
        answer = post(raw)
        assert answer.status_code == 200, answer.text
        assert answer.json()["rewards"][0] == pytest.approx(clean["rewards"][0], abs=1e-6)
        assert answer.json()["extra_logs"]["prm_unscorable"] == [0, 1]
        escaped = post(json.dumps({"query": ["Q" + good, "Qx \ud800 y"], "prompts": ["Q", "Q"]}).encode())
        assert escaped.status_code == 200 and escaped.json()["extra_logs"]["prm_unscorable"] == [0, 1]
        assert escaped.json()["rewards"][0] == pytest.approx(clean["rewards"][0], abs=1e-6)
    assert "completion 1 of 2: unscorable (text: not valid Unicode" in (tmp_path / "reward.log").read_text()


def test_the_reward_server_binds_loopback_and_refuses_every_interface_without_a_host_list(prm_dir):
    from prmflow.integrations.reward_server import allowed_hosts, host_name

    proc = subprocess.run([str(BIN / "prmflow"), "reward-server", "--model", str(prm_dir), "--host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "--allow-host" in proc.stderr
    assert allowed_hosts("127.0.0.1", []) >= {"127.0.0.1", "localhost", "::1"}
    assert allowed_hosts("0.0.0.0", ["rm.internal"]) == {"rm.internal"}
    assert [host_name(h) for h in (b"127.0.0.1:5002", b"[::1]:5002", b"LocalHost")] == ["127.0.0.1", "::1",
                                                                                        "localhost"]


def test_a_reward_server_with_a_token_answers_only_requests_that_carry_it(prm_dir, tmp_path, monkeypatch):
    """The token from PRMFLOW_REWARD_TOKEN (not the command line, which `ps` shows), as a Bearer header or as the
    password of the URL OpenRLHF is given (requests sends it as Basic credentials); never printed or answered."""
    import base64

    from prmflow.integrations.reward_server import presented_token

    monkeypatch.setenv("PRMFLOW_REWARD_TOKEN", SECRET)
    server, url = reward_server(prm_dir, tmp_path)
    body = {"query": ["Q" + "Ava has 3 apples.\n3 + 2 = 5\n#### 5"], "prompts": ["Q"]}
    with server:
        post = lambda **headers: requests.post(f"{url}/get_reward", json=body, headers=headers,  # noqa: E731
                                               timeout=60)
        refused = [post(), post(Authorization="Bearer wrong"), post(Authorization="Basic %%%"),
                   post(Authorization=f"Token {SECRET}"), post(Authorization=f"Bearer {SECRET[:-1]}")]
        assert [r.status_code for r in refused] == [401] * 5
        assert all(SECRET not in r.text and len(r.content) < 1024 for r in refused)
        bearer = post(Authorization=f"Bearer {SECRET}")
        assert bearer.status_code == 200, bearer.text
        basic = requests.post(url.replace("http://", f"http://prm:{SECRET}@") + "/get_reward", json=body, timeout=60)
        assert basic.status_code == 200 and basic.json() == bearer.json()
        assert requests.get(f"{url}/health", timeout=10).status_code == 200  # for a load balancer's probe
    log = (tmp_path / "reward.log").read_text()
    assert "requests must carry the token" in log and SECRET not in log
    assert presented_token(b"basic " + base64.b64encode(b"user:a:b")) == "a:b"
    assert presented_token(b"Bearer  t0k ") == "t0k" and presented_token(b"Basic \xff") == ""


def test_reward_server_storm_every_answer_equals_the_solo_one(prm_dir, labeled_rows, tmp_path):
    """32 clients, a quarter of the requests hostile bodies, unscorable and padded queries among the valid ones."""
    server, url = reward_server(prm_dir, tmp_path)
    pool = reward_pool(labeled_rows)
    with server:
        door = reward_door(url)
        solo = solo_answers(door, pool)
        report = run_mix(door, pool, solo, clients=32, requests=400, hostile_share=0.25, seed=0)
    assert sum(answer["prm_unscorable"] for answer in solo) == 6  # five bad completions and the empty prompt
    assert solo[-1] == solo[0]  # the padded copy of the first query: the same reward and logs
    assert (report["wrong"], report["server_errors"], report["bad_4xx"], report["hostile_accepted"]) == (0, 0, 0, 0), \
        report["examples"]
    assert report["valid"] > 250 and report["hostile"] > 60


# --- threads ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("build", [
    "PRMClient(RewardConfig(model=MODEL)).score(['Ava has 3 apples.'], ['3 + 2 = 5\\n#### 5'])[0].reward",
    "type(load('http://127.0.0.1:9/pooling', checkpoint=MODEL).tokenizer).__name__",  # vLLM's; no server needed
])
def test_clients_and_scorers_built_from_32_threads_at_once(prm_dir, build):
    """In a fresh interpreter (transformers not yet imported), 32 threads build one each at the same moment."""
    script = f"""
import threading
from concurrent.futures import ThreadPoolExecutor
from prmflow.integrations.client import PRMClient, RewardConfig
from prmflow.scoring.load import load
MODEL = {str(prm_dir)!r}
barrier = threading.Barrier(32)
def build(_):
    barrier.wait()
    return {build}
with ThreadPoolExecutor(32) as pool:
    built = list(pool.map(build, range(32)))
assert len(built) == 32 and len(set(built)) == 1, built
print("ok", built[0])
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stderr[-3000:]


# --- abandoned work ---------------------------------------------------------------------------------------

def guarded_front(prm_dir, timeout: float):
    from prmflow.devices import Placement
    from prmflow.scoring.modeling import StepTagScorer
    from prmflow.serving.http_guard import _Front
    from prmflow.serving.scorer import Scorer, ServingConfig

    scorer = Scorer(StepTagScorer(prm_dir, Placement("cpu", "float32")),
                    ServingConfig.from_model_config({"batch_tokens": 64, "scoring_threads": 1}))
    return scorer, _Front(None, scorer.answer, timeout)


def call(front, body: bytes, disconnect: bool) -> list[dict]:
    """One POST /invocations through the ASGI front; `disconnect`: the client goes away once the body is sent."""
    sent, messages = [], [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        if messages:
            return messages.pop(0)
        if not disconnect:
            await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/invocations",
             "headers": [(b"content-type", b"application/json")]}
    asyncio.run(front(scope, receive, send))
    return sent


def test_work_of_a_timed_out_or_abandoned_request_is_dropped_not_scored(prm_dir, labeled_rows):
    import time

    body = json.dumps({"inputs": [{"problem": r["problem"], "steps": r["steps"]} for r in labeled_rows[:64]]}).encode()
    scorer, front = guarded_front(prm_dir, timeout=0.05)
    sent = call(front, body, disconnect=False)
    assert sent[0]["status"] == 504 and json.loads(sent[1]["body"])["error_code"] == "DEADLINE_EXCEEDED"
    deadline = time.monotonic() + 60
    while not scorer.loop.dropped and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scorer.loop.dropped > 0 and scorer.loop.forwards < 64  # not every job of the request was scored
    scorer, front = guarded_front(prm_dir, timeout=60)
    assert call(front, body, disconnect=True) == []  # nobody to answer
    while not scorer.loop.dropped and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scorer.loop.dropped > 0
