"""Real TRL runs on CPU with prmflow's PRM in the loop: GRPO of a tiny policy rewarded by the served PRM
(conftest.served_prm, a real `mlflow models serve`), and DPO of the same policy on `prmflow pairs` output.

Each run is a few optimizer steps of a one-layer GPT-2: what is checked is that the trainer calls the reward
function with its real arguments, that the rewards it logs are the PRM's, and that the policy's parameters move.
"""

import json
import math

import pytest
import requests

from conftest import docs_block
from tiny_models import build_tiny_policy_lm

trl = pytest.importorskip("trl", reason="trl is in the dev extra (pyproject.toml)")

PROBLEMS = ["Ava has 12 apples and buys 5 more. How many apples does she have?",
            "Tom has 7 pens and buys 4 more. How many pens does he have?"]


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return build_tiny_policy_lm(tmp_path_factory.mktemp("policy"))


def parameters(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed(before: dict, model) -> list[str]:
    import torch

    return [name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())]


def grpo_args(output_dir, **overrides):
    defaults = dict(output_dir=str(output_dir), max_steps=2, per_device_train_batch_size=4, num_generations=4,
                    max_completion_length=24, learning_rate=5e-3, logging_steps=1, report_to=[], use_cpu=True,
                    save_strategy="no", seed=0, temperature=1.0)
    return trl.GRPOConfig(**{**defaults, **overrides})


def test_grpo_with_the_served_prm_reward_changes_the_policy(served_prm, policy_dir, tmp_path):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prmflow.integrations.trl import prm_reward

    # The untrained policy rarely writes a final answer in 24 tokens: with the default no_answer_reward (0.0) every
    # reward of a group could be equal and GRPO's advantages zero; the PRM's own scores differ between completions.
    reward = prm_reward(endpoint=served_prm["url"], no_answer_reward=None)
    calls = []

    def recorded(prompts, completions, **kwargs):  # TRL names the column by __name__: set below
        calls.append({"prompts": prompts, "completions": completions, **kwargs})
        calls[-1]["rewards"] = reward(prompts, completions, **kwargs)
        return calls[-1]["rewards"]

    recorded.__name__ = "prm_reward"
    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    before = parameters(model)
    dataset = datasets.Dataset.from_list([{"prompt": f"Question: {p}\nAnswer:\n", "answer": a}
                                          for p, a in zip(PROBLEMS, ["17", "11"])] * 4)
    trainer = trl.GRPOTrainer(model=model, reward_funcs=recorded, args=grpo_args(tmp_path),
                              train_dataset=dataset, processing_class=tokenizer)
    trainer.train()

    assert len(calls) == 2  # one call per generation batch, every completion of it at once
    for call in calls:
        assert len(call["prompts"]) == len(call["completions"]) == 4 and set(call["prompts"]) <= set(dataset["prompt"])
        assert [tokenizer.decode(ids, skip_special_tokens=True) for ids in call["completion_ids"]] == \
            call["completions"]  # the completions are the policy's own tokens
        assert call["answer"] == [dataset["answer"][dataset["prompt"].index(p)] for p in call["prompts"]]
        assert call["trainer_state"] is trainer.state and callable(call["log_metric"]) and callable(call["log_extra"])
        served = requests.post(f"{served_prm['url']}/invocations", timeout=60, json={
            "inputs": [{"problem": PROBLEMS[dataset["prompt"].index(p)], "text": c}
                       for p, c in zip(call["prompts"], call["completions"]) if c.strip()]}).json()["predictions"]
        assert [r for r, c in zip(call["rewards"], call["completions"]) if c.strip()] == \
            pytest.approx([p["score"] for p in served], abs=1e-6)  # the rewards are the served PRM's scores
    logged = [entry for entry in trainer.state.log_history if "rewards/prm_reward/mean" in entry]
    assert len(logged) == 2 and all("prm/no_answer_rate" in entry and "prm/retries" in entry for entry in logged)
    assert [entry["rewards/prm_reward/mean"] for entry in logged] == \
        pytest.approx([sum(c["rewards"]) / len(c["rewards"]) for c in calls], abs=1e-4)
    assert [entry["prm/retries"] for entry in logged] == [0.0, 0.0]
    assert changed(before, model), "the policy's parameters did not change"


def test_async_reward_gives_the_sync_rewards_inside_a_grpo_run(served_prm, policy_dir, tmp_path):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prmflow.integrations.trl import async_prm_reward, prm_reward

    sync = prm_reward(endpoint=served_prm["url"], no_answer_reward=None)
    asynchronous = async_prm_reward(endpoint=served_prm["url"], no_answer_reward=None, batch_size=2, name="prm_async")
    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    before = parameters(model)
    trainer = trl.GRPOTrainer(model=model, reward_funcs=[sync, asynchronous], args=grpo_args(tmp_path, max_steps=1),
                              train_dataset=datasets.Dataset.from_list([{"prompt": f"Question: {p}\nAnswer:\n"}
                                                                        for p in PROBLEMS] * 2),
                              processing_class=AutoTokenizer.from_pretrained(policy_dir))
    trainer.train()
    entry = next(e for e in trainer.state.log_history if "rewards/prm_async/mean" in e)
    assert entry["rewards/prm_async/mean"] == pytest.approx(entry["rewards/prm_reward/mean"], abs=1e-6)
    assert changed(before, model)


def test_the_docs_grpo_block_runs_as_written(served_prm, policy_dir, tmp_path, monkeypatch):
    import datasets
    from transformers import AutoModelForCausalLM

    monkeypatch.chdir(tmp_path)  # the block's output_dir is relative
    block = docs_block("GRPOTrainer").replace("http://127.0.0.1:5001", served_prm["url"])
    scope = {"policy": AutoModelForCausalLM.from_pretrained(policy_dir), "config": grpo_args(tmp_path / "grpo"),
             "dataset": datasets.Dataset.from_list([{"prompt": f"Question: {p}\nAnswer:\n"} for p in PROBLEMS] * 2)}
    exec(block, scope)
    logged = [e for e in scope["trainer"].state.log_history if "rewards/prm_reward/mean" in e]
    assert len(logged) == 2 and all("prm/unscorable_rate" in e for e in logged)


def test_the_docs_step_dpo_block_on_prmflow_pairs_changes_the_policy(labeled_rows, policy_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prmflow.jsonl import write_jsonl
    from tiny_project import run

    write_jsonl(tmp_path / "rollouts.jsonl", labeled_rows)
    proc = run(["prmflow", "pairs", "rollouts.jsonl", "--output", "pairs.jsonl"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) >= 8
    monkeypatch.chdir(tmp_path)  # the block reads pairs.jsonl and writes step-dpo/ here
    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    before = parameters(model)
    config = trl.DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=2, per_device_train_batch_size=4,
                           learning_rate=5e-3, logging_steps=1, report_to=[], use_cpu=True, save_strategy="no")
    scope = {"policy": model, "tokenizer": AutoTokenizer.from_pretrained(policy_dir), "config": config}
    exec(docs_block("DPOTrainer"), scope)
    trainer = scope["trainer"]
    assert trainer.train_dataset.num_rows == len(pairs)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert changed(before, model), "the policy's parameters did not change"
