"""The PRM itself: tokenizer, base model, step scores from one forward pass.

The score of step t is softmax over the logits of the two label tokens (`+`, `-`) at the
position of step tag t. Training (train.py), evaluation and serving (StepTagScorer), the
search stage's prefix-cached scoring and the public checkpoint formats (public_prms.py) all go
through `label_logits`, so they can never disagree about where a label lives or how its logits
are computed: the tag-only head, the final hidden states at the tags times the label rows of
the output embedding, never the full-vocabulary logits at every position. It keeps no state on
the model (no hooks), so concurrent requests can share one loaded model.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path

import torch

from prmflow.config import EvaluateParams, ModelParams
from prmflow.devices import Placement, load_causal_lm
from prmflow.scoring.formats import refuse_remote_code
from prmflow.scoring.tokenization import Encoded, PromptFormat, encode_candidate, gguf_kwargs, load_prompt_format


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


def _causal_lm(model):
    """The transformers causal LM inside the wrappers training adds: DDP / DataParallel (`.module`), and peft
    (`get_base_model()`, whose LoRA layers sit in place inside it, so calling its parts applies them)."""
    while hasattr(model, "module"):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _head_weight(head):
    """The [vocab, hidden] weight the LM head multiplies by, with what an unmerged peft adapter adds to it.

    peft wraps a head tied to the input embedding in a TrainableTokensWrapper when the step tag's embedding
    trains (train.apply_lora); its weight is the base weight with the trained rows copied in.
    """
    adapter = getattr(head, "token_adapter", None)
    if adapter is not None:  # as the adapter's own forward: the base weight once merged or switched off
        if adapter.merged or adapter.disable_adapters or not adapter.active_adapters:
            return adapter.base_layer.weight
        return adapter.get_merged_weights(adapter.active_adapters)
    if not isinstance(head, torch.nn.Linear):  # e.g. LoRA on the head: its rows are not a slice of one weight
        raise ValueError(f"tag-only head: the LM head is a {type(head).__name__}, not a linear layer; "
                         f"leave it out of the LoRA target modules")
    return head.weight


def _head_output(config, logits: torch.Tensor) -> torch.Tensor:
    """What the model's forward does to its LM head's output: Cohere's `logit_scale` (x), Granite's
    `logits_scaling` (/), Gemma 2's `final_logit_softcapping` (cap * tanh(logits / cap)), in that order."""
    if getattr(config, "logit_scale", None) not in (None, 1, 1.0):
        logits = logits * config.logit_scale
    if getattr(config, "logits_scaling", None) not in (None, 1, 1.0):
        logits = logits / config.logits_scaling
    cap = getattr(config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def final_hidden_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **forward):
    """([batch, length, hidden] final hidden states after the last norm, the model's output).

    The forward goes through `model` itself, so its wrappers (DDP gradient sync, the Trainer's autocast,
    peft) apply, and keeps no state on it: transformers records the selected hidden state (`output_hidden_states=-1`)
    in a per-call context variable, so any number of threads can share one model. The LM head runs on one position
    per row (`logits_to_keep=1`) instead of every position. `forward`: more arguments of the model's forward (a KV
    cache, `use_cache`).
    """
    keep = {"logits_to_keep": 1} if _takes_logits_to_keep(type(_causal_lm(model))) else {}
    output = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=-1, **keep, **forward)
    return output.hidden_states[-1], output


@functools.cache
def _takes_logits_to_keep(lm_class: type) -> bool:
    """Whether the causal LM's forward takes `logits_to_keep` (read once per class, not per forward)."""
    return "logits_to_keep" in inspect.signature(lm_class.forward).parameters


def token_logits(model, hidden: torch.Tensor, token_ids: list[int] | slice) -> torch.Tensor:
    """[n, len(token_ids)] the model's logits of `token_ids` (`slice(None)`: the whole vocabulary) from
    final hidden states [n, hidden].

    The rows `token_ids` of the output embedding (tied or not), plus their bias where the head has one, then
    what the model's forward does to its logits (_head_output: scaling, soft-capping): what the full head gives
    in those columns, without the [n, vocab] product. Computed in the weight's dtype (the Trainer's mixed
    precision keeps float32 weights: this product stays float32).
    """
    lm = _causal_lm(model)
    head = lm.get_output_embeddings()
    rows = _head_weight(head)[token_ids]
    bias = head.bias[token_ids] if getattr(head, "bias", None) is not None else None
    return _head_output(lm.config, torch.nn.functional.linear(hidden.to(rows.dtype), rows, bias))


