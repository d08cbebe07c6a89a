"""A frozen prefix: train only the top layers of a causal-LM PRM over cached hidden states of the lower ones.

    states = prefix_states(model, input_ids, frozen_layers)          # once per solution: [length, hidden] bf16
    report = train_top(model, examples, fmt, frozen_layers=24, ...)  # epochs over the cached states

The bottom `frozen_layers` decoder layers (and the input embedding) never change, so their output at every
token position is computed once per training solution and reused in every epoch; each optimizer step then
runs forward and backward through the layers above only, the final norm and the two label rows of the output
head (W[+], W[-]). An epoch costs (layers - frozen_layers) / layers of a full fine-tuning epoch, and the one
prefix pass frozen_layers / layers of one forward. `frozen_layers` = the model's depth is a frozen base with a
trained linear head on its final hidden states.

The trained model stays a causal LM in the step-tag format: the same weights as the base below the frozen
boundary, trained weights above, so StepTagScorer, `mlflow models serve` and vLLM's pooling runner score it
unchanged. An output head tied to the input embedding is untied first (`untie_output_head`): the label rows are
trained, and tied they would change the embedding of `+` and `-` wherever those appear in text, below the
cached boundary.

With `pairwise_weight` > 0 each optimizer step holds whole problems (examples sharing a "group") and adds a
within-problem ranking term (`within_problem_pair_loss`): a PRM for best-of-N is judged by how it orders the
candidates of one problem, and per-step soft labels alone mostly teach what differs between problems (their
difficulty, their style), which a within-problem ranking never sees.

Source: the frozen-feature reuse of "feature extraction" transfer learning (e.g. Howard & Ruder 2018's gradual
unfreezing starts from it); the tag-only head is modeling.label_logits.
"""

from __future__ import annotations

import contextlib
import math
import random
import time

import torch

from prmflow.scoring.modeling import _causal_lm, step_loss, token_logits
from prmflow.scoring.tokenization import PromptFormat


def decoder_of(model):
    """The decoder stack (`.layers`, `.norm`) inside a causal LM (Llama, Qwen2, Mistral, Gemma 3 text, ...)."""
    decoder = _causal_lm(model).get_decoder()
    if not hasattr(decoder, "layers") or not hasattr(decoder, "norm"):
        raise ValueError(f"train.frozen_layers: {type(decoder).__name__} has no `layers` list and final `norm`; "
                         f"a frozen prefix needs a decoder-only stack")
    return decoder


def depth(model) -> int:
    """The number of decoder layers."""
    return len(decoder_of(model).layers)


def keep_layers(model, keep: int) -> None:
    """Cut the model to its first `keep` decoder layers (a shallower student: every forward, training and
    serving, costs keep / layers of the base's); the final norm and head stay. Raises ValueError when `keep` is
    not in [1, depth]."""
    decoder, layers = decoder_of(model), depth(model)
    if not 1 <= keep <= layers:
        raise ValueError(f"train.keep_layers: {keep} is not between 1 and the model's {layers} layers")
    decoder.layers = torch.nn.ModuleList(list(decoder.layers)[:keep])
    for config in {id(c): c for c in (_causal_lm(model).config, _causal_lm(model).config.get_text_config())}.values():
        config.num_hidden_layers = keep
        if getattr(config, "layer_types", None):
            config.layer_types = list(config.layer_types)[:keep]


@contextlib.contextmanager
def decoder_span(model, start: int, stop: int | None, final_norm: bool):
    """The decoder runs only its layers [start, stop) (and its final norm only if `final_norm`) while inside.

    The decoder's own forward then builds the causal mask and rotary position embeddings as always, so the span
    from `inputs_embeds` (a lower span's output) continues exactly where the lower span stopped.
    """
    decoder = decoder_of(model)
    layers, norm = decoder.layers, decoder.norm
    decoder.layers = torch.nn.ModuleList(list(layers)[start:stop])
    if not final_norm:
        decoder.norm = torch.nn.Identity()
    try:
        yield decoder
    finally:
        decoder.layers, decoder.norm = layers, norm


def untie_output_head(model) -> None:
    """Give the output head its own copy of the input embedding, so training its label rows leaves the input
    embedding (below the frozen boundary) as it is; saved as `tie_word_embeddings: false`."""
    lm = _causal_lm(model)
    head, embedding = lm.get_output_embeddings(), lm.get_input_embeddings()
    if head.weight is embedding.weight or head.weight.data_ptr() == embedding.weight.data_ptr():
        head.weight = torch.nn.Parameter(embedding.weight.detach().clone())
    for config in {id(lm.config): lm.config, id(lm.config.get_text_config()): lm.config.get_text_config()}.values():
        config.tie_word_embeddings = False


