"""The frozen-prefix student: the train stage with `train.frozen_layers` changes only the layers above the boundary
(and the final norm and label rows), keeps a cut (`train.keep_layers`) model in the step-tag format, and its saved
model scores what training computed over the cached states."""

import dataclasses

import pytest
import torch

from prmflow.config import BaseParams, ModelParams, Params, TrainParams
from prmflow.jsonl import write_jsonl
from prmflow.scoring.modeling import StepTagScorer, build_model, p_positive
from prmflow.scoring.tokenization import corpus_texts, prepare_tokenizer, prompt_format
from prmflow.training import frozen_prefix, tokenize_stage
from prmflow.training.train import train_stage

MODEL = ModelParams(vocab_size=300, max_length=2048, hidden_size=32, num_layers=4, num_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def stage_run(labeled_rows, tmp_path_factory):
    """The tokenize and train stages for real on a tiny 4-layer model: 3 layers kept, the first 2 frozen."""
    root = tmp_path_factory.mktemp("frozen")
    base = BaseParams(data_dir=str(root / "data"), models_dir=str(root / "models"), reports_dir=str(root / "reports"),
                      mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db", mlflow_artifacts_dir=str(root / "artifacts"))
    params = Params(base=base, model=MODEL, train=TrainParams(epochs=3, batch_size=8, learning_rate=3e-3,
                                                              label_type="soft", frozen_layers=2, keep_layers=3))
    write_jsonl(root / "data" / "rollouts" / "train.jsonl", labeled_rows)
    write_jsonl(root / "data" / "rollouts" / "test.jsonl", labeled_rows[:4])
    tokenize_stage.main(params)
    # The base as train_stage builds it: same seed, same tokenizer, so its weights are the ones training started at.
    tokenizer = prepare_tokenizer(MODEL, corpus_texts(labeled_rows, MODEL))
    torch.manual_seed(base.seed)
    report = train_stage(params)
    return {"params": params, "report": report, "dir": root / "models" / "prm", "rows": labeled_rows,
            "tokenizer": tokenizer}


def base_weights(seed: int, tokenizer) -> dict[str, torch.Tensor]:
    from transformers import set_seed

    set_seed(seed)
    return {k: v.clone() for k, v in build_model(MODEL, tokenizer).state_dict().items()}


def test_only_the_layers_above_the_boundary_change(stage_run):
    from transformers import AutoModelForCausalLM

    before = base_weights(stage_run["params"].base.seed, stage_run["tokenizer"])
    trained = AutoModelForCausalLM.from_pretrained(stage_run["dir"])
    after = trained.state_dict()
    assert trained.config.num_hidden_layers == 3 and trained.config.tie_word_embeddings is False
    assert "model.layers.3.mlp.up_proj.weight" not in after  # cut to 3 layers
    for name in before:
        if name.startswith("model.layers.3.") or name == "lm_head.weight":
            continue
        frozen = name.startswith(("model.layers.0.", "model.layers.1.", "model.embed_tokens."))
        assert torch.equal(before[name], after[name]) == frozen, name
    fmt = prompt_format(stage_run["tokenizer"], MODEL)
    labels = [fmt.positive_id, fmt.negative_id]
    others = torch.ones(after["lm_head.weight"].shape[0], dtype=torch.bool)
    others[labels] = False
    # The head was untied: its other rows are still the input embedding's, its label rows trained apart from it.
    assert torch.equal(after["lm_head.weight"][others], after["model.embed_tokens.weight"][others])
    assert not torch.equal(after["lm_head.weight"][labels], after["model.embed_tokens.weight"][labels])
    report = stage_run["report"]
    assert report["layers"] == 3 and report["frozen_layers"] == 2 and report["final_loss"] < report["train_loss"]


def test_served_scores_equal_the_scores_training_computes(stage_run):
    """StepTagScorer (what evaluation, MLflow serving and search load) on the saved model gives the scores of the
    cached-prefix path training optimised, to float32 rounding."""
    scorer = StepTagScorer(stage_run["dir"])
    fmt = scorer.format
    rows = stage_run["rows"][:6]
    served = scorer.score_batch([(r["problem"], r["steps"]) for r in rows], batch_size=3)
    for row, scores in zip(rows, served):
        ids = scorer.encode([(row["problem"], row["steps"])])[0].input_ids
        states = frozen_prefix.prefix_states(scorer.model, ids, 2, torch.float32)
        with torch.no_grad():
            cached = p_positive(frozen_prefix.top_pair_logits(scorer.model, states, torch.tensor(ids) ==
                                                              fmt.step_tag_id, fmt, 2)).tolist()
        assert scores == pytest.approx(cached, abs=1e-5)
    assert len({round(s, 3) for scores in served for s in scores}) > 3  # trained scores, not a constant


def test_frozen_layers_outside_the_model_are_refused(stage_run):
    params = stage_run["params"]
    with pytest.raises(ValueError, match="frozen_layers: 5 is not between 1 and the model's 4 layers"):
        train_stage(dataclasses.replace(params, train=dataclasses.replace(params.train, frozen_layers=5,
                                                                          keep_layers=0)))
    assert "frozen_layers: 4 is more than keep_layers 3" in " ".join(
        dataclasses.replace(params.train, frozen_layers=4).check())
    assert "set lora_r to 0" in " ".join(dataclasses.replace(params.train, lora_r=4).check())


def test_the_pair_loss_ranks_candidates_of_one_problem_by_the_teacher_s_minimum():
    """Two candidates of problem a (teacher minima 0.9 and 0.2) make one pair; problem b's lone candidate none."""
    logits = [torch.tensor([[2.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[5.0, 0.0]])]
    targets = [[0.95, 0.9], [0.2], [0.1]]
    loss = frozen_prefix.within_problem_pair_loss(logits, targets, ["a", "a", "b"], margin=0.1)
    better = -torch.logsumexp(-torch.tensor([2.0, 1.0]), dim=0)  # soft minimum of its log-odds 2 and 1
    assert loss.item() == pytest.approx(torch.nn.functional.softplus(0.0 - better).item(), abs=1e-6)
    assert frozen_prefix.within_problem_pair_loss(logits, targets, ["a", "b", "c"], margin=0.1) is None
    assert frozen_prefix.within_problem_pair_loss(logits, [[0.3], [0.25], [0.1]], ["a", "a", "b"], 0.1) is None


def test_batches_hold_whole_problems_and_every_solution_once_an_epoch():
    groups = ["a", "a", "a", "b", "c", "c", "d"]
    size = {g: groups.count(g) for g in groups}
    source = frozen_prefix._epoch_batches(groups, batch_size=3, seed=0)
    batches = [next(source) for _ in range(6)]
    for batch in batches:  # whole problems, and no more of them than it takes to reach 3 solutions
        assert all([groups[i] for i in batch].count(g) % size[g] == 0 for g in {groups[i] for i in batch})
        assert len(batch) >= 3 and len(batch) - size[groups[batch[-1]]] < 3
    flat = [i for batch in batches for i in batch]
    assert sorted(flat[:7]) == sorted(flat[7:14]) == list(range(7))  # each epoch every solution once
    plain = frozen_prefix._epoch_batches(list(range(10)), batch_size=4, seed=0)
    first_epoch = [i for _ in range(2) for i in next(plain)] + next(plain)[:2]
    assert sorted(first_epoch) == list(range(10))


def test_pairwise_training_orders_a_problem_s_candidates_as_the_teacher_does(labeled_rows):
    """The tiny base, trained on six candidates of two problems with the ranking term: afterwards each problem's
    candidates are ordered by their solution scores as by the teacher's minima (they were not before)."""
    distinct = {tuple(r["steps"]): r for r in labeled_rows if len(r["steps"]) >= 2}  # no two alike
    rows = list(distinct.values())[:6]
    tokenizer = prepare_tokenizer(MODEL, corpus_texts(labeled_rows, MODEL))
    fmt = prompt_format(tokenizer, MODEL)
    torch.manual_seed(0)
    model = build_model(MODEL, tokenizer).eval()
    minima = [0.9, 0.5, 0.1, 0.2, 0.6, 0.95]  # per candidate; its steps' soft labels end at that minimum
    examples = [{"input_ids": scorer_ids(tokenizer, fmt, r), "targets": [1.0] * (len(r["steps"]) - 1) + [m],
                 "group": "p" if i < 3 else "q"} for i, (r, m) in enumerate(zip(rows, minima))]

    def order_agrees() -> bool:
        solution = [solution_score(model, fmt, e) for e in examples]
        return all((solution[i] > solution[j]) == (minima[i] > minima[j]) for group in ((0, 1, 2), (3, 4, 5))
                   for i in group for j in group if i != j)

    assert not order_agrees()
    report = frozen_prefix.train_top(model, examples, fmt, frozen_layers=2, epochs=30, batch_size=3,
                                     learning_rate=1e-2, weight_decay=0.0, warmup_ratio=0.0,
                                     negative_class_weight=1.0, seed=0, dtype=torch.float32, pairwise_weight=1.0)
    assert report["pair_loss"] is not None and order_agrees()
    with pytest.raises(ValueError, match="training example 0: no 'group'"):
        frozen_prefix.train_top(model, [{k: v for k, v in examples[0].items() if k != "group"}], fmt,
                                frozen_layers=2, epochs=1, batch_size=1, learning_rate=1e-3, weight_decay=0.0,
                                warmup_ratio=0.0, negative_class_weight=1.0, seed=0, pairwise_weight=1.0)


def scorer_ids(tokenizer, fmt, row) -> list[int]:
    from prmflow.scoring.tokenization import encode_candidate

    return encode_candidate(tokenizer, fmt, row["problem"], row["steps"]).input_ids


def solution_score(model, fmt, example) -> float:
    """The soft minimum of the steps' log-odds: what the ranking term orders."""
    with torch.no_grad():
        states = frozen_prefix.prefix_states(model, example["input_ids"], 2, torch.float32)
        pair = frozen_prefix.top_pair_logits(model, states, torch.tensor(example["input_ids"]) == fmt.step_tag_id,
                                             fmt, 2)
    return -torch.logsumexp(-(pair[:, 0] - pair[:, 1]), dim=0).item()
