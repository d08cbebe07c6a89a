"""vLLM's pooling runner as a second server of a registered PRM: `prmflow serve-vllm` starts a real vLLM server
(the CPU build, in its own venv made by `make vllm-env`) on loopback, and its step scores must equal those of
`mlflow models serve` of the same version to 1e-5, on held-out solutions and on hostile candidates (step-tag
text, a step longer than the context, a lone surrogate); candidates the scoring server answers on their own
(an empty problem, no step, an empty step, a lone surrogate) must get that answer through the pooling client, whose
requests are retried past a dropped connection and a 503; and it must pass the storm the other two servers pass
(load_check.run_mix): concurrent clients through prmflow's pooling client, a quarter of the requests hostile bodies,
every answer equal to the candidate's solo answer.

Skipped only where PRMFLOW_VLLM_PYTHON is unset: the Makefile sets it for `make test`, so CI runs it.
"""

import contextlib
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO
from load_check import UNSCORABLE_PAIRS, candidate_pool, pooling_door, run_mix, solo_answers
from model_server import free_port, loopback_process, model_server
from prmflow.serving.vllm_server import KV_CACHE_ENV, KV_CACHE_MAX_GIB
from tiny_models import build_tiny_prm, log_version, server_env, sharpen_label_rows, tracking_store

