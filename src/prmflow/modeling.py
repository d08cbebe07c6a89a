"""The PRM itself: tokenizer, base model, step scores from one forward pass.

The score of step t is softmax over the logits of the two label tokens (`+`, `-`) at the
position of step tag t. Training (train.py) and inference (ProcessRewardModel) both go
through `step_tag_logits`, so they can never disagree about where a label lives.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from prmflow.config import ModelParams
from prmflow.tokenization import PromptFormat, encode_solution

PRM_CONFIG = "prm_config.json"
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def train_corpus_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on the corpus, digits split one per token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def gguf_kwargs(params: ModelParams) -> dict:
    """transformers dequantizes a GGUF checkpoint on load; the PRM is then saved as a plain HF model."""
    return {"gguf_file": params.gguf_file} if params.gguf_file else {}


def prepare_tokenizer(params: ModelParams, corpus: list[str]):
    """The base tokenizer (corpus-trained for `builtin`) with the step tag added as one special token."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    if params.base_model == "builtin":
        tokenizer = train_corpus_tokenizer(corpus, params.vocab_size)
    else:
        tokenizer = AutoTokenizer.from_pretrained(params.base_model, **gguf_kwargs(params))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    tokenizer.add_tokens([AddedToken(params.step_tag, special=True, normalized=False)], special_tokens=True)
    return tokenizer


def single_token_id(tokenizer, token: str, field: str) -> int:
    """The id of `token`: a vocabulary entry, or text that encodes to exactly one token.

    Label tokens are only ever read as logit columns, never encoded inside text, so a
    vocabulary entry is enough: sentencepiece tokenizers encode "+" as ["▁", "+"] yet hold "+".
    """
    vocab_id = tokenizer.get_vocab().get(token)
    if vocab_id is not None:
        return vocab_id
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise ValueError(f"{field}: {token!r} must be exactly one token for this tokenizer "
                         f"(a vocabulary entry), got {len(ids)}: {pieces}")
    return ids[0]


def prompt_format(tokenizer, params: ModelParams) -> PromptFormat:
    return PromptFormat(
        step_tag=params.step_tag,
        step_template=params.step_template,
        positive_token=params.positive_token,
        negative_token=params.negative_token,
        max_length=params.max_length,
        step_tag_id=single_token_id(tokenizer, params.step_tag, "model.step_tag"),
        positive_id=single_token_id(tokenizer, params.positive_token, "model.positive_token"),
        negative_id=single_token_id(tokenizer, params.negative_token, "model.negative_token"),
        bos_id=tokenizer.bos_token_id,
        truncate_problem_left=params.truncate_problem_left,
    )


def build_model(params: ModelParams, tokenizer):
    """A small Llama-style model from a config (`builtin`) or any local causal LM, resized for the tag."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if params.base_model == "builtin":
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=params.hidden_size,
            intermediate_size=params.intermediate_size,
            num_hidden_layers=params.num_layers,
            num_attention_heads=params.num_heads,
            num_key_value_heads=params.num_heads,
            max_position_embeddings=params.max_length,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=True,
        )
        return LlamaForCausalLM(config)
    model = AutoModelForCausalLM.from_pretrained(params.base_model, **gguf_kwargs(params))
    if params.gguf_file and getattr(model, "hf_quantizer", None) is not None:
        # GGUF tensors were dequantized to float on load; without the marker the Trainer trains them as-is.
        model.hf_quantizer.remove_quantization_config(model)
    model.resize_token_embeddings(len(tokenizer))
    return model


def step_tag_logits(logits: torch.Tensor, input_ids: torch.Tensor, fmt: PromptFormat) -> torch.Tensor:
    """[num_tags, 2] logits of (+, -) at every step tag, in row-major (solution, step) order."""
    at_tags = logits[input_ids == fmt.step_tag_id]
    return at_tags[:, [fmt.positive_id, fmt.negative_id]]


def step_loss(pair_logits: torch.Tensor, targets: torch.Tensor, negative_weight: float = 1.0) -> torch.Tensor:
    """Soft cross-entropy with target P(+); for hard targets (1.0/0.0) it is plain cross-entropy.

    `negative_weight` scales the `-` term; the sum is divided by the total weight, so for hard
    targets this equals `F.cross_entropy(..., weight=[1, negative_weight])` and at 1.0 the mean.
    """
    log_probs = torch.log_softmax(pair_logits.float(), dim=-1)
    negative = negative_weight * (1 - targets)
    return -(targets * log_probs[:, 0] + negative * log_probs[:, 1]).sum() / (targets + negative).sum()


def save_prompt_format(fmt: PromptFormat, directory: str | Path) -> None:
    Path(directory, PRM_CONFIG).write_text(json.dumps(asdict(fmt), indent=2) + "\n")


def load_prompt_format(directory: str | Path) -> PromptFormat:
    return PromptFormat(**json.loads(Path(directory, PRM_CONFIG).read_text()))


def pad_batch(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence of the batch (dynamic padding)."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        attention[row, : len(seq)] = 1
    return input_ids, attention


class ProcessRewardModel:
    """Scores every step of a solution in one forward pass; batches many solutions with padding.

        prm = ProcessRewardModel("models/prm")
        prm.get_rewards_for_steps("Ava has 3 apples. ...", ["3 + 2 = <<3+2=5>>5", ...])
    """

    def __init__(self, model_name_or_path: str | Path, device: str = "cpu"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = Path(model_name_or_path)
        self.device = device
        self.format = load_prompt_format(self.path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModelForCausalLM.from_pretrained(self.path).to(device).eval()

    @torch.no_grad()
    def score_batch(self, solutions: list[tuple[str, list[str]]], batch_size: int = 32) -> list[list[float]]:
        """P(+) for each scored step of each (problem, steps); trailing steps past the context are left out.

        Solutions are batched in order of length (results come back in input order), so a batch
        pads to a similar length instead of to its longest outlier.
        """
        encoded = [encode_solution(self.tokenizer, self.format, problem, steps) for problem, steps in solutions]
        results: list[list[float]] = [[] for _ in solutions]  # unscorable solutions keep []
        order = sorted((i for i, e in enumerate(encoded) if e is not None), key=lambda i: len(encoded[i].input_ids))
        for start in range(0, len(order), batch_size):
            batch = order[start: start + batch_size]
            input_ids, attention = pad_batch([encoded[i].input_ids for i in batch], self.tokenizer.pad_token_id)
            input_ids = input_ids.to(self.device)
            logits = self.model(input_ids=input_ids, attention_mask=attention.to(self.device)).logits
            flat = torch.softmax(step_tag_logits(logits, input_ids, self.format).float(), -1)[:, 0].tolist()
            for i in batch:
                results[i], flat = flat[: encoded[i].num_steps], flat[encoded[i].num_steps:]
        return results

    def get_rewards_for_steps(self, problem: str, steps: list[str]) -> list[float]:
        return self.score_batch([(problem, steps)])[0]
