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