VLLM_PYTHON = os.environ.get("PRMFLOW_VLLM_PYTHON")
pytestmark = pytest.mark.skipif(not VLLM_PYTHON, reason="PRMFLOW_VLLM_PYTHON unset: run `make vllm-env`, or make test")
# vLLM compiles and warms up on start: minutes on two busy cores.
READY_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    from prmflow.config import IngestParams, LabelParams
    from prmflow.data.ingest import build_splits
    from prmflow.labeling.label import rollout_rows

    splits = build_splits(IngestParams(num_train=4, num_test=16), seed=11).splits
    rows = rollout_rows(splits["test"], LabelParams(trajectories_per_problem=4, completions_per_step=2), seed=11)
    return candidate_pool(rows, max_request_bytes=4_000_000, size=64)


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A tiny PRM (heads of 32: vLLM's CPU attention refuses 16) registered as the register stage does."""
    root = tmp_path_factory.mktemp("vllm-serving")
    model_dir = sharpen_label_rows(build_tiny_prm(root / "prm", seed=0, max_length=512, hidden_size=64), 20.0)
    with tracking_store(root) as uri:
        version = log_version(model_dir, max_solutions_per_request=128, max_steps_per_request=100_000)
        yield {"root": root, "uri": uri, "model_dir": model_dir, "model": f"models:/prm/{version}"}


@pytest.fixture(scope="module")
def served(registered):
    """`prmflow serve-vllm` of the registered version, as documented: no VLLM_CPU_KVCACHE_SPACE (serve-vllm sizes
    the KV cache from the memory available); its base URL."""
    root = registered["root"]
    env = {k: v for k, v in server_env(registered["uri"]).items() if k != KV_CACHE_ENV} | {"OMP_NUM_THREADS": "1"}
    port = free_port()
    command = ["prmflow", "serve-vllm", "--model", registered["model"], "--port", str(port), "--python", VLLM_PYTHON]
    with loopback_process(command, f"http://127.0.0.1:{port}/health", env, root, root / "vllm.log",
                          ready_timeout=READY_TIMEOUT_S):
        yield f"http://127.0.0.1:{port}"


def test_serve_vllm_scores_equal_the_mlflow_served_model(registered, served, heldout, tmp_path):
    import requests

    import prmflow

    model_dir = registered["model_dir"]
    with model_server(registered["model"], server_env(registered["uri"]), tmp_path, tmp_path / "mlflow.log") as url:
        answer = requests.post(f"{url}/invocations", json={"inputs": heldout}, timeout=300)
        assert answer.status_code == 200, answer.text[:500]
        predictions = answer.json()["predictions"]
    pooled = prmflow.load(f"{served}/pooling", checkpoint=model_dir).score([(c["problem"], c["steps"]) for c in heldout])
    scores = [p.step_scores for p in pooled]
    snippet = run_docs_snippet(served, model_dir, tmp_path / "project")
    log = (registered["root"] / "vllm.log").read_text()
    [chosen] = re.findall(r"prmflow serve-vllm: KV cache (\d+) GiB for vLLM's CPU build", log)
    assert 1 <= int(chosen) <= KV_CACHE_MAX_GIB
    compared = [(p["step_scores"], s) for p, s in zip(predictions, scores)]
    assert [len(a) for a, _ in compared] == [len(b) for _, b in compared]
    assert sum(len(a) for a, _ in compared) > 150 and max(max(a, default=0.5) for a, _ in compared) > 0.8
    assert max(abs(x - y) for a, b in compared for x, y in zip(a, b)) <= 1e-5
    assert [p["neutralised"] for p in predictions] == [p.neutralised for p in pooled]
    assert [p["reason"] for p in predictions] == [p.reason for p in pooled]
    assert snippet.returncode == 0, snippet.stderr[-2000:]
    printed_scores = json.loads(snippet.stdout.split("]")[0] + "]")
    assert len(printed_scores) == 2 and all(0 < s < 1 for s in printed_scores)


# The default suite's storm takes seconds; 32 clients x 100 requests each (75-100 s of requests here) is opt-in.
@pytest.mark.parametrize("clients, requests", [(4, 48), pytest.param(32, 3200, marks=pytest.mark.slow)])
def test_serve_vllm_storm_every_answer_equals_the_solo_one(registered, served, heldout, clients, requests):
    """Valid requests of 1-4 held-out and hostile candidates (as token ids, from prmflow's client) must each get the
    candidate's solo answer; hostile bodies (nested 1,000 deep, a 5,000-digit id, ids past the vocabulary or the
    context, negative, not JSON, the wrong shape, another model, text/plain) a short 4xx; no 5xx, no hang."""
    import requests as http

    door = pooling_door(served, registered["model_dir"])
    solo = solo_answers(door, heldout)
    report = run_mix(door, heldout, solo, clients=clients, requests=requests, hostile_share=0.25, seed=0)
    print({key: value for key, value in report.items() if key != "examples"})
    assert (report["wrong"], report["server_errors"], report["bad_4xx"], report["hostile_accepted"]) == (0, 0, 0, 0), \
        report["examples"]
    assert report["valid"] > requests // 2 and report["hostile"] > requests // 10
    assert report["skipped_past_time_limit"] == 0 and report["items_compared"] > requests
    assert all(http.get(served + path, timeout=10).status_code == 404 for path in ("/docs", "/openapi.json", "/redoc"))


def test_pooled_answers_for_unscorable_candidates_equal_the_scoring_server(registered, served, heldout):
    """A batch of held-out candidates with the unscorable ones among them: every field of every pooled answer
    equals the scoring server's (the Scorer `mlflow models serve` runs for the registered version), scores to
    1e-5, and each held-out candidate's answer equals its answer without the unscorable ones."""
    import prmflow
    from prmflow.serving.requests import Solution
    from prmflow.serving.scorer import load_scorer

    server = load_scorer(registered["model"])
    pooled = prmflow.load(f"{served}/pooling", checkpoint=registered["model_dir"], threshold=server.config.threshold)
    plain = [(c["problem"], c["steps"]) for c in heldout[:6]]
    batch = [pair for mixed in zip(plain, UNSCORABLE_PAIRS) for pair in mixed]
    ours, theirs = pooled.score(batch), server.score([Solution(problem=p, steps=s) for p, s in batch])
    assert all(p.reason and p.score is None for p in theirs[1::2])  # the server's rule holds for each of them
    assert_same_answers(ours, theirs)
    assert_same_answers(ours[0::2], pooled.score(plain))


def assert_same_answers(ours, theirs) -> None:
    """Every field equal, step scores and scores to 1e-5 (vLLM and torch round differently)."""
    assert len(ours) == len(theirs)
    for a, b in zip((p.model_dump() for p in ours), (p.model_dump() for p in theirs)):
        assert a["step_scores"] == pytest.approx(b["step_scores"], abs=1e-5)
        assert (a["score"] is None) == (b["score"] is None) and a["score"] == pytest.approx(b["score"], abs=1e-5)
        rest = {k: v for k, v in a.items() if k not in ("step_scores", "score")}
        assert rest == {k: v for k, v in b.items() if k not in ("step_scores", "score")}


def test_pooled_requests_are_retried_past_a_dropped_connection_and_a_503(registered, served, heldout):
    """Through a loopback proxy that drops the first connection unanswered (as uvicorn drops an idle keep-alive
    one) and answers the second 503, the pooling client retries under `retrying` and gets vLLM's own answer."""
    import prmflow
    from prmflow.http_retry import Retrying

    pairs = [(c["problem"], c["steps"]) for c in heldout[:4]]
    direct = prmflow.load(f"{served}/pooling", checkpoint=registered["model_dir"]).score(pairs)
    retrying = Retrying(max_retries=3, backoff_s=0.01)
    with flaky_proxy(served, [None, 503]) as proxy:
        through = prmflow.load(f"{proxy}/pooling", checkpoint=registered["model_dir"], retrying=retrying).score(pairs)
    assert retrying.retries == 2
    assert_same_answers(through, direct)


@contextlib.contextmanager
def flaky_proxy(upstream: str, failures: list[int | None]):
    """A loopback HTTP proxy to `upstream` whose first requests fail as `failures` says (None: the connection
    closed without an answer; a status: that answer), the rest forwarded; yields its base URL."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import requests

    left = list(failures)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            failure = left.pop(0) if left else "forward"
            if failure is None:
                self.close_connection = True
                return
            if failure == "forward":
                answer = requests.post(upstream + self.path, data=body, timeout=120,
                                   headers={"Content-Type": self.headers["Content-Type"]})
                status, content = answer.status_code, answer.content
            else:
                status, content = failure, b'{"error": "unavailable"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args):  # the test's output stays the test's
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_docs_snippet(url: str, model_dir, project) -> subprocess.CompletedProcess:
    """docs/serving.md's Python block as written, in a project whose models/prm is `model_dir`; only the server's
    address is the test's own."""
    (block,) = re.findall(r"```py\n(.*?)```", (REPO / "docs" / "serving.md").read_text(), flags=re.S)
    (project / "models").mkdir(parents=True)
    (project / "models" / "prm").symlink_to(model_dir)
    return subprocess.run([sys.executable, "-c", block.replace("http://127.0.0.1:8000", url)], cwd=project,
                          capture_output=True, text=True, timeout=300)


def test_serve_vllm_without_an_interpreter_says_how_to_get_one(tmp_path):
    env = {k: v for k, v in server_env("sqlite:///nowhere.db").items() if k != "PRMFLOW_VLLM_PYTHON"}
    proc = subprocess.run(["prmflow", "serve-vllm", "--model", "models:/prm@champion"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "run `make vllm-env` in the checkout" in proc.stderr
