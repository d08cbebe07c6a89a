"""Stage `tokenize`: one sequence per solution, a step tag after every step, labels at the tags.

    prmflow tokenize          # reads params.yaml: base, model

The text is the problem, then each step rendered with `model.step_template` and followed by
the step tag: a single special token. Every piece is encoded on its own and the ids are
concatenated, so a step can never merge with its tag or its neighbour, and the number of tags
always equals the number of labels. Truncation drops trailing steps whole and counts them; with
`model.truncate_problem_left` a problem too long for its first step keeps its tail instead of
dropping the example.

Writes `data/tokenized/{train,test}` (datasets.save_to_disk), `data/tokenized/tokenizer` and
`data/tokenized/counts.json` (kept/dropped examples and steps per split; the train stage reports them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prmflow.config import ModelParams, Params

SPLITS = ("train", "test")
COUNTS_FILE = "counts.json"  # in data/tokenized: what truncation dropped, per split


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

    def render_step(self, index: int, step: str) -> str:
        return self.step_template.format(i=index + 1, step=step)


@dataclass
class Encoded:
    input_ids: list[int]
    num_steps: int  # steps kept; the first num_steps labels belong to this sequence
    dropped_steps: int
    truncated_problem: bool = False  # the problem lost its head to make room for the first step


def _step_ids(tokenizer, fmt: PromptFormat, index: int, step: str) -> list[int]:
    piece = ("\n" if index else "") + fmt.render_step(index, step)
    return tokenizer.encode(piece, add_special_tokens=False) + [fmt.step_tag_id]


def encode_solution(tokenizer, fmt: PromptFormat, problem: str, steps: list[str]) -> Encoded | None:
    """Token ids for one solution; None when not even the (possibly left-truncated) problem and its first step fit."""
    ids = [fmt.bos_id] if fmt.bos_id is not None else []
    problem_ids = tokenizer.encode(problem + "\n", add_special_tokens=False)
    truncated = False
    if fmt.truncate_problem_left and steps:
        # Keep the problem's tail (its question) rather than lose the whole example.
        room = fmt.max_length - len(ids) - len(_step_ids(tokenizer, fmt, 0, steps[0]))
        if 0 < room < len(problem_ids):
            problem_ids, truncated = problem_ids[-room:], True
    ids += problem_ids
    kept = 0
    for index, step in enumerate(steps):
        step_ids = _step_ids(tokenizer, fmt, index, step)
        if len(ids) + len(step_ids) > fmt.max_length:
            break
        ids += step_ids
        kept += 1
    if kept == 0:
        return None
    return Encoded(input_ids=ids, num_steps=kept, dropped_steps=len(steps) - kept, truncated_problem=truncated)


def tokenize_row(tokenizer, fmt: PromptFormat, row: dict) -> dict | None:
    """One labeled rollout -> `input_ids`, per-step targets (P(+) as 1.0/0.0, and MC values) and its
    final-answer correctness (the outcome reward model's target, train_orm)."""
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


def main(params: Params) -> None:
    import datasets
    import mlflow

    from prmflow.jsonl import read_jsonl, write_json
    from prmflow.modeling import prepare_tokenizer, prompt_format
    from prmflow.tracking import stage_run

    data = Path(params.base.data_dir)
    out = data / "tokenized"
    rollouts = {s: read_jsonl(data / "rollouts" / f"{s}.jsonl", required=("id", "problem", "steps", "labels",
                                                                           "values", "correct")) for s in SPLITS}
    with stage_run(params.base, "tokenize", params.model):
        tokenizer = prepare_tokenizer(params.model, corpus_texts(rollouts["train"], params.model))
        fmt = prompt_format(tokenizer, params.model)
        tokenizer.save_pretrained(out / "tokenizer")
        all_counts = {}
        for split in SPLITS:
            rows, counts = tokenize_rows(tokenizer, fmt, rollouts[split])
            datasets.Dataset.from_list(rows).save_to_disk(str(out / split))
            mlflow.log_metrics({f"{split}_{k}": v for k, v in counts.items()})
            print(f"tokenize {split}: {counts}")
            all_counts[split] = counts
        write_json(out / COUNTS_FILE, all_counts)
