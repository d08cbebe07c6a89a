"""The PRM itself: tokenizer, base model, step scores from one forward pass.

The score of step t is softmax over the logits of the two label tokens (`+`, `-`) at the
position of step tag t. Training (train.py) and inference (ProcessRewardModel) both go
through `step_tag_logits`, so they can never disagree about where a label lives.
"""

from __future__ import annotations

from pathlib import Path

import torch

from prmflow.config import ModelParams
from prmflow.model.tokenization import Encoded, PromptFormat, encode_candidate, gguf_kwargs, load_prompt_format


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

    def encode(self, solutions: list[tuple[str, list[str]]]) -> list[Encoded]:
        """What `score_batch` feeds the model for each (problem, steps): its ids, the steps cut inside or left
        out, and why nothing could be scored where that is so (tokenization.encode_candidate)."""
        return [encode_candidate(self.tokenizer, self.format, problem, steps) for problem, steps in solutions]

    @torch.no_grad()
    def score_batch(self, solutions: list[tuple[str, list[str]]], batch_size: int = 32,
                    encoded: list[Encoded] | None = None) -> list[list[float]]:
        """P(+) for each scored step of each (problem, steps); trailing steps past the context are left out.

        Solutions are batched in order of length (results come back in input order), so a batch
        pads to a similar length instead of to its longest outlier. `encoded`: `self.encode(solutions)`,
        when the caller already has it.
        """
        encoded = self.encode(solutions) if encoded is None else encoded
        results: list[list[float]] = [[] for _ in solutions]  # unscorable solutions keep []
        order = sorted((i for i, e in enumerate(encoded) if e.num_steps), key=lambda i: len(encoded[i].input_ids))
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