def freeze_prefix(model, frozen_layers: int, fmt: PromptFormat) -> list[torch.nn.Parameter]:
    """Freeze everything but the layers above `frozen_layers`, the final norm and the output head; the head is
    untied first and its two label rows start equal (their mean), so every tag starts at P(+) = 0.5 and the head
    learns the labels instead of first unlearning the base's preference between the `+` and `-` tokens (20+ nats
    on SmolLM2). Returns the trainable parameters. Raises ValueError when `frozen_layers` is not in [1, depth]."""
    layers = depth(model)
    if not 1 <= frozen_layers <= layers:
        raise ValueError(f"train.frozen_layers: {frozen_layers} is not between 1 and the model's {layers} layers")
    untie_output_head(model)
    with torch.no_grad():
        rows = _causal_lm(model).get_output_embeddings().weight
        rows[[fmt.positive_id, fmt.negative_id]] = rows[[fmt.positive_id, fmt.negative_id]].mean(0)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    decoder = decoder_of(model)
    trained = [*decoder.layers[frozen_layers:].parameters(), *decoder.norm.parameters(),
               *_causal_lm(model).get_output_embeddings().parameters()]
    for parameter in trained:
        parameter.requires_grad_(True)
    return trained


def autocast(dtype):
    """bf16/fp16 autocast on the CPU (the weights stay float32), or nothing for float32."""
    if dtype in (torch.bfloat16, torch.float16):
        return torch.autocast("cpu", dtype=dtype)
    return contextlib.nullcontext()


@torch.no_grad()
def prefix_states(model, input_ids: list[int], frozen_layers: int, dtype=torch.bfloat16) -> torch.Tensor:
    """[length, hidden] the output of the first `frozen_layers` decoder layers at every position of one
    sequence, stored in `dtype` (bf16: 2 bytes per value)."""
    with decoder_span(model, 0, frozen_layers, final_norm=False) as decoder, autocast(dtype):
        hidden = decoder(input_ids=torch.tensor([input_ids])).last_hidden_state[0]
    return hidden.to(dtype)


def top_pair_logits(model, states: torch.Tensor, at_tags: torch.Tensor, fmt: PromptFormat,
                    frozen_layers: int) -> torch.Tensor:
    """[num_tags, 2] logits of (+, -) at the tags of one sequence, from its cached prefix states [length, hidden]:
    the layers above `frozen_layers`, the final norm and the label rows of the head (modeling.token_logits)."""
    with decoder_span(model, frozen_layers, None, final_norm=True) as decoder:
        hidden = decoder(inputs_embeds=states[None].float()).last_hidden_state[0]
    return token_logits(model, hidden[at_tags], [fmt.positive_id, fmt.negative_id])


def within_problem_pair_loss(logits: list[torch.Tensor], targets: list[list[float]], groups: list,
                             margin: float) -> torch.Tensor | None:
    """Bradley-Terry loss on the solution scores of candidates of the same problem, or None without a pair.

    `logits`: per candidate [num_tags, 2] (+, -) logits; its solution score is the soft minimum
    (-logsumexp(-x)) of its steps' log-odds, a smooth stand-in for the min aggregation best-of-N ranks by.
    `targets`: per candidate its steps' teacher P(+); the teacher's solution score is their minimum. For each pair
    of one `groups` value whose teacher scores differ by more than `margin`, the loss is
    softplus(-(s_better - s_worse)), averaged over the pairs. Source: RankNet / Bradley-Terry pairwise ranking
    (Burges et al. 2005), applied within a problem as outcome reward models rank a problem's candidates.
    """
    solution = [-torch.logsumexp(-(pair[:, 0] - pair[:, 1]).float(), dim=0) for pair in logits]
    teacher = [min(t) for t in targets]
    terms = [torch.nn.functional.softplus(solution[j] - solution[i])
             for i in range(len(logits)) for j in range(len(logits))
             if groups[i] == groups[j] and teacher[i] - teacher[j] > margin]
    return torch.stack(terms).mean() if terms else None