def label_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, at,
                 label_ids: list[int], **forward) -> tuple[torch.Tensor, object]:
    """([n, len(label_ids)] logits of `label_ids` at the positions `at`, the model's output): the one scoring
    path of every causal-LM PRM here (training, evaluation, search with its KV cache, public checkpoints,
    serving).

    `at`: a [batch, length] bool mask (row-major order) or a (rows, positions) pair of index tensors.
    The tag-only head: final hidden states at those positions times the label rows of the output embedding,
    memory O(n x hidden) instead of O(batch x length x vocab); re-entrant (final_hidden_states).
    """
    hidden, output = final_hidden_states(model, input_ids, attention_mask, **forward)
    return token_logits(model, hidden[at], label_ids), output


def step_tag_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, fmt: PromptFormat,
                    full_logits: bool = False) -> torch.Tensor:
    """[num_tags, 2] logits of (+, -) at every step tag, in row-major (solution, step) order.

    `full_logits=True` reads the same two columns out of the model's full [batch, length, vocab] logits: the
    reference path, kept for the equality tests and the benchmarks (bench/tag_head.py, bench/gpu_check.py).
    """
    at_tags = input_ids == fmt.step_tag_id
    labels = [fmt.positive_id, fmt.negative_id]
    if full_logits:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[at_tags][:, labels]
    return label_logits(model, input_ids, attention_mask, at_tags, labels)[0]


def p_positive(pair_logits: torch.Tensor) -> torch.Tensor:
    """[n] P(+) from [n, 2] logits of (+, -): the softmax over the two label tokens, in float32."""
    return torch.softmax(pair_logits.float(), -1)[:, 0]


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


@dataclass
class Job:
    """One sequence to run and the positions in it whose scores belong to steps of solution `solution`."""

    solution: int
    input_ids: list[int]
    positions: list[int]


def read_jobs(scorer, jobs: list[Job]) -> list[list[float]]:
    """The scores at each job's positions, all `jobs` in one right-padded forward.

    `scorer` has `read(input_ids [B, T], attention [B, T], rows [K], positions [K]) -> [K]` scores, `pad_id`
    and `device` (StepTagScorer, public_prms). Right padding changes no position a job reads (causal).
    """
    input_ids, attention = pad_batch([job.input_ids for job in jobs], scorer.pad_id)
    rows = torch.tensor([row for row, job in enumerate(jobs) for _ in job.positions])
    positions = torch.tensor([p for job in jobs for p in job.positions])
    device = scorer.device
    flat = scorer.read(input_ids.to(device), attention.to(device), rows.to(device), positions.to(device)).tolist()
    out = []
    for job in jobs:
        out.append(flat[: len(job.positions)])
        flat = flat[len(job.positions):]
    return out


@torch.no_grad()
def score_jobs(scorer, jobs: list[Job], num_solutions: int, batch_size: int) -> list[list[float]]:
    """Scores per solution (its jobs' scores in job order; [] for a solution with no job), the jobs run in
    order of length `batch_size` at a time, so a batch pads to a similar length instead of its longest outlier.
    Stable: a solution's per-step jobs (public_prms) are its prefixes, shortest first, so they stay in order."""
    results: list[list[float]] = [[] for _ in range(num_solutions)]
    ordered = sorted(jobs, key=lambda job: len(job.input_ids))
    for start in range(0, len(ordered), batch_size):
        chunk = ordered[start: start + batch_size]
        for job, scores in zip(chunk, read_jobs(scorer, chunk)):
            results[job.solution] += scores
    return results


