"""A bounded concurrent check of a served PRM: many clients, hostile requests mixed in, and every answer
compared with what the same candidate gets alone.

    from load_check import candidate_pool, solo_predictions, run_mix
    pool = candidate_pool(rollouts, 4_000_000)       # rollouts: [{problem, steps}, ...], hostile candidates added
    solo = solo_predictions(url, pool)               # each candidate alone, one request at a time
    report = run_mix(url, pool, solo, clients=16, requests=10_000, hostile_share=0.25, seed=0)
    assert report["wrong"] == report["server_errors"] == 0

Used by tests/test_serving_load.py (a few hundred requests, in CI) and bench/serve_load.py (10,000). A request
is either valid (1-4 candidates drawn from the pool, hostile candidates among them: special-token text, a lone
surrogate, a 200,000-character step, a repetition loop; the server's tests add a text of markers alone and an empty
problem) and must be answered 200 with each prediction equal
to that candidate's solo one (`step_scores` to `tolerance`, the rest exactly), or a hostile body (nested 1,000 deep, a 5,000-digit
integer, not JSON, the wrong shape, over the byte limit, `text` not a string) and must be answered 4xx in under
1 kB with no traceback. Only loopback URLs are ever targeted by the project's own tests and benchmarks.
"""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

COMPARED = ("scored_steps", "truncated_steps", "dropped_steps", "reason", "neutralised", "first_error",
            "has_final_answer", "steps", "split")


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


def _post(session, url: str, body: bytes):
    return session.post(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=300)


def _body(candidates: list[dict]) -> bytes:
    return json.dumps({"inputs": candidates, "params": {"aggregation": "min"}}).encode()


def solo_predictions(url: str, pool: list[dict]) -> list[dict]:
    """Each candidate's prediction when it is the only one in flight."""
    import requests

    with requests.Session() as session:
        out = []
        for candidate in pool:
            response = _post(session, url, _body([candidate]))
            if response.status_code != 200:
                raise RuntimeError(f"solo request answered {response.status_code}: {response.text[:300]}")
            out.append(response.json()["predictions"][0])
    return out


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


def run_mix(url: str, pool: list[dict], solo: list[dict], *, clients: int, requests: int, hostile_share: float,
            seed: int, max_request_bytes: int, tolerance: float = 1e-5, time_limit_s: float = 3600.0) -> dict:
    """Send `requests` requests from `clients` concurrent clients and check every answer (module docstring).

    Returns counts (`valid`, `hostile`, `wrong`, `server_errors`, `bad_4xx`: a 4xx over 1 kB or with a traceback,
    `hostile_accepted`: a hostile body answered 2xx), latencies of valid requests (`p50_ms`, `p95_ms`), throughput
    and up to five examples of each failure. Stops early (and says so) past `time_limit_s`.
    """
    import requests as http

    rng = random.Random(seed)
    hostile = hostile_bodies(max_request_bytes)
    plan = []
    for _ in range(requests):
        if rng.random() < hostile_share:
            name = rng.choice(sorted(hostile))
            plan.append(("hostile", name, hostile[name]))
        else:
            chosen = rng.sample(range(len(pool)), rng.randint(1, 4))
            plan.append(("valid", chosen, _body([pool[i] for i in chosen])))
    sessions = threading.local()
    deadline = time.monotonic() + time_limit_s

    def one(item) -> tuple[str, float, str | None]:
        kind, what, body = item
        if time.monotonic() > deadline:
            return kind, 0.0, "skipped"
        session = getattr(sessions, "session", None) or http.Session()
        sessions.session = session
        start = time.perf_counter()
        try:
            response = _post(session, url, body)
        except Exception as err:  # counted, not raised: every failure is part of the report
            return kind, time.perf_counter() - start, f"server_errors: {err!r}"
        latency = time.perf_counter() - start
        if response.status_code >= 500:
            return kind, latency, f"server_errors: {response.status_code} {response.text[:200]}"
        if kind == "hostile":
            if response.status_code < 400:
                return kind, latency, f"hostile_accepted: {what} answered {response.status_code}"
            if len(response.content) >= 1024 or "Traceback" in response.text:
                return kind, latency, f"bad_4xx: {what}: {len(response.content)} bytes"
            return kind, latency, None
        if response.status_code != 200:
            return kind, latency, f"wrong: valid request answered {response.status_code}: {response.text[:200]}"
        predictions = response.json()["predictions"]
        for index, prediction in zip(what, predictions):
            why = mismatch(prediction, solo[index], tolerance)
            if why:
                return kind, latency, f"wrong: candidate {index}: {why}"
        return kind, latency, None if len(predictions) == len(what) else "wrong: missing predictions"

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
            "clients": clients, "wall_s": wall, "requests_per_s": len(sent) / wall,
            "p50_ms": percentile(0.5), "p95_ms": percentile(0.95),
            **{name: len(errors) for name, errors in failures.items()},
            "examples": {name: errors[:5] for name, errors in failures.items() if errors}}


