"""Public PRM checkpoints in the formats users arrive with, behind StepTagScorer's scoring interface.

    prm = load_prm("checkpoints/math-shepherd-mistral-7b-prm")   # format read from the directory
    prm = load_prm("checkpoints/rlhflow-llama3-prm", format="chat")
    prm.score_batch([(problem, steps)], batch_size=8)           # -> P(correct) per step, per solution

| format          | recognised by                                  | score of step t                            |
|-----------------|------------------------------------------------|--------------------------------------------|
| `prmflow`       | `prm_config.json` (what `prmflow train` saves) | StepTagScorer: P(+) at its step tag   |
| `trl`           | an `*ForTokenClassification` architecture      | P(label 1), last token of step + separator |
| `math_shepherd` | `ки` in its vocabulary, no chat template       | softmax(+, -) at the last token of ` ки`   |
| `chat`          | named only (`format="chat"`)                   | softmax(+, -) where the assistant answers  |
| `zero_shot`     | named only (`format="zero_shot"`)              | zero_shot.ZeroShotVerifier: P(Yes)         |

Math-Shepherd (Wang et al. 2024) writes `{problem} Step 1: ... ки\\nStep 2: ... ки` and reads the `+`/`-`
logits where `ки` stands. TRL's PRMTrainer (`tokenize_row`) writes BOS, the prompt, then each step
followed by the separator, labelled at the separator's last token. RLHFlow-style chat PRMs put each
step in a user turn (the first one prefixed by the problem and a space) and the model answers `+` or `-`.
A causal LM with a chat template could as well be a verification-prompt judge, so `chat` and
`zero_shot` are never guessed (formats.py says how each format is recognised). Label tokens are the
last id of encoding `+` / `-` (`▁+` for sentencepiece, as both reference implementations read them).

Every format scores all steps of a solution in one forward pass where the tokens allow it: when the
text up to step t's tag (the chat up to turn t's answer) does not encode to a prefix of the whole
solution's tokens (a tokenizer that merges the tag with the next step, a template that renders the
last turn differently) each step gets its own pass, so the score is always P(correct | text up to t).
Causal LMs go through the tag-only head: hidden states at the read positions times the LM head, never
the [batch, length, vocab] logits. Nothing loads remote code: a checkpoint whose config.json or
tokenizer_config.json has `auto_map` is refused.
"""

from __future__ import annotations

from pathlib import Path

import torch

from prmflow.config import DEFAULT_STEP_TEMPLATE, PRM_FORMATS, EvaluateParams, ModelParams
from prmflow.data.step_text import MATH_SHEPHERD_TAG, step_line
from prmflow.devices import Placement, load_causal_lm, place
from prmflow.scoring.formats import (  # noqa: F401 (detect_format: re-exported beside load_prm)
    detect_format, is_token_classifier, label_token_id, read_checkpoint_config,
)
from prmflow.scoring.modeling import Job, label_logits, p_positive, score_jobs



def load_prm(path: str | Path, format: str | None = None, placement: Placement = Placement(), **options):
    """A scorer of the checkpoint at `path` with `score_batch` and `get_rewards_for_steps`, loaded on `placement`.

    `format`: one of PRM_FORMATS, or None to detect it; `options` go to the format's scorer (e.g.
    `step_tag`, `separator`, `max_length`). Raises ValueError for an unknown or mismatched format.
    """
    from transformers import AutoTokenizer

    path = Path(path)
    config = read_checkpoint_config(path)
    if format is not None and format not in PRM_FORMATS:
        raise ValueError(f"format: {format!r} is not one of {list(PRM_FORMATS)}")
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    format = format or detect_format(path, tokenizer)
    if is_token_classifier(config) != (format == "trl"):
        raise ValueError(f"{path}: format {format!r} does not fit its architectures {config.get('architectures')}")
    if format == "prmflow":
        from prmflow.scoring.modeling import StepTagScorer

        return StepTagScorer(path, placement)
    model = _load_model(path, format, placement)
    max_length = options.pop("max_length", None) or getattr(model.config, "max_position_embeddings", None) or 2048
    if format == "zero_shot":
        from prmflow.scoring.zero_shot import ZeroShotVerifier

        return ZeroShotVerifier(model, tokenizer, max_length, tokenizer.bos_token_id,
                                options.pop("step_template", DEFAULT_STEP_TEMPLATE), **options)
    scorer = {"trl": TokenClassificationPRM, "math_shepherd": MathShepherdPRM, "chat": ChatPRM}[format]
    return scorer(model, tokenizer, max_length, **options)


def _load_model(path: Path, format: str, placement: Placement):
    from transformers import AutoModelForTokenClassification

    if format == "trl":
        return place(AutoModelForTokenClassification.from_pretrained(path, trust_remote_code=False), placement)
    return load_causal_lm(path, placement, trust_remote_code=False)


