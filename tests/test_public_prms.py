"""Public PRM formats: each scorer against a hand-written per-step reference on tiny checkpoints built here.

The reference runs one forward pass per step prefix, through the model's full logits, and reads the
scores as each format's own recipe does (Math-Shepherd, TRL PRMTrainer, RLHFlow); the scorers batch,
share one pass per solution where the tokens allow and go through the tag-only head.
"""

import json

import pytest
import torch

from prmflow.scoring.public_prms import (
    ChatPRM, MathShepherdPRM, TokenClassificationPRM, detect_format, load_prm,
)

from tiny_models import CHAT_TEMPLATE, LAST_TURN_TEMPLATE, PLAIN_CORPUS, build_public_prm, build_tiny_prm

SOLUTIONS = [("Ava has 3 apples and buys 2 more.", ["3 + 2 = 5", "5 - 2 = 3", "3 + 3 = 6"]),
             ("Ava has 10 apples and buys 7 more.", ["10 + 7 = 17"]),
             ("Ava has 4 apples.", ["4 + 1 = 5", "5 + 5 = 10"])]
# The `+` / `-` tokens each family's tokenizer answers with (sentencepiece: `▁+`, as encode("+ -")[1:] reads).
LABEL_TOKENS = {"llama": ("▁+", "▁-"), "gpt2": ("+", "-")}


@torch.no_grad()
def last_logits(model, ids: list[int]) -> torch.Tensor:
    return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def math_shepherd_reference(directory, family: str, problem: str, steps: list[str], tag: str = "ки") -> list[float]:
    """Math-Shepherd's recipe one prefix at a time: `{problem} Step 1: ... ки\\nStep 2: ... ки`, softmax over
    the `+`/`-` logits at the prefix's last token (the tag's last)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(directory), AutoModelForCausalLM.from_pretrained(directory)
    plus, minus = tokenizer.convert_tokens_to_ids(list(LABEL_TOKENS[family]))
    scores = []
    for k in range(1, len(steps) + 1):
        text = problem + " " + "\n".join(f"Step {i + 1}: {s} {tag}" for i, s in enumerate(steps[:k]))
        scores.append(torch.softmax(last_logits(model, tokenizer(text)["input_ids"])[[plus, minus]], -1)[0].item())
    return scores


def trl_reference(directory, problem: str, steps: list[str]) -> list[float]:
    """trl PRMTrainer.tokenize_row: BOS + prompt + each step + "\\n"; P(label 1) at each prefix's last token."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForTokenClassification.from_pretrained(directory)
    ids = [tokenizer.bos_token_id] + tokenizer(problem, add_special_tokens=False)["input_ids"]
    scores = []
    for step in steps:
        ids = ids + tokenizer(step, add_special_tokens=False)["input_ids"] + tokenizer(
            "\n", add_special_tokens=False)["input_ids"]
        scores.append(torch.softmax(last_logits(model, ids), -1)[1].item())
    return scores