# --- the same storm against `prmflow reward-server` (OpenRLHF's remote reward endpoint) ---------------------

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


def _post_reward(session, url: str, body: bytes, content_type: str = "application/json"):
    return session.post(f"{url}/get_reward", data=body, headers={"Content-Type": content_type}, timeout=300)


def _reward_body(items: list[tuple[str, str]]) -> bytes:
    return json.dumps({"query": [q for _, q in items], "prompts": [p for p, _ in items], "labels": ["5"] * len(items)}
                      ).encode()


def solo_rewards(url: str, pool: list[tuple[str, str]]) -> list[tuple[float, dict]]:
    """Each query's (reward, its extra_logs) when it is alone in its request."""
    import requests

    with requests.Session() as session:
        out = []
        for item in pool:
            response = _post_reward(session, url, _reward_body([item]))
            if response.status_code != 200:
                raise RuntimeError(f"solo request answered {response.status_code}: {response.text[:300]}")
            body = response.json()
            out.append((body["rewards"][0], {k: v[0] for k, v in body["extra_logs"].items()}))
    return out


def run_reward_mix(url: str, pool: list[tuple[str, str]], solo: list[tuple[float, dict]], *, clients: int,
                   requests: int, hostile_share: float, seed: int, tolerance: float = 1e-5) -> dict:
    """`run_mix` for the reward server: valid requests of 1-8 pool queries must get each query's solo reward and
    extra_logs; hostile bodies a short 4xx (no traceback). Returns the same counts."""
    import requests as http

    rng = random.Random(seed)
    hostile = reward_hostile_bodies()
    plan = []
    for _ in range(requests):
        if rng.random() < hostile_share:
            name = rng.choice(sorted(hostile))
            plan.append(("hostile", name, *hostile[name]))
        else:
            chosen = [rng.randrange(len(pool)) for _ in range(rng.randint(1, 8))]
            plan.append(("valid", chosen, _reward_body([pool[i] for i in chosen]), "application/json"))
    sessions = threading.local()

    def one(item) -> str | None:
        kind, what, body, content_type = item
        session = getattr(sessions, "session", None) or http.Session()
        sessions.session = session
        try:
            response = _post_reward(session, url, body, content_type)
        except Exception as err:  # counted, not raised
            return f"server_errors: {err!r}"
        if response.status_code >= 500:
            return f"server_errors: {response.status_code} {response.text[:200]}"
        if kind == "hostile":
            if response.status_code < 400:
                return f"hostile_accepted: {what} answered {response.status_code}"
            if len(response.content) >= 1024 or "Traceback" in response.text:
                return f"bad_4xx: {what}: {len(response.content)} bytes"
            return None
        if response.status_code != 200:
            return f"wrong: valid request answered {response.status_code}: {response.text[:200]}"
        answer = response.json()
        for at, index in enumerate(what):
            reward, logs = solo[index]
            got = {k: v[at] for k, v in answer["extra_logs"].items()}
            if abs(answer["rewards"][at] - reward) > tolerance or got != logs:
                return f"wrong: query {index}: {answer['rewards'][at]} {got} != solo {reward} {logs}"
        return None

    with ThreadPoolExecutor(clients) as executor:
        results = list(executor.map(one, plan))
    failures: dict[str, list[str]] = {"wrong": [], "server_errors": [], "bad_4xx": [], "hostile_accepted": []}
    for error in results:
        if error:
            failures[error.split(":")[0]].append(error)
    return {"valid": sum(kind == "valid" for kind, *_ in plan), "hostile": sum(kind == "hostile" for kind, *_ in plan),
            **{name: len(errors) for name, errors in failures.items()},
            "examples": {name: errors[:5] for name, errors in failures.items() if errors}}
