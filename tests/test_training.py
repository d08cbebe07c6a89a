"""A tiny real training run: parameters change, loss falls, and one pass equals per-prefix scoring."""

import pytest
import torch

from prmflow.config import ModelParams, TrainParams
from prmflow.scoring.modeling import StepTagScorer, build_model, step_loss, step_tag_logits
from prmflow.scoring.tokenization import corpus_texts, prepare_tokenizer, prompt_format, tokenize_rows
from tiny_models import assert_trained, train_tiny_model


def test_step_loss_on_hand_computed_logits():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    p = torch.softmax(logits, -1)
    hard = step_loss(logits, torch.tensor([1.0, 0.0]))
    assert hard.item() == pytest.approx(-(torch.log(p[0, 0]) + torch.log(p[1, 1])).item() / 2)
    soft = step_loss(logits, torch.tensor([0.25, 0.5]))
    expected = -(0.25 * torch.log(p[0, 0]) + 0.75 * torch.log(p[0, 1]) + torch.log(torch.tensor(0.5))) / 2
    assert soft.item() == pytest.approx(expected.item())


def test_negative_class_weight_on_hand_computed_logits():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 3.0]])
    p = torch.softmax(logits, -1)
    hard = step_loss(logits, torch.tensor([1.0, 0.0, 0.0]), negative_weight=3.0)
    expected = -(torch.log(p[0, 0]) + 3 * torch.log(p[1, 1]) + 3 * torch.log(p[2, 1])) / 7
    assert hard.item() == pytest.approx(expected.item())
    assert hard.item() == pytest.approx(torch.nn.functional.cross_entropy(
        logits, torch.tensor([0, 1, 1]), weight=torch.tensor([1.0, 3.0])).item())
    soft = step_loss(logits[:1], torch.tensor([0.25]), negative_weight=2.0)
    expected = -(0.25 * torch.log(p[0, 0]) + 2 * 0.75 * torch.log(p[0, 1])) / (0.25 + 1.5)
    assert soft.item() == pytest.approx(expected.item())


@pytest.fixture(scope="module")
def trained(labeled_rows, tmp_path_factory):
    return train_tiny_model(labeled_rows, tmp_path_factory.mktemp("prm"))


def test_training_changes_parameters_and_lowers_the_loss(trained):
    assert_trained(trained)


def test_one_pass_scores_equal_per_prefix_scores(trained, labeled_rows):
    prm = StepTagScorer(trained["dir"])
    row = max(labeled_rows, key=lambda r: len(r["steps"]))
    one_pass = prm.get_rewards_for_steps(row["problem"], row["steps"])
    per_prefix = [prm.get_rewards_for_steps(row["problem"], row["steps"][: t + 1])[-1]
                  for t in range(len(row["steps"]))]
    assert one_pass == pytest.approx(per_prefix, abs=1e-5)
    batched = prm.score_batch([(r["problem"], r["steps"]) for r in labeled_rows[:6]])
    alone = [prm.get_rewards_for_steps(r["problem"], r["steps"]) for r in labeled_rows[:6]]
    for b, a in zip(batched, alone):  # right padding does not change any score
        assert b == pytest.approx(a, abs=1e-5)


def test_lora_trains_adapters_and_the_step_tag_embedding_only(labeled_rows):
    from prmflow.training.train import apply_lora, merge_lora

    params = ModelParams(vocab_size=300, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    tokenizer = prepare_tokenizer(params, corpus_texts(labeled_rows, params))
    fmt = prompt_format(tokenizer, params)
    torch.manual_seed(0)
    model = build_model(params, tokenizer)
    embeddings = model.get_input_embeddings().weight.detach().clone()
    wrapped = apply_lora(model, TrainParams(lora_r=4), fmt.step_tag_id)
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    assert 0 < sum(p.numel() for p in trainable) < sum(p.numel() for p in wrapped.parameters()) / 2
    rows, _ = tokenize_rows(tokenizer, fmt, labeled_rows[:4])
    input_ids = torch.tensor([rows[0]["input_ids"]])
    loss = step_loss(step_tag_logits(wrapped, input_ids, torch.ones_like(input_ids), fmt),
                     torch.tensor(rows[0]["hard_targets"]))
    loss.backward()
    torch.optim.AdamW(trainable, lr=1e-2).step()

    merged = merge_lora(wrapped)
    assert type(merged).__name__ == "LlamaForCausalLM"  # plain model again: StepTagScorer loads it
    after = merged.get_input_embeddings().weight.detach()
    changed_rows = (after != embeddings).any(dim=1).nonzero().flatten().tolist()
    assert changed_rows == [fmt.step_tag_id]
