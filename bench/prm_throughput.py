"""Training tokens/s and scoring steps/s of the PRM, on a project's own data and params.

    .venv/bin/python bench/prm_throughput.py                          # this project (after `dvc repro train`)
    .venv/bin/python bench/prm_throughput.py --project /tmp/proj --train-steps 300

Training: the train stage's Trainer (`make_trainer`) for `--train-steps` optimizer steps on the
first examples of data/tokenized/train, fresh model, no checkpoints; non-padding tokens per second.
Scoring: `prmflow.load(models/prm).scorer.score_batch` over data/rollouts/test.jsonl at batch
sizes 1 and the evaluate stage's; scored steps per second. Writes bench/results/prm_throughput.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def train_tokens_per_second(project: Path, params, steps: int) -> dict:
    import datasets
    import torch
    from transformers import AutoTokenizer, set_seed

    from prmflow.scoring.modeling import build_model
    from prmflow.scoring.tokenization import prompt_format
    from prmflow.training.train import make_trainer

    torch.set_num_threads(params.base.num_threads)
    set_seed(params.base.seed)
    tokenized = project / params.base.data_dir / "tokenized"
    tokenizer = AutoTokenizer.from_pretrained(tokenized / "tokenizer")
    fmt = prompt_format(tokenizer, params.model)
    per_step = params.train.batch_size * params.train.gradient_accumulation_steps
    train_set = datasets.load_from_disk(str(tokenized / "train"))
    subset = train_set.select(range(min(len(train_set), steps * per_step)))
    one_pass = dataclasses.replace(params, train=dataclasses.replace(params.train, epochs=1.0, save_steps=0))
    trainer = make_trainer(build_model(params.model, tokenizer), tokenizer, fmt, train_dataset=subset, params=one_pass,
                           output_dir=tempfile.mkdtemp())
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    tokens = trainer.state.num_input_tokens_seen
    return {"steps": result.global_step, "examples": len(subset), "tokens": tokens, "seconds": seconds,
            "tokens_per_second": tokens / seconds}


def scoring_steps_per_second(project: Path, params) -> dict:
    import torch

    from prmflow.jsonl import read_jsonl
    from prmflow.scoring.load import load

    torch.set_num_threads(params.base.num_threads)
    prm = load(project / params.base.models_dir / "prm").scorer  # its StepTagScorer, batched at each size below
    rows = read_jsonl(project / params.base.data_dir / "rollouts" / "test.jsonl", required=("problem", "steps"))
    solutions = [(r["problem"], r["steps"]) for r in rows]
    out = {}
    for batch_size in sorted({1, params.evaluate.batch_size}):
        started = time.perf_counter()
        scores = prm.score_batch(solutions, batch_size=batch_size)
        seconds = time.perf_counter() - started
        steps = sum(len(s) for s in scores)
        out[f"batch_{batch_size}"] = {"solutions": len(solutions), "steps": steps, "seconds": seconds,
                                      "steps_per_second": steps / seconds}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=ROOT, help="project root with data/ and models/prm")
    parser.add_argument("--train-steps", type=int, default=200, help="optimizer steps to time")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "prm_throughput.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from prmflow.config import load_params

    params = load_params(args.project / "params.yaml")
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": params.base.num_threads},
        "train": train_tokens_per_second(args.project, params, args.train_steps),
        "score": scoring_steps_per_second(args.project, params),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
