"""A tiny real training run: parameters change, loss falls, and one pass equals per-prefix scoring."""

import pytest
import torch

from prmflow.config import ModelParams, Params, TrainParams
from prmflow.modeling import (
    ProcessRewardModel, build_model, prepare_tokenizer, prompt_format, save_prompt_format, step_loss,
)
from prmflow.tokenization import corpus_texts, tokenize_rows


def test_step_loss_on_hand_computed_logits():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    p = torch.softmax(logits, -1)
    hard = step_loss(logits, torch.tensor([1.0, 0.0]))
    assert hard.item() == pytest.approx(-(torch.log(p[0, 0]) + torch.log(p[1, 1])).item() / 2)
    soft = step_loss(logits, torch.tensor([0.25, 0.5]))
    expected = -(0.25 * torch.log(p[0, 0]) + 0.75 * torch.log(p[0, 1]) + torch.log(torch.tensor(0.5))) / 2
    assert soft.item() == pytest.approx(expected.item())


@pytest.fixture(scope="module")
def trained(labeled_rows, tmp_path_factory):
    import datasets

    from prmflow.train import make_trainer

    torch.manual_seed(0)
    model_params = ModelParams(vocab_size=300, max_length=2048, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    params = Params(model=model_params, train=TrainParams(epochs=3, batch_size=8, learning_rate=3e-3))
    tokenizer = prepare_tokenizer(model_params, corpus_texts(labeled_rows, model_params))
    fmt = prompt_format(tokenizer, model_params)
    rows, _ = tokenize_rows(tokenizer, fmt, labeled_rows)
    model = build_model(model_params, tokenizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path_factory.mktemp("prm")
    trainer = make_trainer(model, tokenizer, fmt, datasets.Dataset.from_list(rows), params, str(out / "ckpt"))
    trainer.train()
    trainer.save_model(str(out))
    tokenizer.save_pretrained(out)
    save_prompt_format(fmt, out)
    return {"before": before, "model": model, "trainer": trainer, "dir": out}


def test_training_changes_parameters_and_lowers_the_loss(trained):
    after = trained["model"].state_dict()
    changed = [k for k in trained["before"] if not torch.equal(trained["before"][k], after[k])]
    assert len(changed) == len(after)
    losses = [e["loss"] for e in trained["trainer"].state.log_history if "loss" in e]
    assert losses[-1] < losses[0]


def test_one_pass_scores_equal_per_prefix_scores(trained, labeled_rows):
    prm = ProcessRewardModel(trained["dir"])
    row = max(labeled_rows, key=lambda r: len(r["steps"]))
    one_pass = prm.get_rewards_for_steps(row["problem"], row["steps"])
    per_prefix = [prm.get_rewards_for_steps(row["problem"], row["steps"][: t + 1])[-1]
                  for t in range(len(row["steps"]))]
    assert one_pass == pytest.approx(per_prefix, abs=1e-5)
    batched = prm.score_batch([(r["problem"], r["steps"]) for r in labeled_rows[:6]])
    alone = [prm.get_rewards_for_steps(r["problem"], r["steps"]) for r in labeled_rows[:6]]
    for b, a in zip(batched, alone):  # right padding does not change any score
        assert b == pytest.approx(a, abs=1e-5)
