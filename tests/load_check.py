"""A bounded concurrent check of a served PRM, the same storm for every server of it: many clients, hostile
requests mixed in, and every answer compared with what the same item gets alone.

    from load_check import candidate_pool, mlflow_door, run_mix, solo_answers
    door = mlflow_door(url, max_request_bytes)       # or pooling_door(url, checkpoint), reward_door(url)
    pool = candidate_pool(rollouts, 4_000_000)       # rollouts: [{problem, steps}, ...], hostile candidates added
    solo = solo_answers(door, pool)                  # each candidate alone, one request at a time
    report = run_mix(door, pool, solo, clients=16, requests=10_000, hostile_share=0.25, seed=0)
    assert report["wrong"] == report["server_errors"] == 0

A `Door` is one server's side of it: `mlflow_door` (`mlflow models serve`, POST /invocations), `pooling_door`
(`prmflow serve-vllm`, vLLM's /pooling through prmflow's client), `reward_door` (`prmflow reward-server`, OpenRLHF's
/get_reward: (prompt, query) items from `reward_pool`). Used by tests/test_serving_load.py, tests/test_reward_faults.py
and tests/test_vllm_serving.py (a few hundred requests, in CI) and bench/serve_load.py (10,000). A request is
either valid (items drawn from the pool, hostile candidates among them: special-token text, a lone surrogate, a
200,000-character step, a repetition loop; the server's tests add a text of markers alone and an empty problem)
and must be answered 200 with each answer equal to that item's solo one (`step_scores` and rewards to `tolerance`,
the rest exactly), or a hostile body (nested 1,000 deep, a 5,000-digit integer, not JSON, the wrong shape, over
the byte limit, `text` not a string; for vLLM token ids past the vocabulary or the context) and must be answered
4xx in under 1 kB with no traceback. Only loopback URLs are ever targeted by the project's own tests and
benchmarks.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

REQUEST_TIMEOUT_S = 300  # a request not answered by then counts as a hang (a server error)
COMPARED = ("scored_steps", "truncated_steps", "dropped_steps", "reason", "neutralised", "first_error",
            "has_final_answer", "steps", "split")


# (problem, steps) candidates the scoring server answers on their own (scoring.candidates.content_fault), with
# `score: null` and a `reason`: every client of a PRM (prmflow.load) must give them that answer, and cost their
# batch-mates nothing. An empty problem, no step (a `Step 1:` text once split), an empty step, lone surrogates.
UNSCORABLE_PAIRS = [("", ["3 + 2 = 5"]), ("Ava has 3 apples.", []), ("Ava has 3 apples.", ["   ", "3 + 2 = 5"]),
                    ("Ava has 3 apples.", ["3 + 2 = 5", "\t\n"]), ("Ava has 3 apples.", ["3 + 2 = \ud800 5"]),
                    ("Ava has \udcff apples.", ["3 + 2 = 5"])]


def hostile_bodies(max_request_bytes: int) -> dict[str, bytes]:
    """Whole-request faults, each of which must be a short 4xx."""
    one = b'{"problem": "p", "steps": ["a"]}'
    return {
        "nested_1000_deep": b'{"inputs": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        "integer_5000_digits": b'{"inputs": [' + one + b'], "params": {"aggregation": ' + b"9" * 5000 + b"}}",
        "not_json": b'{"inputs": [' + one,
        "wrong_shape": b'{"inputs": {"problem": "p"}}',
        "over_byte_limit": b'{"inputs": [{"problem": "p", "steps": ["' + b"x" * max_request_bytes + b'"]}]}',
        "text_not_a_string": b'{"inputs": [{"problem": "p", "text": 3}]}',
        "unknown_param": b'{"inputs": [' + one + b'], "params": {"temperature": 0}}',
    }


def candidate_pool(rollouts: list[dict], max_request_bytes: int, size: int = 48) -> list[dict]:
    """`size` candidates from `rollouts` ({problem, steps}) plus hostile candidates that must be scored on their
    own without touching their batch-mates: step-tag and BOS text in a problem and a step, a lone surrogate, a
    step of up to 200,000 characters (an eighth of the byte limit at most), and a 100-step repetition loop."""
    pool = [{"problem": r["problem"], "steps": list(r["steps"])} for r in rollouts[:size]]
    base = pool[0]
    pool += [
        {"problem": base["problem"] + " <step> <s>", "steps": base["steps"]},
        {"problem": base["problem"], "steps": [base["steps"][0] + " <step>", *base["steps"][1:]]},
        {"problem": base["problem"], "steps": [base["steps"][0], "x \ud800 y"]},
        {"problem": base["problem"], "steps": [base["steps"][0], "7" * min(200_000, max_request_bytes // 8)]},
        {"problem": base["problem"], "steps": [base["steps"][0]] * 100},
    ]
    return pool


@dataclass(frozen=True)
class Door:
    """One server's side of the storm (run_mix).

    `send(session, items)`: a valid request of pool items, answered (HTTP status, one answer dict per item) or
    (status, the body's text); `same(got, solo, tolerance)`: why an answer is not its item's solo answer, or None;
    `hostile`: whole-request faults, name -> (body, content type), that `post(session, body, content type)` sends
    and that must each be answered a short 4xx; a valid request carries 1 to `max_items` items (repeats allowed)."""

    send: Callable[[Any, list], tuple[int, list[dict] | str]]
    same: Callable[[dict, dict, float], str | None]
    hostile: dict[str, tuple[bytes, str]]
    post: Callable[[Any, bytes, str], Any]
    max_items: int


def _poster(url: str) -> Callable[[Any, bytes, str], Any]:
    return lambda session, body, content_type="application/json": session.post(
        url, data=body, headers={"Content-Type": content_type}, timeout=REQUEST_TIMEOUT_S)


def _answered(response, read: Callable[[dict], list[dict]]) -> tuple[int, list[dict] | str]:
    return (200, read(response.json())) if response.status_code == 200 else (response.status_code, response.text)


def mlflow_door(url: str, max_request_bytes: int) -> Door:
    """`mlflow models serve` (the serving contract, POST /invocations): answers are its predictions."""
    post = _poster(f"{url}/invocations")

    def send(session, candidates: list[dict]):
        body = json.dumps({"inputs": candidates, "params": {"aggregation": "min"}}).encode()
        return _answered(post(session, body), lambda answer: answer["predictions"])

    hostile = {name: (body, "application/json") for name, body in hostile_bodies(max_request_bytes).items()}
    return Door(send, mismatch, hostile, post, max_items=4)


def pooling_door(url: str, checkpoint) -> Door:
    """vLLM's pooling server of a prmflow PRM (`prmflow serve-vllm`), through the client a trainer uses
    (`prmflow.load(".../pooling", checkpoint=...)`: candidates encoded client side, token ids sent); answers are its
    predictions. A refused or failed request raises there, and run_mix counts that as a server error."""
    import prmflow

    prm = prmflow.load(f"{url}/pooling", checkpoint=checkpoint, request_timeout_s=REQUEST_TIMEOUT_S)

    def send(_session, candidates: list[dict]):
        return 200, [p.model_dump() for p in prm.score([(c["problem"], c["steps"]) for c in candidates])]

    def post(_session, body: bytes, content_type: str):  # the client's own connections, as a trainer's process has
        return prm.client.post(prm.url, content=body, headers={"Content-Type": content_type})

    return Door(send, mismatch, pooling_hostile_bodies(prm.format.max_length, len(prm.tokenizer)), post, max_items=4)


def pooling_hostile_bodies(max_length: int, vocabulary: int) -> dict[str, tuple[bytes, str]]:
    """Whole-request faults of vLLM's /pooling (token ids, as prmflow's client sends them); each must be a 4xx."""
    def body(ids, model: str = "prm") -> bytes:
        return json.dumps({"model": model, "task": "token_classify", "input": ids}).encode()

    return {
        "nested_1000_deep": (b'{"model": "prm", "input": ' + b"[" * 1000 + b"]" * 1000 + b"}", "application/json"),
        "integer_5000_digits": (b'{"model": "prm", "input": [[' + b"9" * 5000 + b"]]}", "application/json"),
        "not_json": (body([[1, 2]])[:-1], "application/json"),
        "wrong_shape": (b'{"model": "prm", "input": {"ids": [1, 2]}}', "application/json"),
        "ids_past_the_vocabulary": (body([[1, vocabulary + 7]]), "application/json"),
        "negative_id": (body([[1, -3]]), "application/json"),
        "longer_than_the_context": (body([[1] * (max_length + 1)]), "application/json"),
        "unknown_model": (body([[1, 2]], model="not-the-prm"), "application/json"),
        "text_plain": (body([[1, 2]]), "text/plain"),
    }


def reward_door(url: str) -> Door:
    """`prmflow reward-server` (OpenRLHF's POST /get_reward, items (prompt, query)): an answer is the query's
    reward and its extra_logs values."""
    post = _poster(f"{url}/get_reward")

    def send(session, items: list[tuple[str, str]]):
        body = json.dumps({"query": [q for _, q in items], "prompts": [p for p, _ in items],
                           "labels": ["5"] * len(items)}).encode()
        return _answered(post(session, body), lambda answer: [
            {"reward": reward, **{key: values[at] for key, values in answer["extra_logs"].items()}}
            for at, reward in enumerate(answer["rewards"])])

    def same(got: dict, solo: dict, tolerance: float) -> str | None:
        logs = {key: value for key, value in got.items() if key != "reward"}
        if abs(got["reward"] - solo["reward"]) > tolerance or logs != {k: v for k, v in solo.items() if k != "reward"}:
            return f"{got} != solo {solo}"
        return None

    return Door(send, same, reward_hostile_bodies(), post, max_items=8)


def mismatch(got: dict, expected: dict, tolerance: float) -> str | None:
    """Why `got` is not `expected` (the same candidate's solo prediction), or None."""
    for key in COMPARED:
        if got.get(key) != expected.get(key):
            return f"{key}: {got.get(key)!r} != solo {expected.get(key)!r}"
    if (got.get("score") is None) != (expected.get("score") is None) or (
            got.get("score") is not None and abs(got["score"] - expected["score"]) > tolerance):
        return f"score: {got.get('score')!r} != solo {expected.get('score')!r}"
    scores, solo = got["step_scores"], expected["step_scores"]
    if len(scores) != len(solo) or any(abs(a - b) > tolerance for a, b in zip(scores, solo)):
        return f"step_scores differ from solo by more than {tolerance}"
    return None


def reward_hostile_bodies() -> dict[str, tuple[bytes, str]]:
    """Whole-request faults of the reward server: (body, content type); each must be a short 4xx."""
    one = b'{"query": ["q a"], "prompts": ["q"]}'
    return {
        "nested_100k_deep": (b'{"query": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json"),
        "text_plain": (one, "text/plain"),
        "not_json": (one[:-1], "application/json"),
        "wrong_shape": (b'{"query": "q a", "prompts": ["q"]}', "application/json"),
        "lengths_differ": (b'{"query": ["q a", "q b"], "prompts": ["q"]}', "application/json"),
        "integer_5000_digits": (b'{"query": [' + b"9" * 5000 + b'], "prompts": ["q"]}', "application/json"),
    }


def reward_pool(rollouts: list[dict], size: int = 24) -> list[tuple[str, str]]:
    """(prompt, query) pairs as OpenRLHF sends them (ChatML prompt + response + end of turn), with the completions
    an early policy writes mixed in: marker-only, empty, whitespace, a lone surrogate, an empty prompt, padding."""
    chat = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    pool = [(chat.format(r["problem"]), "\n".join(r["steps"])) for r in rollouts[:size]]
    prompt, response = pool[0]
    pool += [(prompt, "Step 1:"), (prompt, "Step 1:\nStep 2:"), (prompt, ""), (prompt, "  \n "),
             (prompt, response + " \ud800"), ("", response), (prompt, response + "<|im_end|>" + "<pad>" * 7)]
    return [(p, p + r + "<|im_end|>") for p, r in pool]


def solo_answers(door: Door, pool: list) -> list[dict]:
    """Each pool item's answer when it is the only one in flight."""
    import requests

    with requests.Session() as session:
        out = []
        for item in pool:
            status, answers = door.send(session, [item])
            if status != 200:
                raise RuntimeError(f"solo request answered {status}: {answers[:300]}")
            out.append(answers[0])
    return out


def run_mix(door: Door, pool: list, solo: list[dict], *, clients: int, requests: int, hostile_share: float,
            seed: int, tolerance: float = 1e-5, time_limit_s: float = 3600.0) -> dict:
    """Send `requests` requests through `door` from `clients` concurrent clients and check every answer (module
    docstring): a valid request's answers must each be its item's solo answer (`door.same`), a hostile body a 4xx.

    Returns counts (`valid`, `hostile`, `wrong`, `server_errors`: a 5xx, no answer or a client that raised,
    `bad_4xx`: a 4xx over 1 kB or with a traceback, `hostile_accepted`: a hostile body answered 2xx), latencies of
    valid requests (`p50_ms`, `p95_ms`, `max_ms`), throughput, the statuses hostile bodies got, and up to five
    examples of each failure. Stops early (and says so) past `time_limit_s`.
    """
    import requests as http

    rng = random.Random(seed)
    plan = []
    for _ in range(requests):
        if rng.random() < hostile_share:
            name = rng.choice(sorted(door.hostile))
            plan.append(("hostile", name, door.hostile[name]))
        else:
            chosen = [rng.randrange(len(pool)) for _ in range(rng.randint(1, door.max_items))]
            plan.append(("valid", chosen, [pool[i] for i in chosen]))
    sessions = threading.local()
    deadline = time.monotonic() + time_limit_s
    statuses: dict[str, set[int]] = {}

    def one(item) -> tuple[str, float, str | None]:
        kind, what, request = item
        if time.monotonic() > deadline:
            return kind, 0.0, "skipped"
        session = getattr(sessions, "session", None) or http.Session()
        sessions.session = session
        start = time.perf_counter()
        try:
            if kind == "hostile":
                response = door.post(session, *request)
                status, answers = response.status_code, None
            else:
                status, answers = door.send(session, request)
        except Exception as err:  # counted, not raised: every failure is part of the report
            return kind, time.perf_counter() - start, f"server_errors: {kind} {what}: {err!r}"[:400]
        latency = time.perf_counter() - start
        if kind == "hostile":
            statuses.setdefault(what, set()).add(status)
        if status >= 500:
            text = response.text if kind == "hostile" else answers
            return kind, latency, f"server_errors: {what if kind == 'hostile' else ''} {status} {text[:200]}"
        if kind == "hostile":
            if status < 400:
                return kind, latency, f"hostile_accepted: {what} answered {status}"
            if len(response.content) >= 1024 or "Traceback" in response.text:
                return kind, latency, f"bad_4xx: {what}: {len(response.content)} bytes: {response.text[:200]}"
            return kind, latency, None
        if status != 200:
            return kind, latency, f"wrong: valid request answered {status}: {answers[:200]}"
        if len(answers) != len(what):
            return kind, latency, "wrong: missing answers"
        for index, answer in zip(what, answers):
            why = door.same(answer, solo[index], tolerance)
            if why:
                return kind, latency, f"wrong: item {index}: {why}"[:400]
        return kind, latency, None

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as executor:
        results = list(executor.map(one, plan))
    wall = time.perf_counter() - start
    failures: dict[str, list[str]] = {"wrong": [], "server_errors": [], "bad_4xx": [], "hostile_accepted": []}
    for _, _, error in results:
        if error and error != "skipped":
            failures[error.split(":")[0]].append(error)
    latencies = sorted(latency for kind, latency, error in results if kind == "valid" and error != "skipped")
    sent = [r for r in results if r[2] != "skipped"]

    def percentile(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, round(q * (len(latencies) - 1)))] if latencies else 0.0

    return {"requests": len(sent), "skipped_past_time_limit": len(results) - len(sent),
            "valid": sum(kind == "valid" for kind, _, _ in sent), "hostile": sum(kind == "hostile" for kind, _, _ in sent),
            "items_compared": sum(len(what) for kind, what, _ in plan[:len(results)] if kind == "valid"),
            "clients": clients, "wall_s": wall, "requests_per_s": len(sent) / wall,
            "p50_ms": percentile(0.5), "p95_ms": percentile(0.95), "max_ms": percentile(1.0),
            "hostile_statuses": {name: sorted(codes) for name, codes in sorted(statuses.items())},
            **{name: len(errors) for name, errors in failures.items()},
            "examples": {name: errors[:5] for name, errors in failures.items() if errors}}
