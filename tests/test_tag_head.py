"""The tag-only head equals the full-vocabulary logits at the tags, for every family, head and wrapper.

Models are built tiny from each family's config (tests/tiny_tokenizers.py), with tied and untied
output embeddings, a biased head (Phi), and LoRA (peft) both unmerged and merged; label rows of a
tied head that peft's trainable tokens change are changed on purpose, so the merged weight is what
is read. Equality is checked in float32 on padded batches of real tokenized rows, for the scores
and for the training gradients.
"""

import pytest
import torch

from prmflow.config import ModelParams
from prmflow.scoring.modeling import label_logits, pad_batch, step_loss, step_tag_logits
from prmflow.scoring.tokenization import corpus_texts, prepare_tokenizer, prompt_format, tokenize_rows
from tiny_tokenizers import TINY, build_family

ATOL = 1e-5


def tiny_model(family: str, tokenizer, tie: bool):
    """A random tiny `family` model (resized for the step tag) with a tied or untied output embedding."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PhiConfig, PhiForCausalLM
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    if family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=512,
                                           tie_word_embeddings=tie))
    else:
        config_class, model_class = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
                                     "phi": (PhiConfig, PhiForCausalLM)}[family]
        model = model_class(config_class(vocab_size=len(tokenizer), tie_word_embeddings=tie, **TINY))
    with torch.no_grad():  # a head whose rows differ from the input embedding's where untied
        if not tie:
            model.get_output_embeddings().weight.normal_(0, 0.5)
        if getattr(model.get_output_embeddings(), "bias", None) is not None:
            model.get_output_embeddings().bias.normal_(0, 1.0)
    return model.eval()


@pytest.fixture(scope="module")
def families(labeled_rows, tmp_path_factory):
    """{family: (tokenizer, prompt format, a padded batch of 6 tokenized rows)}; Phi uses the Llama tokenizer."""
    corpus = corpus_texts(labeled_rows, ModelParams())
    out = {}
    for family in ("llama", "qwen2", "gpt2"):
        params = ModelParams(base_model=str(build_family(family, corpus, tmp_path_factory.mktemp(family))))
        tokenizer = prepare_tokenizer(params, corpus)
        fmt = prompt_format(tokenizer, params)
        rows, _ = tokenize_rows(tokenizer, fmt, labeled_rows[:6])
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids, attention = pad_batch([r["input_ids"] for r in rows], pad_id)
        targets = torch.tensor([t for r in rows for t in r["hard_targets"]])
        out[family] = (tokenizer, fmt, input_ids, attention, targets)
    out["phi"] = out["llama"]
    return out


def both_paths(model, batch):
    _, fmt, input_ids, attention, _ = batch
    return (step_tag_logits(model, input_ids, attention, fmt),
            step_tag_logits(model, input_ids, attention, fmt, full_logits=True))


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "phi"])
def test_tag_only_logits_equal_the_full_logits(families, family, tie):
    batch = families[family]
    model = tiny_model(family, batch[0], tie)
    with torch.no_grad():
        tag_only, full = both_paths(model, batch)
    assert tag_only.shape == full.shape == (int((batch[2] == batch[1].step_tag_id).sum()), 2)
    assert tag_only.abs().max() > 0.05  # logits of a head that says something, not all zero
    torch.testing.assert_close(tag_only, full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_training_gradients_equal_the_full_logits_path(families, family):
    batch = families[family]
    grads = []
    for full_logits in (False, True):
        model = tiny_model(family, batch[0], tie=False).train()
        _, fmt, input_ids, attention, targets = batch
        step_loss(step_tag_logits(model, input_ids, attention, fmt, full_logits), targets, 2.0).backward()
        grads.append({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() == {name for name, _ in model.named_parameters()}
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=ATOL, rtol=1e-4, msg=name)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_lora_unmerged_and_merged(families, family, tie):
    """peft wraps the model (and a tied head); adapters and trained label rows are made non-trivial on purpose."""
    from peft import LoraConfig, get_peft_model

    batch = families[family]
    fmt = batch[1]
    model = tiny_model(family, batch[0], tie)
    config = LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM",
                        trainable_token_indices=[fmt.step_tag_id, fmt.positive_id])
    wrapped = get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in wrapped.named_parameters():
            if "lora_B" in name or "trainable_tokens_delta" in name:  # LoRA B starts at 0, deltas at the originals
                parameter.normal_(0, 0.5)
        tag_only, full = both_paths(wrapped, batch)
        torch.testing.assert_close(tag_only, full, atol=ATOL, rtol=0)
        merged = wrapped.merge_and_unload()
        torch.testing.assert_close(step_tag_logits(merged, batch[2], batch[3], fmt), full, atol=ATOL, rtol=0)


def test_whole_vocabulary_logits_at_selected_positions_equal_the_model_logits(families):
    """What the zero-shot verifier reads: every token's logit at a few positions."""
    batch = families["qwen2"]
    model = tiny_model("qwen2", batch[0], tie=False)
    input_ids, attention = batch[2], batch[3]
    at = torch.zeros_like(input_ids, dtype=torch.bool)
    at[:, 3] = at[0, 7] = True
    with torch.no_grad():
        selected = label_logits(model, input_ids, attention, at, slice(None))[0]
        full = model(input_ids=input_ids, attention_mask=attention).logits[at]
    torch.testing.assert_close(selected, full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("scaling", [{"final_logit_softcapping": 3.0}, {"logit_scale": 2.5}, {"logits_scaling": 0.25}])
def test_models_that_rescale_their_logits_are_read_as_their_forward_writes_them(families, scaling):
    """Gemma 2's soft-capping, Cohere's scale and Granite's scaling: a parameter of the one scoring path."""
    from transformers import GraniteConfig, GraniteForCausalLM, Gemma2Config, Gemma2ForCausalLM, CohereConfig, \
        CohereForCausalLM

    batch = families["llama"]
    builders = {"final_logit_softcapping": (Gemma2Config, Gemma2ForCausalLM, {"head_dim": 8}),
                "logit_scale": (CohereConfig, CohereForCausalLM, {}), "logits_scaling": (GraniteConfig, GraniteForCausalLM, {})}
    config_class, model_class, extra = builders[next(iter(scaling))]
    torch.manual_seed(0)
    model = model_class(config_class(vocab_size=len(batch[0]), **extra, **TINY, **scaling)).eval()
    with torch.no_grad():
        tag_only, full = both_paths(model, batch)
    assert full.abs().max() > 0.1  # something to compare
    torch.testing.assert_close(tag_only, full, atol=ATOL, rtol=0)
