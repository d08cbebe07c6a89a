"""The `transformers` rollout policy: batched sampling from a local causal LM.

Prompts and completions use the text format of completion_text.py; generation stops at the
final-answer line (`next_steps`: at the end of the first step's line) or at EOS or
`max_new_tokens`. Prompts of one batch are left-padded (so every row's new tokens start at the same
column) and sampled in one `generate` call. The true first error of a real model is unknown:
`first_slip` is None.
"""

from __future__ import annotations

import random
import re

from prmflow.config import LabelParams
from prmflow.devices import Placement, load_causal_lm
from prmflow.labeling.completion_text import FINAL_ANSWER_LINE, STEP_LINE, finish, finish_step, prompt_text
from prmflow.labeling.policy import Continuation


class _StopAt:
    """Per-row stop: the row's new text holds `pattern` (a complete final-answer line, or one step's line)."""

    def __init__(self, tokenizer, prompt_width: int, pattern: re.Pattern):
        self.tokenizer, self.prompt_width, self.pattern = tokenizer, prompt_width, pattern

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width:], skip_special_tokens=True)
        return torch.tensor([bool(self.pattern.search(t)) for t in texts], device=input_ids.device)


class TransformersPolicy:
    """The causal LM in `params.model_dir` (or its `params.gguf_file`) on `placement`, sampling with the `label`
    section's max_new_tokens, temperature and batch_size."""

    name = "transformers"

    def __init__(self, params: LabelParams, placement: Placement):
        from transformers import AutoTokenizer

        # A GGUF file holds the tokenizer and the (dequantized on load) weights, as for modeling.build_model.
        load = {"gguf_file": params.gguf_file} if params.gguf_file else {}
        self.tokenizer = AutoTokenizer.from_pretrained(params.model_dir, **load)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = load_causal_lm(params.model_dir, placement, **load)
        self.max_new_tokens, self.temperature = params.max_new_tokens, params.temperature
        self.batch_size = params.batch_size
        self.answer_reading = params.answer_reading
        self.generate_calls = 0
        self.generated_tokens = 0

    def sample_trajectory(self, problem: dict, rng: random.Random) -> Continuation:
        return self.complete(problem, [[]], rng)[0]

    def complete(self, problem: dict, prefixes: list[list[str]], rng: random.Random) -> list[Continuation]:
        out = []
        for generated, tokens in self._generate_all(problem, prefixes, rng, FINAL_ANSWER_LINE):
            steps, answer = finish(generated, self.answer_reading)
            out.append(Continuation(steps=steps, final_answer=answer, first_slip=None, tokens=tokens))
        return out

    def next_steps(self, problem: dict, prefixes: list[list[str]], rng: random.Random) -> list[Continuation]:
        out = []
        for generated, tokens in self._generate_all(problem, prefixes, rng, STEP_LINE):
            step, answer, finished = finish_step(generated, self.answer_reading)
            out.append(Continuation(steps=step, final_answer=answer, first_slip=None, finished=finished,
                                    tokens=tokens))
        return out

    def _generate_all(self, problem: dict, prefixes: list[list[str]], rng: random.Random,
                      stop: re.Pattern) -> list[tuple[str, int]]:
        """(generated text, generated tokens) of every prefix, `batch_size` prompts per generate call."""
        out = []
        for start in range(0, len(prefixes), self.batch_size):
            out += self._generate([prompt_text(problem, prefix) for prefix in prefixes[start:start + self.batch_size]],
                                  rng, stop)
        return out

    def _generate(self, prompts: list[str], rng: random.Random, stop: re.Pattern) -> list[tuple[str, int]]:
        import torch
        from transformers import StoppingCriteriaList

        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.model.device)
        width = inputs["input_ids"].shape[1]
        sampling = {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else {
            "do_sample": False}
        torch.manual_seed(rng.getrandbits(63))  # the per-problem stream decides the samples
        with torch.no_grad():
            output = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([_StopAt(self.tokenizer, width, stop)]), **sampling)
        new_tokens = output[:, width:]
        counts = (new_tokens != self.tokenizer.pad_token_id).sum(dim=1).tolist()
        self.generate_calls += 1
        self.generated_tokens += sum(counts)
        return list(zip(self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True), counts))