def chat_reference(directory, problem: str, steps: list[str]) -> list[float]:
    """RLHFlow's recipe: the conversation up to user turn t with the generation prompt; softmax over the
    `+`/`-` logits at its last token (where the assistant's answer is predicted)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(directory), AutoModelForCausalLM.from_pretrained(directory)
    plus, minus = tokenizer.convert_tokens_to_ids(list(LABEL_TOKENS["gpt2"]))
    conversation, scores = [], []
    for k, step in enumerate(steps):
        conversation.append({"role": "user", "content": f"{problem} {step}" if k == 0 else step})
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        scores.append(torch.softmax(last_logits(model, ids)[[plus, minus]], -1)[0].item())
        conversation.append({"role": "assistant", "content": "+"})
    return scores


def assert_batch_equals_reference(prm, reference) -> None:
    batched = prm.score_batch(SOLUTIONS, batch_size=2)
    for (problem, steps), scores in zip(SOLUTIONS, batched):
        assert scores == pytest.approx(reference(problem, steps), abs=1e-5)
        assert prm.get_rewards_for_steps(problem, steps) == pytest.approx(scores, abs=1e-5)  # batch equals alone


@pytest.mark.parametrize("family, one_pass", [("gpt2", True), ("llama", False)])
def test_math_shepherd_scores_equal_the_per_prefix_reference(tmp_path, family, one_pass):
    directory = build_public_prm(tmp_path / family, family)
    prm = load_prm(directory)
    assert isinstance(prm, MathShepherdPRM) and detect_format(directory) == "math_shepherd"
    # The tiny sentencepiece tokenizer merges `ки` with the next step's text: one pass per step there.
    assert (len(prm.jobs(0, *SOLUTIONS[0])) == 1) == one_pass
    assert_batch_equals_reference(prm, lambda p, s: math_shepherd_reference(directory, family, p, s))


def test_a_tag_of_several_tokens_is_read_at_its_last(tmp_path):
    directory = build_public_prm(tmp_path / "ms", "gpt2")
    prm = load_prm(directory, step_tag="<step>")
    assert len(prm.tokenizer(" <step>", add_special_tokens=False)["input_ids"]) > 1
    assert_batch_equals_reference(prm, lambda p, s: math_shepherd_reference(directory, "gpt2", p, s, tag="<step>"))


def test_a_context_too_short_scores_the_steps_that_fit(tmp_path):
    directory = build_public_prm(tmp_path / "ms", "gpt2")
    prm = load_prm(directory)
    full = prm.score_batch(SOLUTIONS)
    second_tag_end = len(prm.tokenizer(prm.prefixes(*SOLUTIONS[0])[1])["input_ids"])
    assert load_prm(directory, max_length=second_tag_end).score_batch(SOLUTIONS)[0] == pytest.approx(
        full[0][:2], abs=1e-5)
    assert load_prm(directory, max_length=3).score_batch(SOLUTIONS) == [[], [], []]


def test_trl_token_classification_scores_equal_the_per_prefix_reference(tmp_path):
    directory = build_public_prm(tmp_path / "trl", "gpt2", head="token_classification")
    prm = load_prm(directory)
    assert isinstance(prm, TokenClassificationPRM) and detect_format(directory) == "trl"
    assert_batch_equals_reference(prm, lambda p, s: trl_reference(directory, p, s))


@pytest.mark.parametrize("template, one_pass", [(CHAT_TEMPLATE, True), (LAST_TURN_TEMPLATE, False)])
def test_chat_scores_equal_the_per_turn_reference(tmp_path, template, one_pass):
    directory = build_public_prm(tmp_path / "chat", "gpt2", chat_template=template, corpus=PLAIN_CORPUS)
    with pytest.raises(ValueError, match="pass format 'chat', 'zero_shot' or 'math_shepherd'"):
        detect_format(directory)  # a causal LM with a template: chat PRM or judge, never guessed
    prm = load_prm(directory, format="chat")
    assert isinstance(prm, ChatPRM) and (len(prm.jobs(0, *SOLUTIONS[0])) == 1) == one_pass
    assert_batch_equals_reference(prm, lambda p, s: chat_reference(directory, p, s))


def test_prmflow_and_zero_shot_checkpoints_load_as_their_own_scorers(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prmflow.scoring.modeling import StepTagScorer
    from prmflow.scoring.zero_shot import ZeroShotVerifier

    own = build_tiny_prm(tmp_path / "prm", seed=1)
    assert detect_format(own) == "prmflow"
    assert load_prm(own).score_batch(SOLUTIONS) == StepTagScorer(own).score_batch(SOLUTIONS)
    judge = build_public_prm(tmp_path / "judge", "gpt2", corpus=PLAIN_CORPUS)
    direct = ZeroShotVerifier(AutoModelForCausalLM.from_pretrained(judge), AutoTokenizer.from_pretrained(judge), 512,
                              AutoTokenizer.from_pretrained(judge).bos_token_id, "Step {i}: {step}")
    for loaded, expected in zip(load_prm(judge, format="zero_shot").score_batch(SOLUTIONS),
                                direct.score_batch(SOLUTIONS)):
        assert loaded == pytest.approx(expected, abs=1e-6)


def test_remote_code_and_mismatched_formats_are_refused(tmp_path):
    directory = build_public_prm(tmp_path / "ms", "gpt2")
    with pytest.raises(ValueError, match="format 'trl' does not fit"):
        load_prm(directory, format="trl")
    with pytest.raises(ValueError, match="needs a tokenizer with a chat_template"):
        load_prm(directory, format="chat")
    with pytest.raises(ValueError, match="format: 'vllm' is not one of"):
        load_prm(directory, format="vllm")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(config | {"auto_map": {"AutoModel": "modeling_x.XModel"}}))
    with pytest.raises(ValueError, match=r"config.json: auto_map: .*trust_remote_code"):
        load_prm(directory)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_prm(tmp_path)


def test_a_tag_vocabulary_with_a_chat_template_must_be_named_and_token_classifiers_are_not_fine_tuned(tmp_path):
    from prmflow.config import ModelParams
    from prmflow.scoring.tokenization import prepare_tokenizer

    # Multilingual chat models hold `ки` too: with a chat template the tag alone decides nothing.
    directory = build_public_prm(tmp_path / "chat", "gpt2", chat_template=CHAT_TEMPLATE)
    with pytest.raises(ValueError, match="cannot tell its PRM format"):
        load_prm(directory)
    assert isinstance(load_prm(directory, format="math_shepherd"), MathShepherdPRM)
    classifier = build_public_prm(tmp_path / "trl", "gpt2", head="token_classification")
    with pytest.raises(ValueError, match="model.base_model: .* is a token-classification PRM"):
        prepare_tokenizer(ModelParams(base_model=str(classifier)), [])


def test_registered_math_shepherd_checkpoint_is_served_with_the_same_contract_and_scores(tmp_path):
    import requests

    from prmflow.config import params_from_dict
    from model_server import model_server
    from prmflow.serving.register import registered_checkpoint

    from tiny_models import log_version, server_env, tracking_store

    directory = build_public_prm(tmp_path / "shepherd", "gpt2")
    params = params_from_dict({"evaluate": {"scorers": [{"name": "shepherd", "path": str(directory)}]},
                               "register": {"scorer": "shepherd"}})
    metrics = {"first_error_f1": 0.9, "scorer_shepherd_first_error_f1": 0.4,
               "scorer_shepherd_first_error_threshold": 0.6}
    assert registered_checkpoint(params, metrics) == (directory, "", {"first_error_f1": 0.4,
                                                                      "first_error_threshold": 0.6})
    with pytest.raises(KeyError, match="register.scorer: 'shepherd' is not an evaluate.scorers entry"):
        registered_checkpoint(params, {"first_error_f1": 0.9})
    expected = load_prm(directory).score_batch(SOLUTIONS)
    with tracking_store(tmp_path) as uri:
        version = log_version(directory, prm_format="math_shepherd")
        with model_server(f"models:/prm/{version}", server_env(uri), tmp_path, tmp_path / "serve.log") as url:
            inputs = [{"problem": problem, "steps": steps} for problem, steps in SOLUTIONS]
            response = requests.post(f"{url}/invocations", json={"inputs": inputs}, timeout=60)
    assert response.status_code == 200, response.text
    for prediction, scores in zip(response.json()["predictions"], expected):
        assert prediction["step_scores"] == pytest.approx(scores, abs=1e-5)
        assert prediction["score"] == pytest.approx(min(scores)) and prediction["scored_steps"] == len(scores)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_fine_tuning_a_math_shepherd_checkpoint_continues_in_its_own_format(tmp_path, labeled_rows, family):
    import datasets
    from transformers import AutoTokenizer

    from prmflow.config import ModelParams, Params, TrainParams
    from prmflow.scoring.modeling import StepTagScorer, build_model
    from prmflow.scoring.tokenization import encode_solution, prepare_tokenizer, prompt_format, save_prompt_format
    from prmflow.scoring.tokenization import tokenize_rows
    from prmflow.training.train import make_trainer

    directory = build_public_prm(tmp_path / "shepherd", family)
    params = ModelParams(base_model=str(directory), max_length=512)
    tokenizer = prepare_tokenizer(params, [])
    fmt = prompt_format(tokenizer, params)
    assert len(tokenizer) == len(AutoTokenizer.from_pretrained(directory))  # no tag added
    tag, plus, minus = {"gpt2": "ĠÐºÐ¸", "llama": "▁ки"}[family], *LABEL_TOKENS[family]
    assert tokenizer.convert_ids_to_tokens([fmt.step_tag_id, fmt.positive_id, fmt.negative_id]) == [tag, plus, minus]
    # Training reads the labels where the Math-Shepherd scorer reads them: at the checkpoint's own tag token.
    problem, steps = SOLUTIONS[0]
    ids = encode_solution(tokenizer, fmt, problem, steps).input_ids
    assert ids.count(fmt.step_tag_id) == len(steps)
    scorer = load_prm(directory)
    assert [scorer.tokenizer(text)["input_ids"][-1] for text in scorer.prefixes(problem, steps)] == [
        fmt.step_tag_id] * len(steps)

    rows, _ = tokenize_rows(tokenizer, fmt, labeled_rows)
    model = build_model(params, tokenizer)
    trainer = make_trainer(model, tokenizer, fmt, train_dataset=datasets.Dataset.from_list(rows),
                           params=Params(model=params, train=TrainParams(epochs=2, batch_size=8, learning_rate=3e-3)),
                           output_dir=str(tmp_path / "ckpt"))
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert losses[-1] < losses[0]
    trainer.save_model(str(tmp_path / "prm"))
    tokenizer.save_pretrained(tmp_path / "prm")
    save_prompt_format(fmt, tmp_path / "prm")
    trained = load_prm(tmp_path / "prm")
    assert isinstance(trained, StepTagScorer) and trained.format == fmt
    assert [len(s) for s in trained.score_batch(SOLUTIONS)] == [len(s) for _, s in SOLUTIONS]