class StepTagScorer:
    """Scores every step of a solution in one forward pass; batches many solutions with padding.

    The scorer a prmflow checkpoint (`prm_config.json`) loads into: P(+) at each step tag. Evaluation,
    serving and search use it directly; the public API's `prmflow.ProcessRewardModel` (rewards.py) extends it
    with `get_reward`, text splitting and `save`.

        prm = StepTagScorer("models/prm")                      # Placement(): device, dtype "auto"
        prm = StepTagScorer("models/prm", Placement("cpu", "bfloat16"))
        prm.get_rewards_for_steps("Ava has 3 apples. ...", ["3 + 2 = <<3+2=5>>5", ...])
    """

    def __init__(self, model_name_or_path: str | Path, placement: Placement = Placement()):
        from transformers import AutoTokenizer

        self.path = Path(model_name_or_path)
        refuse_remote_code(self.path)
        self.format = load_prompt_format(self.path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = load_causal_lm(self.path, placement)
        self.device = self.model.device

    def encode(self, solutions: list[tuple[str, list[str]]]) -> list[Encoded]:
        """What `score_batch` feeds the model for each (problem, steps): its ids, the steps cut inside or left
        out, and why nothing could be scored where that is so (tokenization.encode_candidate)."""
        return [encode_candidate(self.tokenizer, self.format, problem, steps) for problem, steps in solutions]

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def tag_positions(self, input_ids: list[int]) -> list[int]:
        """Where the step tags stand in `input_ids`: the positions whose P(+) are the step scores."""
        return [p for p, t in enumerate(input_ids) if t == self.format.step_tag_id]

    def jobs(self, encoded: list[Encoded]) -> list[Job]:
        """One job per scorable solution: its ids, read at its step tags."""
        return [Job(i, e.input_ids, self.tag_positions(e.input_ids)) for i, e in enumerate(encoded) if e.num_steps]

    def read(self, input_ids, attention, rows, positions) -> torch.Tensor:
        """[K] P(+) at (rows, positions) of a right-padded batch (read_jobs).

        No attention mask: in a causal LM no position before a row's padding attends to it, so every position
        read is what the masked forward gives (to the rounding of another kernel), and without a mask sdpa runs
        its causal kernel instead of materialising a [batch, 1, length, length] mask (~10% less forward time for
        a batch of 16 held-out solutions on a CPU: bench/results/scoring_forward.json)."""
        labels = [self.format.positive_id, self.format.negative_id]
        return p_positive(label_logits(self.model, input_ids, None, (rows, positions), labels)[0])

    def score_batch(self, solutions: list[tuple[str, list[str]]], batch_size: int = EvaluateParams.batch_size,
                    encoded: list[Encoded] | None = None) -> list[list[float]]:
        """P(+) for each scored step of each (problem, steps); trailing steps past the context are left out.

        Solutions are batched in order of length (results come back in input order), so a batch
        pads to a similar length instead of to its longest outlier. `encoded`: `self.encode(solutions)`,
        when the caller already has it.
        """
        encoded = self.encode(solutions) if encoded is None else encoded
        return score_jobs(self, self.jobs(encoded), len(solutions), batch_size)

    def get_rewards_for_steps(self, problem: str, steps: list[str]) -> list[float]:
        return self.score_batch([(problem, steps)])[0]

    @torch.no_grad()
    def score_extensions(self, problem: str, prefix: list[str], last_steps: list[str]
                         ) -> tuple[list[list[float]], int] | None:
        """(step scores of `prefix + [step]` for each of `last_steps`, tokens run) with the prefix read once, or
        None when one of them does not fit the context whole.

        KV-cache prefix scoring: the prefix's keys and values are computed once, repeated for each extension,
        and each extension runs only its new step's tokens. Exact for a causal PRM: a step's score depends on
        nothing after it, and encode_solution encodes a prefix as the start of the longer solution.

            prm.score_extensions("2+3?", ["2+3=5"], ["The answer is 5.", "So 6."])
            -> ([[0.97, 0.95], [0.97, 0.12]], 31)     # the prefix's tokens once, then each last step's
        """
        from prmflow.scoring.tokenization import encode_solution

        fmt, model = self.format, self.model
        full = [encode_solution(self.tokenizer, fmt, problem, prefix + [step]) for step in last_steps]
        if any(e is None or e.num_steps != len(prefix) + 1 for e in full):
            return None
        tags = self.tag_positions(full[0].input_ids)
        head = full[0].input_ids[:tags[len(prefix) - 1] + 1]  # through the prefix's last step tag
        labels = [fmt.positive_id, fmt.negative_id]
        head_ids = torch.tensor([head], device=self.device)
        head_logits, out = label_logits(model, head_ids, None, head_ids == fmt.step_tag_id, labels, use_cache=True)
        cache = out.cache
        cache.batch_repeat_interleave(len(full))
        tail_ids, tail_mask = pad_batch([e.input_ids[len(head):] for e in full], self.pad_id)
        attention = torch.cat([torch.ones(len(full), len(head), dtype=torch.long), tail_mask], dim=1)
        tail_ids = tail_ids.to(self.device)  # each tail ends with its one step tag: one row each, in order
        tail_logits = label_logits(model, tail_ids, attention.to(self.device), tail_ids == fmt.step_tag_id, labels,
                                   cache=cache)[0]
        head_scores = p_positive(head_logits).tolist()
        scores = [head_scores + [score] for score in p_positive(tail_logits).tolist()]
        return scores, len(head) + int(tail_mask.sum())
