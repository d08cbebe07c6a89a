"""Solution text to token ids: the prompt format shared by training and inference, and the tokenizer.

The text is the problem, then each step rendered with `model.step_template` and followed by
the step tag: a single special token, or, when `model.base_model` is a Math-Shepherd-style checkpoint
(formats.py), that checkpoint's own ` ки` (read at its last token) and its `+`/`-` label tokens.
Every piece is encoded on its own and the ids are concatenated, so a step can never merge with its
tag or its neighbour, and the number of tags always equals the number of labels. Truncation drops
trailing steps whole and counts them; with `model.truncate_problem_left` a problem too long for its
first step keeps its tail instead of dropping the example. The `PromptFormat` (tag and label ids,
template, context) is saved as `prm_config.json` beside every trained model.

Scoring (`encode_candidate`) differs from training data (`encode_solution`) in one place only: a
step longer than all the room the problem leaves, which no dropping of earlier steps could make fit
(a generator's repetition loop), keeps its start and its tag and is reported in `truncated_steps`;
when such a step is the first, a problem that would leave it under half the context keeps its tail
(with `model.truncate_problem_left`). Training drops that example instead, since the label of a
step cut in half is not known. What neither can score carries a `reason`.

Both read the text of a solution as text only: special-token text in a problem or a step (`<step>`,
`<s>`) is tokenized as characters and a tag that is an ordinary token is taken out, so a candidate
can never create or move a tag (its own or, in a batch, anyone's); `Encoded.neutralised` names the
fields where that happened. Text is cut to what the context can hold before it is tokenized.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prmflow.config import ModelParams
from prmflow.data.step_text import MATH_SHEPHERD_TAG, step_line
from prmflow.scoring.formats import PRM_CONFIG, label_token_id, recognised_format

COUNTS_FILE = "counts.json"  # in data/tokenized: what truncation dropped, per split
MIN_CUT_TOKENS = 8  # a step cut inside keeps at least this many tokens (its tag included), else it is left out
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


@dataclass(frozen=True)
class PromptFormat:
    """Everything inference must share with training; saved as `prm_config.json` beside the model."""

    step_tag: str
    step_template: str
    positive_token: str
    negative_token: str
    max_length: int
    step_tag_id: int
    positive_id: int
    negative_id: int
    bos_id: int | None = None
    truncate_problem_left: bool = False
    tag_lead_ids: tuple[int, ...] = ()  # a multi-token tag's ids before its last one (where labels are read)

    def render_step(self, index: int, step: str) -> str:
        return self.step_template.format(i=index + 1, step=step)


@dataclass
class Encoded:
    input_ids: list[int]
    num_steps: int  # steps kept; the first num_steps labels belong to this sequence
    dropped_steps: int  # whole trailing steps left out
    truncated_problem: bool = False  # the problem lost its head to make room for the first step
    truncated_steps: list[int] = field(default_factory=list)  # indices of steps cut inside (scoring only)
    reason: str | None = None  # why no step could be kept (num_steps == 0)
    neutralised: list[str] = field(default_factory=list)  # fields whose special-token text was read as plain text


@functools.cache
def _special_texts(tokenizer) -> tuple[str, ...]:
    """The text of every special token the tokenizer would turn into its id (the step tag, BOS, pad, ...)."""
    added = [token.content for token in tokenizer.added_tokens_decoder.values() if token.special]
    return tuple(sorted(set(added) | set(tokenizer.all_special_tokens), key=len, reverse=True))


@functools.cache
def _max_chars_per_token(tokenizer) -> int:
    """An upper bound on the characters one token covers: its longest vocabulary entry (byte-level and
    sentencepiece entries are at least as long as the text they stand for)."""
    return max(len(token) for token in tokenizer.get_vocab())


def _text_ids(tokenizer, fmt: PromptFormat, text: str, keep_tail: bool = False) -> tuple[list[int], bool]:
    """(ids of `text` read as plain text, whether it held special-token or step-tag text).

    Text is cut to what `fmt.max_length` tokens can cover before it is tokenized (its tail with `keep_tail`),
    so the cost of a piece is bounded by the context, not by its size. Special-token text (the step tag,
    `<s>`, ...) is tokenized as ordinary characters (`split_special_tokens`), and a step tag that is an
    ordinary token (Math-Shepherd's ` ки`) is taken out, so no text can create or move a tag.
    """
    limit = fmt.max_length * _max_chars_per_token(tokenizer)
    if len(text) > limit:
        text = text[-limit:] if keep_tail else text[:limit]
    ids = tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
    neutralised = any(special in text for special in _special_texts(tokenizer))
    if fmt.step_tag_id in ids:
        ids, neutralised = [i for i in ids if i != fmt.step_tag_id], True
    return ids, neutralised


def _step_ids(tokenizer, fmt: PromptFormat, index: int, step: str) -> tuple[list[int], bool]:
    ids, neutralised = _text_ids(tokenizer, fmt, step_line(fmt.step_template, index, step))
    return ids + [*fmt.tag_lead_ids, fmt.step_tag_id], neutralised


def unicode_fault(problem: str, steps: list[str]) -> str | None:
    """Why a field cannot be tokenized (a lone surrogate, which JSON's `\\ud800` escapes can carry), or None."""
    for name, text in [("problem", problem)] + [(f"steps[{i}]", step) for i, step in enumerate(steps)]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            return f"{name}: not valid Unicode text ({err.reason} at character {err.start})"
    return None


def _encode(tokenizer, fmt: PromptFormat, problem: str, steps: list[str], cut_long_steps: bool) -> Encoded:
    """The ids of `problem` and as many steps as fit in `fmt.max_length`; see the module docstring."""
    bad = unicode_fault(problem, steps)
    if bad:
        return Encoded([], 0, len(steps), reason=bad)
    ids = [fmt.bos_id] if fmt.bos_id is not None else []
    problem_ids, problem_neutralised = _text_ids(tokenizer, fmt, problem + "\n", keep_tail=fmt.truncate_problem_left)
    neutralised = ["problem"] if problem_neutralised else []
    truncated = False
    if fmt.truncate_problem_left and steps:
        # Keep the problem's tail (its question) rather than lose the whole example.
        room = fmt.max_length - len(ids) - len(_step_ids(tokenizer, fmt, 0, steps[0])[0])
        if room <= 0 and cut_long_steps:  # the first step alone overfills the context: it gets half
            room = (fmt.max_length - len(ids)) // 2
        if 0 < room < len(problem_ids):
            problem_ids, truncated = problem_ids[-room:], True
    ids += problem_ids
    after_problem = fmt.max_length - len(ids)  # the most tokens any one step can have here
    kept, cut = 0, []
    for index, step in enumerate(steps):
        step_ids, step_neutralised = _step_ids(tokenizer, fmt, index, step)
        room = fmt.max_length - len(ids)
        if len(step_ids) > room:
            if cut_long_steps and len(step_ids) > after_problem and room >= MIN_CUT_TOKENS:
                ids += step_ids[: room - 1] + [fmt.step_tag_id]
                kept += 1
                cut.append(index)
                neutralised += [f"steps[{index}]"] * step_neutralised
            break
        ids += step_ids
        kept += 1
        neutralised += [f"steps[{index}]"] * step_neutralised
    reason = None
    if kept == 0:
        hint = "" if fmt.truncate_problem_left else "; model.truncate_problem_left would keep the problem's tail"
        reason = (f"the problem leaves {max(after_problem, 0)} of the model's {fmt.max_length} tokens, too few for "
                  f"its first step{hint}" if steps else "no steps")
    return Encoded(input_ids=ids, num_steps=kept, dropped_steps=len(steps) - kept, truncated_problem=truncated,
                   truncated_steps=cut, reason=reason, neutralised=neutralised)


def encode_solution(tokenizer, fmt: PromptFormat, problem: str, steps: list[str]) -> Encoded | None:
    """Token ids of one training solution; None when not even the (possibly left-truncated) problem and its
    first whole step fit."""
    encoded = _encode(tokenizer, fmt, problem, steps, cut_long_steps=False)
    return encoded if encoded.num_steps else None


def encode_candidate(tokenizer, fmt: PromptFormat, problem: str, steps: list[str]) -> Encoded:
    """Token ids of one solution to score: a step too long for any context is cut inside and listed in
    `truncated_steps`; `num_steps == 0` with a `reason` when nothing can be scored.

    With the tests' tiny PRM tokenizer (see tokenize_row), the solution of tokenize_row's example encodes to the
    same ids, and its step scores are P(+) at the two `<step>` ids:

        encode_candidate(tokenizer, fmt, "Ava has 3 apples.", ["3 + 2 = 5", "5 - 2 = 3"])
        -> Encoded(input_ids=[1, 289, 68, ..., 24, 295, 202, ..., 22, 295], num_steps=2, dropped_steps=0,
                   truncated_problem=False, truncated_steps=[], reason=None, neutralised=[])
    """
    return _encode(tokenizer, fmt, problem, steps, cut_long_steps=True)


def tokenize_row(tokenizer, fmt: PromptFormat, row: dict) -> dict | None:
    """One labeled rollout -> `input_ids`, per-step targets (P(+) as 1.0/0.0, and MC values) and its
    final-answer correctness (the outcome reward model's target, train_orm); None when not even the problem and
    its first step fit `fmt.max_length`. Raises ValueError when a step's text holds the tag itself.

    With the tiny PRM tokenizer of the tests (tests/tiny_models.build_tiny_prm: byte-level BPE, BOS `<s>` = 1,
    step tag `<step>` = 295, template `Step {i}: {step}`):

        tokenize_row(tokenizer, fmt, {"id": "r1", "problem": "Ava has 3 apples.", "steps": ["3 + 2 = 5", "5 - 2 = 3"],
                                      "labels": ["+", "-"], "values": [0.75, 0.0], "correct": False})
        -> {"id": "r1",
            "input_ids": [1, 289, 68, 282, 224, 22, 288, 17, 202, 286, 224, 20, 29, 224, 22, 277, 224, 21, 279, 224,
                          24, 295, 202, 286, 224, 21, 29, 224, 24, 278, 224, 21, 279, 224, 22, 295],
            "length": 36, "hard_targets": [1.0, 0.0], "soft_targets": [0.75, 0.0], "correct": False,
            "dropped_steps": 0, "truncated_problem": False}

    The tokens: `<s> Av a Ġhas Ġ 3 Ġapples . Ċ Step Ġ 1 : Ġ 3 Ġ+ Ġ 2 Ġ= Ġ 5 <step> Ċ Step Ġ 2 : ...  Ġ 3 <step>`;
    the model learns hard_targets[t] (or soft_targets[t]) as P(+) at the t-th `<step>` (positions 21 and 35).
    """
    encoded = encode_solution(tokenizer, fmt, row["problem"], row["steps"])
    if encoded is None:
        return None
    n = encoded.num_steps
    labels = [1.0 if label == "+" else 0.0 for label in row["labels"][:n]]
    tags = encoded.input_ids.count(fmt.step_tag_id)
    if tags != len(labels):  # a step whose text contains the tag itself would break alignment
        raise ValueError(f"rollout {row.get('id')}: {tags} step tags but {len(labels)} labels")
    return {
        "id": row["id"],
        "input_ids": encoded.input_ids,
        "length": len(encoded.input_ids),
        "hard_targets": labels,
        "soft_targets": [float(v) for v in row["values"][:n]],
        "correct": bool(row["correct"]),
        "dropped_steps": encoded.dropped_steps,
        "truncated_problem": encoded.truncated_problem,
    }


def tokenize_rows(tokenizer, fmt: PromptFormat, rows: list[dict]) -> tuple[list[dict], dict[str, int]]:
    out, dropped_examples, dropped_steps = [], 0, 0
    for row in rows:
        tokenized = tokenize_row(tokenizer, fmt, row)
        if tokenized is None:
            dropped_examples += 1
            dropped_steps += len(row["steps"])
            continue
        dropped_steps += tokenized["dropped_steps"]
        out.append(tokenized)
    return out, {"examples": len(out), "dropped_examples": dropped_examples, "dropped_steps": dropped_steps,
                 "truncated_problems": sum(r["truncated_problem"] for r in out)}


def corpus_texts(rows: list[dict], params: ModelParams) -> list[str]:
    texts = []
    for row in rows:
        texts.append(row["problem"])
        texts += [params.step_template.format(i=i + 1, step=s) for i, s in enumerate(row["steps"])]
    return texts


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
    """The base tokenizer (corpus-trained for `builtin`) with the step tag added as one special token; a
    Math-Shepherd-style base keeps its own tag (`prompt_format`) and gets nothing added."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    if params.base_model == "builtin":
        tokenizer = train_corpus_tokenizer(corpus, params.vocab_size)
    else:
        tokenizer = AutoTokenizer.from_pretrained(params.base_model, **gguf_kwargs(params))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if base_format(params, tokenizer) == "math_shepherd":
            return tokenizer
    tokenizer.add_tokens([AddedToken(params.step_tag, special=True, normalized=False)], special_tokens=True)
    return tokenizer


def base_format(params: ModelParams, tokenizer) -> str | None:
    """The public PRM format (formats.py) of a local `model.base_model` checkpoint; None for `builtin`, GGUF
    and hub names. A token-classification (TRL) checkpoint is refused: training here reads LM-head logits."""
    if params.base_model == "builtin" or params.gguf_file or not Path(params.base_model, "config.json").is_file():
        return None
    found = recognised_format(params.base_model, tokenizer)
    if found == "trl":
        raise ValueError(f"model.base_model: {params.base_model} is a token-classification PRM (TRL PRMTrainer); "
                         f"prmflow fine-tunes causal LMs only: score it with evaluate.scorers instead")
    return found


def tag_ids_in_context(tokenizer, tag: str) -> list[int]:
    """The ids ` {tag}` becomes after other text (`▁ки` for sentencepiece, `Ġки` byte-level): what follows
    the ids of a newline in the encoding of a newline, a space and the tag."""
    anchor = tokenizer.encode("\n", add_special_tokens=False)
    ids = tokenizer.encode("\n " + tag, add_special_tokens=False)
    return ids[len(anchor):] if ids[: len(anchor)] == anchor else tokenizer.encode(" " + tag, add_special_tokens=False)


def math_shepherd_format(tokenizer, params: ModelParams) -> PromptFormat:
    """A Math-Shepherd-style checkpoint's own format: ` ки` after each step, read at its last token, and the
    label tokens as its reference code reads them (formats.label_token_id)."""
    tag_ids = tag_ids_in_context(tokenizer, MATH_SHEPHERD_TAG)
    return PromptFormat(
        step_tag=" " + MATH_SHEPHERD_TAG, step_template=params.step_template, positive_token=params.positive_token,
        negative_token=params.negative_token, max_length=params.max_length, step_tag_id=tag_ids[-1],
        positive_id=label_token_id(tokenizer, params.positive_token),
        negative_id=label_token_id(tokenizer, params.negative_token), bos_id=tokenizer.bos_token_id,
        truncate_problem_left=params.truncate_problem_left, tag_lead_ids=tuple(tag_ids[:-1]))


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
    if base_format(params, tokenizer) == "math_shepherd":
        return math_shepherd_format(tokenizer, params)
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


def save_prompt_format(fmt: PromptFormat, directory: str | Path) -> None:
    Path(directory, PRM_CONFIG).write_text(json.dumps(asdict(fmt), indent=2) + "\n")


def load_prompt_format(directory: str | Path) -> PromptFormat:
    fields = json.loads(Path(directory, PRM_CONFIG).read_text())
    return PromptFormat(**fields | {"tag_lead_ids": tuple(fields.get("tag_lead_ids", ()))})