class _PublicPRM:
    """Batching shared by the formats: each builds `jobs` for a solution and reads P(correct) at positions."""

    def __init__(self, model, tokenizer, max_length: int):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def jobs(self, index: int, problem: str, steps: list[str]) -> list[Job]:
        raise NotImplementedError

    def read(self, input_ids: torch.Tensor, attention: torch.Tensor, rows: torch.Tensor,
             positions: torch.Tensor) -> torch.Tensor:
        """P(correct) at (rows[k], positions[k]) of a padded batch: [K] float."""
        raise NotImplementedError

    @property
    def device(self):
        return self.model.device

    def score_batch(self, solutions: list[tuple[str, list[str]]],
                    batch_size: int = EvaluateParams.batch_size) -> list[list[float]]:
        """P(correct) per scored step of each (problem, steps), in input order; steps past the context are
        left out ([] when not even the first fits). Sequences run in order of length, `batch_size` at a time."""
        jobs = [job for i, (problem, steps) in enumerate(solutions) for job in self.jobs(i, problem, steps)]
        return score_jobs(self, jobs, len(solutions), batch_size)

    def get_rewards_for_steps(self, problem: str, steps: list[str]) -> list[float]:
        return self.score_batch([(problem, steps)])[0]

    def prefix_jobs(self, index: int, prefixes: list[list[int]], whole: list[int]) -> list[Job]:
        """Read at the last token of each prefix: in one pass over `whole` when every prefix is a prefix of
        it, else one pass per prefix (a tag that merges with the next step's text, a chat template that
        renders the last turn differently), stopping at the first that does not fit the context."""
        if all(whole[: len(p)] == p for p in prefixes):
            return self.fitted(index, whole, [len(p) - 1 for p in prefixes])
        jobs = []
        for prefix in prefixes:
            fitted = self.fitted(index, prefix, [len(prefix) - 1])
            if not fitted:
                break
            jobs += fitted
        return jobs

    def fitted(self, index: int, input_ids: list[int], positions: list[int]) -> list[Job]:
        """The job cut after its last position that fits the context; none when not even the first fits."""
        kept = [p for p in positions if p < self.max_length]
        return [Job(index, input_ids[: kept[-1] + 1], kept)] if kept else []


class _LabelTokenPRM(_PublicPRM):
    """A causal LM read as softmax over its logits of the `+` and `-` tokens, through the tag-only head."""

    def __init__(self, model, tokenizer, max_length: int, positive_token: str = ModelParams.positive_token,
                 negative_token: str = ModelParams.negative_token):
        super().__init__(model, tokenizer, max_length)
        self.label_ids = [label_token_id(tokenizer, positive_token), label_token_id(tokenizer, negative_token)]

    def read(self, input_ids, attention, rows, positions):
        return p_positive(label_logits(self.model, input_ids, attention, (rows, positions), self.label_ids)[0])


class MathShepherdPRM(_LabelTokenPRM):
    """`{problem} Step 1: ... ки\\nStep 2: ... ки`: the label logits at the last token of each ` ки` (a
    multi-token tag is read at its last token); each text is encoded whole, as the checkpoint was trained."""

    def __init__(self, model, tokenizer, max_length: int, step_tag: str = MATH_SHEPHERD_TAG,
                 step_template: str = DEFAULT_STEP_TEMPLATE, positive_token: str = ModelParams.positive_token,
                 negative_token: str = ModelParams.negative_token):
        super().__init__(model, tokenizer, max_length, positive_token, negative_token)
        self.step_tag = step_tag
        self.step_template = step_template

    def prefixes(self, problem: str, steps: list[str]) -> list[str]:
        """The text up to and including each step's tag."""
        text, prefixes = problem + " ", []
        for index, step in enumerate(steps):
            text += step_line(self.step_template, index, step) + " " + self.step_tag
            prefixes.append(text)
        return prefixes

    def jobs(self, index, problem, steps):
        prefixes = [self.tokenizer(text)["input_ids"] for text in self.prefixes(problem, steps)]
        return self.prefix_jobs(index, prefixes, prefixes[-1]) if prefixes else []


class ChatPRM(_LabelTokenPRM):
    """RLHFlow style: user turns `{problem} {step 1}`, `{step 2}`, ..., each answered `+` by the assistant;
    the label logits where the assistant's answer to turn t is predicted (its generation prompt's last token)."""

    def __init__(self, model, tokenizer, max_length: int, positive_token: str = ModelParams.positive_token,
                 negative_token: str = ModelParams.negative_token):
        if not tokenizer.chat_template:
            raise ValueError(f"{tokenizer.name_or_path}: format 'chat' needs a tokenizer with a chat_template")
        super().__init__(model, tokenizer, max_length, positive_token, negative_token)
        self.answer = positive_token

    def conversation_ids(self, conversation: list[dict], generation_prompt: bool) -> list[int]:
        text = self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=generation_prompt)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]  # the template writes BOS itself

    def jobs(self, index, problem, steps):
        conversation, prompts = [], []
        for k, step in enumerate(steps):
            conversation.append({"role": "user", "content": f"{problem} {step}" if k == 0 else step})
            prompts.append(self.conversation_ids(conversation, generation_prompt=True))
            conversation.append({"role": "assistant", "content": self.answer})
        return self.prefix_jobs(index, prompts, self.conversation_ids(conversation, generation_prompt=False))


class TokenClassificationPRM(_PublicPRM):
    """TRL PRMTrainer output: BOS, the problem, each step followed by `separator`; P(label 1) at the
    last token of each step + separator (trl.PRMTrainer.tokenize_row)."""

    def __init__(self, model, tokenizer, max_length: int, separator: str = "\n"):
        if model.config.num_labels != 2:
            raise ValueError(f"{tokenizer.name_or_path}: format 'trl' needs 2 labels, "
                             f"config.json has num_labels={model.config.num_labels}")
        super().__init__(model, tokenizer, max_length)
        self.separator_ids = tokenizer.encode(separator, add_special_tokens=False)

    def jobs(self, index, problem, steps):
        bos = self.tokenizer.bos_token_id
        ids = ([bos] if bos is not None else []) + self.tokenizer.encode(problem, add_special_tokens=False)
        positions = []
        for step in steps:
            ids = ids + self.tokenizer.encode(step, add_special_tokens=False) + self.separator_ids
            positions.append(len(ids) - 1)
        return self.fitted(index, ids, positions)

    def read(self, input_ids, attention, rows, positions):
        logits = self.model(input_ids=input_ids, attention_mask=attention).logits[rows, positions]
        return torch.softmax(logits.float(), -1)[:, 1]
