"""The train stage itself (train.main) on tiny data: a local Hugging Face base model with LoRA and
gradient accumulation, resume after an interruption, and a 2-process `accelerate launch` (DDP, gloo).
"""

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from conftest import BIN
from prmflow.config import BaseParams, ModelParams, Params, TrainParams
from prmflow.jsonl import write_jsonl
from tiny_tokenizers import build_family

NUM_TRAIN = 48  # 6 batches of 8: step counts are exact
TINY_MODEL = {"vocab_size": 300, "hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}


def stage_params(model: dict | None = None, **train) -> Params:
    """Tiny params with relative paths: the stages run with the project as the cwd."""
    base = BaseParams(mlflow_tracking_uri="sqlite:///mlflow/mlflow.db")
    return Params(base=base, model=ModelParams(**{**TINY_MODEL, **(model or {})}),
                  train=TrainParams(**{"epochs": 2.0, "batch_size": 8, "save_steps": 0, **train}))


@pytest.fixture
def project(tmp_path, labeled_rows, monkeypatch):
    """A project folder holding rollouts; the stages run inside it."""
    write_jsonl(tmp_path / "data/rollouts/train.jsonl", labeled_rows[:NUM_TRAIN])
    write_jsonl(tmp_path / "data/rollouts/test.jsonl", labeled_rows[NUM_TRAIN:NUM_TRAIN + 6])
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tokenize_and_train(params: Params, callbacks: tuple = ()) -> dict:
    from prmflow.training import tokenize_stage, train

    tokenize_stage.main(params)
    if callbacks:
        return train.train_stage(params, callbacks)
    train.main(params)
    return json.loads(Path("reports/train.json").read_text())


@pytest.mark.parametrize("family, weight, lora_r, accumulation", [
    ("qwen2", "model.layers.0.self_attn.q_proj.weight", 4, 2),  # LoRA, merged before saving
    ("gpt2", "transformer.h.0.attn.c_attn.weight", 0, 1),  # full fine-tuning
], ids=["qwen2-lora", "gpt2-full"])
def test_local_base_model_trains_through_the_stage(project, labeled_rows, family, weight, lora_r, accumulation):
    from transformers import AutoModelForCausalLM

    from prmflow.scoring.modeling import StepTagScorer
    from prmflow.scoring.tokenization import corpus_texts

    base = build_family(family, corpus_texts(labeled_rows, ModelParams()), project / "base", with_weights=True)
    params = stage_params({"base_model": str(base)}, lora_r=lora_r, gradient_accumulation_steps=accumulation,
                          learning_rate=1e-2)
    report = tokenize_and_train(params)
    assert report["steps"] == 2 * NUM_TRAIN // (8 * accumulation)  # epochs x batches / accumulation
    assert report["tokenize"]["train"] == {"examples": NUM_TRAIN, "dropped_examples": 0, "dropped_steps": 0,
                                           "truncated_problems": 0}
    # Speed and memory go to MLflow, not into the DVC-tracked report (the same on every machine).
    from mlflow import MlflowClient

    client = MlflowClient("sqlite:///mlflow/mlflow.db")  # MLflow keeps one engine per URI: the latest run is ours
    run = client.search_runs([client.get_experiment_by_name("prmflow").experiment_id], "tags.`prmflow.stage` = 'train'",
                             order_by=["attributes.start_time DESC"])[0]
    assert run.data.metrics["tokens_per_second"] > 0 and run.data.metrics["peak_memory_mb"] > 0
    assert not {"tokens_per_second", "peak_memory_mb", "seconds", "mlflow_run_id"} & set(report)

    # A plain model of the base's architecture (adapters merged) whose attention weights moved.
    before = AutoModelForCausalLM.from_pretrained(base).state_dict()
    after = AutoModelForCausalLM.from_pretrained(project / "models/prm").state_dict()
    assert set(after) == set(before)
    assert not torch.equal(before[weight], after[weight])
    prm = StepTagScorer(project / "models/prm")
    row = labeled_rows[0]
    scores = prm.get_rewards_for_steps(row["problem"], row["steps"])
    assert len(scores) == len(row["steps"]) and all(0 < s < 1 for s in scores)


def test_an_interrupted_run_resumes_from_its_last_checkpoint(project):
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                raise KeyboardInterrupt("simulated interruption")

    params = stage_params(save_steps=2)
    with pytest.raises(KeyboardInterrupt):
        tokenize_and_train(params, callbacks=(Interrupt(),))
    checkpoints = project / "models/prm-checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

    report = tokenize_and_train(params)
    assert report["resumed_from"].endswith("checkpoint-4")
    assert report["steps"] == 2 * NUM_TRAIN // 8
    assert not checkpoints.exists()  # finished: a later run starts fresh

    # Other params: the stale checkpoints of an interrupted run are not resumed.
    changed = stage_params(save_steps=2, learning_rate=1e-3)
    with pytest.raises(KeyboardInterrupt):
        tokenize_and_train(changed, callbacks=(Interrupt(),))
    assert tokenize_and_train(stage_params(save_steps=2))["resumed_from"] is None


def test_two_process_accelerate_launch(project):
    from prmflow.training import tokenize_stage

    params = stage_params()
    Path("params.yaml").write_text(yaml.safe_dump(dataclasses.asdict(params)))
    tokenize_stage.main(params)
    # --multi_gpu picks the torchrun launcher (--cpu would start one process); with no GPU the
    # Trainer (use_cpu) joins the processes over gloo.
    cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "prmflow.cli", "train"]
    proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((project / "reports/train.json").read_text())
    assert report["processes"] == 2
    assert report["steps"] == 2 * NUM_TRAIN // (8 * 2)  # each process takes half of every epoch
    assert (project / "models/prm/prm_config.json").exists()
