"""Stage `tokenize`: one sequence per solution, a step tag after every step, labels at the tags.

    prmflow tokenize          # reads params.yaml: base, model

The encoding is tokenization.py's. Writes `data/tokenized/{train,test}` (datasets.save_to_disk),
`data/tokenized/tokenizer` and `data/tokenized/counts.json` (kept/dropped examples and steps per
split; the train stage reports them).
"""

from __future__ import annotations

from pathlib import Path

from prmflow.config import Params
from prmflow.scoring.tokenization import COUNTS_FILE, corpus_texts, prepare_tokenizer, prompt_format, tokenize_rows

SPLITS = ("train", "test")


def main(params: Params) -> None:
    import datasets

    import mlflow
    from prmflow.jsonl import read_jsonl, write_json
    from prmflow.tracking import stage_run, summary_line

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
            print(summary_line(f"tokenize {split}", counts))
            all_counts[split] = counts
        write_json(out / COUNTS_FILE, all_counts)
