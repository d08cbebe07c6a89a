"""The openai policy against a real vLLM server (the CPU build, in its own venv), labeling GSM8K problems.

One server for the module (start-up takes minutes on busy cores) serves a tiny Llama (head_dim 32: vLLM's
CPU attention refuses 16) fitted for a few seconds, in the prompt format, on the bundled generator's solutions:
short templated lines, two to five a solution, then a `####` answer line, which such a model learns in 200
steps (fitted on GSM8K's longer lines for as long, its greedy solutions were one line of noise). So its greedy
solutions to GSM8K test problems have several steps, and there are prefixes to complete. Checked: greedy labels equal the
in-process transformers policy's on the same model; the label stage keeps `label.concurrency` requests in flight
at the server (its own /metrics) over problems and trajectories, where one trajectory's prefixes make fewer.
"""

import json
import re
import threading
import time

import httpx
import pytest

from conftest import REPO
from prmflow.config import IngestParams, LabelParams
from prmflow.data.ingest import build_splits
from prmflow.devices import Placement
from prmflow.labeling.completion_text import prompt_text
from prmflow.labeling.label import label_split
from tiny_models import fit_policy_lm
from vllm_server import needs_vllm, vllm_server

GSM8K = REPO.parent / "shared" / "data" / "gsm8k"
pytestmark = [needs_vllm, pytest.mark.skipif(not GSM8K.is_dir(), reason="GSM8K is not in ../shared/data/gsm8k")]
SHAPE = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 4, "head_dim": 32, "max_position_embeddings": 1024}


def gsm8k(split: str, count: int) -> list[dict]:
    """The first `count` GSM8K problems of `split` as problem rows (steps: the solution's lines)."""
    problems = []
    for i, line in enumerate((GSM8K / f"{split}.jsonl").read_text().splitlines()[:count]):
        raw = json.loads(line)
        steps = raw["answer"].split("\n")
        problems.append({"id": f"gsm8k-{split}-{i}", "problem": raw["question"], "reference_steps": steps,
                         "answer": steps[-1].removeprefix("#### ").strip()})
    return problems


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gsm8k-llama")
    solutions = build_splits(IngestParams(num_train=1500, num_test=4), seed=0).splits["train"]
    assert min(len(p["reference_steps"]) for p in solutions) >= 2
    corpus = [prompt_text(p, [*p["reference_steps"], f"#### {p['answer']}"]) for p in solutions]
    fit_policy_lm(directory, corpus, "llama", SHAPE, steps=200, seed=0)
    return directory


@pytest.fixture(scope="module")
def endpoint(model_dir, tmp_path_factory):
    # float32: the in-process policy's precision, for the greedy comparison; eager: no compile warm-up.
    args = ["--dtype", "float32", "--enforce-eager", "--max-model-len", "1024", "--max-num-seqs", "32",
            "--served-model-name", "policy", "--no-enable-chunked-prefill"]  # seeds: see vllm_server.py
    with vllm_server(model_dir, args, tmp_path_factory.mktemp("vllm") / "server.log") as url:
        yield f"{url}/v1"


def params(**changes) -> LabelParams:
    return LabelParams(**{"method": "mc", "model_name": "policy", "trajectories_per_problem": 2,
                          "completions_per_step": 2, "max_new_tokens": 48, **changes})


def test_greedy_labels_through_vllm_equal_the_in_process_policy(endpoint, model_dir):
    problems = gsm8k("test", 3)
    served = label_split(problems, params(policy="openai", endpoint=endpoint, temperature=0.0, concurrency=8), 0)
    local = label_split(problems, params(policy="transformers", model_dir=str(model_dir), temperature=0.0),
                        0, placement=Placement("cpu", "float32"))
    keys = ("id", "steps", "labels", "values", "predicted_answer", "correct", "first_error")
    assert [[{k: row[k] for k in keys} for row in r.rows] for r in served] == \
        [[{k: row[k] for k in keys} for row in r.rows] for r in local]
    steps = [len(row["steps"]) for r in served for row in r.rows]
    assert len(steps) == 6 and max(steps) >= 2  # multi-step solutions, so prefixes to complete
    assert sum(r.generated_tokens for r in served) > 0


def _requests_at_server(url: str) -> int:
    """Requests the server holds now (running + waiting), from its Prometheus /metrics."""
    text = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=5).text
    found = re.findall(r"^vllm:num_requests_(?:running|waiting)\{[^}]*\} ([0-9.]+)$", text, re.MULTILINE)
    assert found, "no vllm:num_requests_running in /metrics"
    return int(sum(float(value) for value in found))


# Opt-in: /metrics is sampled, so what it sees depends on the machine's speed. On an idle machine the 32-token
# completions finished between samples (a peak of 6 seen where a trajectory asks for 6); the ratio to a
# saturating client is measured in bench/labeling_vllm.py instead.
@pytest.mark.slow
def test_the_server_sees_the_configured_requests_in_flight_across_problems(endpoint):
    # mc with 2 completions per prefix: one trajectory asks for 1 (its sample) or 2·(T-1) completions at a time,
    # fewer than 8 for most; 8 in flight at the server takes several problems at once.
    problems = gsm8k("test", 24)
    peak, stop = [0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], _requests_at_server(endpoint))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = label_split(problems, params(policy="openai", endpoint=endpoint, temperature=1.0, concurrency=8,
                                               max_new_tokens=32), 0)
    finally:
        stop.set()
        watcher.join()
    # More than any one trajectory asks for at once (all one problem at a time could reach, as before), and
    # never more than label.concurrency. /metrics is sampled (each read takes ~0.4 s on busy cores), so the
    # peak seen may fall short of 8.
    one_trajectory = max(2 * (len(row["steps"]) - 1) for r in results for row in r.rows)
    assert one_trajectory < peak[0] <= 8
    assert [r.problem_id for r in results] == [p["id"] for p in problems]
    assert sum(r.policy_calls for r in results) >= 48