def train_top(model, examples: list[dict], fmt: PromptFormat, *, frozen_layers: int, epochs: float,
              batch_size: int, learning_rate: float, weight_decay: float, warmup_ratio: float,
              negative_class_weight: float, seed: int, dtype=torch.bfloat16, progress=None,
              pairwise_weight: float = 0.0, pairwise_margin: float = 0.1) -> dict:
    """Train `model` in place: prefix states of every example once, then `epochs` passes over them (AdamW, linear
    warmup, cosine decay; one optimizer step per `batch_size` solutions, each run at its own length, no padding).

    `examples`: {"input_ids": [int], "targets": [P(+) per step tag]}, and "group" (its problem) when
    `pairwise_weight` > 0: then a step holds whole groups (at least `batch_size` solutions) and its loss adds
    `pairwise_weight` x within_problem_pair_loss. `dtype`: autocast and cache precision (float32: no autocast).
    `progress(stage, done, total)` is called now and then. Returns seconds and tokens of the prefix pass and of
    training, and the mean loss. Raises ValueError for a bad `frozen_layers`, an example whose tag count differs
    from its targets, or a missing "group" when `pairwise_weight` > 0.
    """
    from transformers import get_cosine_schedule_with_warmup

    for index, example in enumerate(examples):
        tags = sum(1 for i in example["input_ids"] if i == fmt.step_tag_id)
        if tags != len(example["targets"]):
            raise ValueError(f"training example {index}: {tags} step tags but {len(example['targets'])} targets")
        if pairwise_weight > 0 and "group" not in example:
            raise ValueError(f"training example {index}: no 'group' (its problem), which pairwise_weight needs")
    trained = freeze_prefix(model, frozen_layers, fmt)
    model.eval()  # no dropout in the frozen part's cached pass; the top layers train without it too
    started = time.perf_counter()
    cached = []
    for index, example in enumerate(examples):
        cached.append(prefix_states(model, example["input_ids"], frozen_layers, dtype))
        if progress:
            progress("prefix", index + 1, len(examples))
    prefix_seconds = time.perf_counter() - started
    steps = max(1, math.ceil(epochs * len(examples) / batch_size))
    optimizer = torch.optim.AdamW(trained, lr=learning_rate, weight_decay=weight_decay)
    schedule = get_cosine_schedule_with_warmup(optimizer, round(warmup_ratio * steps), steps)
    groups = [e.get("group", i) for i, e in enumerate(examples)] if pairwise_weight > 0 else list(range(len(examples)))
    order = _epoch_batches(groups, batch_size, seed)
    losses, pair_losses, tokens = [], [], 0
    started = time.perf_counter()
    for step in range(steps):
        batch = next(order)
        with autocast(dtype):
            per_example = [top_pair_logits(model, cached[i], torch.tensor(examples[i]["input_ids"]) ==
                                           fmt.step_tag_id, fmt, frozen_layers) for i in batch]
        targets = torch.tensor([t for i in batch for t in examples[i]["targets"]], dtype=torch.float)
        loss = step_loss(torch.cat(per_example), targets, negative_class_weight)
        if pairwise_weight > 0:
            pair_loss = within_problem_pair_loss(per_example, [examples[i]["targets"] for i in batch],
                                                 [groups[i] for i in batch], pairwise_margin)
            if pair_loss is not None:
                loss = loss + pairwise_weight * pair_loss
                pair_losses.append(pair_loss.item())
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        tokens += sum(len(examples[i]["input_ids"]) for i in batch)
        if progress:
            progress("train", step + 1, steps)
    train_seconds = time.perf_counter() - started
    prefix_tokens = sum(len(e["input_ids"]) for e in examples)
    return {"frozen_layers": frozen_layers, "layers": depth(model), "optimizer_steps": steps,
            "train_loss": sum(losses) / len(losses), "final_loss": sum(losses[-10:]) / len(losses[-10:]),
            "pair_loss": sum(pair_losses) / len(pair_losses) if pair_losses else None,
            "prefix_seconds": prefix_seconds, "prefix_tokens": prefix_tokens,
            "prefix_tokens_per_second": prefix_tokens / prefix_seconds if prefix_seconds else math.nan,
            "train_seconds": train_seconds, "train_tokens": tokens,
            "train_tokens_per_second": tokens / train_seconds if train_seconds else math.nan,
            "cache_mb": sum(s.numel() * s.element_size() for s in cached) / 2**20,
            "trainable_parameters": sum(p.numel() for p in trained)}


def _epoch_batches(groups: list, batch_size: int, seed: int):
    """Batches of example indices, forever: each epoch a fresh seeded shuffle of the groups (`groups[i]` is example
    i's), whole groups taken until a batch holds at least `batch_size` examples. With one group per example this is
    a plain shuffle cut into `batch_size` slices."""
    members: dict = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    rng = random.Random(seed)
    batch: list[int] = []
    while True:
        order = list(members)
        rng.shuffle(order)
        for group in order:
            batch += members[group]
            if len(batch) >= batch_size:
                yield batch
                batch = []
