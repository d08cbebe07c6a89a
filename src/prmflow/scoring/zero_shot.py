"""The zero-shot baseline: ask a causal LM whether each step is correct.

    scorer = ZeroShotVerifier.untrained_base(model_params, "models/prm", seed=1234)
    scorer.score_batch([(problem, steps)])   # -> P(Yes) / (P(Yes) + P(No)) per step

After the problem and steps 1..t comes `Is this step correct? Yes or No: `; the reward of step t
is log p(Yes) - log p(No), reported as sigmoid(reward) = P(Yes) / (P(Yes) + P(No)) so that it
sits on the PRM's [0, 1] scale (same thresholds, AUROC, calibration). A causal model cannot see
a question placed after step t without also seeing only steps 1..t, so each prefix is its own
sequence; prefixes are scored in padded batches. "Yes" and "No" may be several tokens: each
answer's log-probability is the sum over its tokens (teacher forcing).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from prmflow.config import EvaluateParams, ModelParams
from prmflow.data.step_text import step_line
from prmflow.devices import Placement, place
from prmflow.scoring.modeling import build_model, label_logits, pad_batch
from prmflow.scoring.tokenization import load_prompt_format

VERIFICATION_PROMPT = "Is this step correct? Yes or No: "
ANSWERS = ("Yes", "No")


class ZeroShotVerifier:
    """Scores steps with a verification prompt; the same `score_batch` interface as StepTagScorer."""

    def __init__(self, model, tokenizer, max_length: int, bos_id: int | None, step_template: str,
                 prompt: str = VERIFICATION_PROMPT):
        self.model = model.eval()
        self.prompt = prompt
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.bos_id = bos_id
        self.step_template = step_template
        self.answer_ids = [tokenizer.encode(a, add_special_tokens=False) for a in ANSWERS]

    @classmethod
    def untrained_base(cls, params: ModelParams, prm_dir: str | Path, seed: int) -> ZeroShotVerifier:
        """The model the PRM started from: the builtin model rebuilt with the training seed, or the HF base,
        on `params.device` in `params.dtype`.

        The PRM's saved tokenizer is the base tokenizer plus the step tag, which this prompt never uses.
        """
        from transformers import AutoTokenizer, set_seed

        fmt = load_prompt_format(prm_dir)
        tokenizer = AutoTokenizer.from_pretrained(prm_dir)
        set_seed(seed)  # as train.main does right before build_model: the same initial weights
        model = place(build_model(params, tokenizer), Placement.of(params))
        return cls(model, tokenizer, fmt.max_length, fmt.bos_id, fmt.step_template)

    def prefix_sequences(self, problem: str, steps: list[str], final_only: bool = False) -> list[list[int]]:
        """One token sequence per step prefix, ending with the prompt; stops at the first that does not fit.

        `final_only` keeps just the whole solution's sequence (an outcome question), if it fits.
        """
        context = ([self.bos_id] if self.bos_id is not None else []) + \
            self.tokenizer.encode(problem + "\n", add_special_tokens=False)
        prompt = self.tokenizer.encode("\n" + self.prompt, add_special_tokens=False)
        longest_answer = max(len(a) for a in self.answer_ids)
        sequences = []
        for index, step in enumerate(steps):
            piece = step_line(self.step_template, index, step)
            context = context + self.tokenizer.encode(piece, add_special_tokens=False)
            if len(context) + len(prompt) + longest_answer > self.max_length:
                break
            if not final_only or index == len(steps) - 1:
                sequences.append(context + prompt)
        return sequences

    @torch.no_grad()
    def answer_log_probs(self, sequences: list[list[int]], batch_size: int) -> list[list[float]]:
        """[log p(answer | sequence) for each answer] per sequence.

        The vocabulary's log-softmax is taken only at the positions that predict an answer token
        (modeling.label_logits with the whole vocabulary), not at every position of the batch.
        """
        jobs = [(row, a, seq + ids) for row, seq in enumerate(sequences) for a, ids in enumerate(self.answer_ids)]
        jobs.sort(key=lambda job: len(job[2]))  # batches of similar length waste little on padding
        out = [[0.0] * len(self.answer_ids) for _ in sequences]
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start: start + batch_size]
            input_ids, attention = pad_batch([ids for _, _, ids in chunk], pad_id)
            predicting = torch.zeros_like(input_ids, dtype=torch.bool)
            for b, (_, a, ids) in enumerate(chunk):  # each answer token is predicted from the position before it
                predicting[b, len(ids) - len(self.answer_ids[a]) - 1: len(ids) - 1] = True
            device = self.model.device
            input_ids, predicting = input_ids.to(device), predicting.to(device)
            logits = label_logits(self.model, input_ids, attention.to(device), predicting, slice(None))[0]
            log_probs = torch.log_softmax(logits.float(), -1)
            position = 0  # rows of `logits` run in (sequence, position) order, as the answers' tokens do
            for row, a, _ in chunk:
                answer = self.answer_ids[a]
                out[row][a] = sum(log_probs[position + k, tok].item() for k, tok in enumerate(answer))
                position += len(answer)
        return out

    def log_odds_batch(self, solutions: list[tuple[str, list[str]]],
                       batch_size: int = EvaluateParams.batch_size,
                       final_only: bool = False) -> list[list[float]]:
        """log p(Yes) - log p(No) per scored step (or for the whole solution); past the context: left out."""
        per_solution = [self.prefix_sequences(problem, steps, final_only) for problem, steps in solutions]
        flat = self.answer_log_probs([s for seqs in per_solution for s in seqs], batch_size)
        log_odds, position = [], 0
        for seqs in per_solution:
            log_odds.append([yes - no for yes, no in flat[position: position + len(seqs)]])
            position += len(seqs)
        return log_odds

    def score_batch(self, solutions: list[tuple[str, list[str]]],
                    batch_size: int = EvaluateParams.batch_size) -> list[list[float]]:
        """sigmoid(log p(Yes) - log p(No)) per scored step (via tanh: no overflow); past the context: left out."""
        log_odds = self.log_odds_batch(solutions, batch_size)
        return [[0.5 * (1 + math.tanh(r / 2)) for r in rewards] for rewards in log_odds]
