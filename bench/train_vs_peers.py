"""Training throughput and peak memory: the train stage vs TRL 1.13 PRMTrainer vs the per-prefix recipe.

    .venv/bin/pip install --no-deps trl==1.13.0      # once: the `bench` extra (TRL's other deps are already here)
    .venv/bin/python bench/train_vs_peers.py         # ~2-3 minutes; writes bench/results/train_vs_peers.json

One epoch over the same first `--solutions` labeled rollouts of data/rollouts/train.jsonl, the
same tiny model shape (params.yaml `model`), batch size, learning rate, weight decay, warmup and
cosine schedule, one thread, each trainer in its own process so peak RSS is its own:
- prmflow: `make_trainer` (the train stage's Trainer): one sequence per solution, a tag after
  every step, loss at every tag, dynamic padding, length-grouped batches;
- trl: `trl.experimental.prm.PRMTrainer` 1.13 (the last release with it) on the same text
  (prompt = problem, completions = rendered steps, step_separator = the step tag), with
  `LlamaForTokenClassification` (2 labels) as its docs recommend;
- prefix_recipe: the original write-up's recipe: each step prefix is its own example, padded to
  `model.max_length`, loss at its last tag (plain torch loop, AdamW, same schedule).
Throughput is counted on the same numerator for all three, the tokens of the solutions as
prmflow encodes them (and labeled steps), so the ratios are ratios of CPU time (one thread) for the same data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNNERS = ("prmflow", "trl", "prefix_recipe")


def load(project: Path, count: int):
    """Params, tokenizer, format and the first `count` rollouts that fit, tokenized the prmflow way."""
    from transformers import AutoTokenizer

    from prmflow.config import load_params
    from prmflow.jsonl import read_jsonl
    from prmflow.scoring.tokenization import prompt_format, tokenize_rows

    params = load_params(project / "params.yaml")
    tokenizer = AutoTokenizer.from_pretrained(project / params.base.data_dir / "tokenized" / "tokenizer")
    fmt = prompt_format(tokenizer, params.model)
    rows = read_jsonl(project / params.base.data_dir / "rollouts" / "train.jsonl", required=("problem", "steps"))
    tokenized, _ = tokenize_rows(tokenizer, fmt, rows[: count])
    kept = {t["id"] for t in tokenized}
    rows = [r for r in rows[: count] if r["id"] in kept]
    for row, tok in zip(rows, tokenized):
        row["steps"] = row["steps"][: len(tok["hard_targets"])]  # steps past max_length are dropped in all three
    return params, tokenizer, fmt, rows, tokenized


@contextmanager
def timer():
    """Yields a dict filled on exit with wall and CPU seconds (one thread: CPU time is the work done)."""
    seconds = {}
    wall, cpu = time.perf_counter(), time.process_time()
    yield seconds
    seconds.update(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu)


def one_epoch(params):
    return dataclasses.replace(params, train=dataclasses.replace(params.train, epochs=1.0, save_steps=0))


def run_prmflow(params, tokenizer, fmt, rows, tokenized) -> float:
    import datasets

    import mlflow  # noqa: F401  the train stage has it loaded before training; its logging callback imports it
    from prmflow.scoring.modeling import build_model
    from prmflow.training.train import make_trainer

    trainer = make_trainer(build_model(params.model, tokenizer), tokenizer, fmt,
                           train_dataset=datasets.Dataset.from_list(tokenized), params=one_epoch(params),
                           output_dir=tempfile.mkdtemp())
    with timer() as seconds:
        trainer.train()
    return seconds


def run_trl(params, tokenizer, fmt, rows, tokenized) -> float:
    import datasets
    import torch
    from transformers import LlamaForTokenClassification
    from trl.experimental.prm import PRMConfig, PRMTrainer

    from prmflow.data.step_text import step_line
    from prmflow.scoring.modeling import build_model

    t = params.train
    config = build_model(params.model, tokenizer).config
    config.num_labels = 2
    model = LlamaForTokenClassification(config)
    data = datasets.Dataset.from_list([{
        "prompt": row["problem"] + "\n",
        "completions": [step_line(fmt.step_template, i, step) for i, step in enumerate(row["steps"])],
        "labels": [label == "+" for label in row["labels"][: len(row["steps"])]],
    } for row in rows])
    args = PRMConfig(
        output_dir=tempfile.mkdtemp(), num_train_epochs=1.0, per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, learning_rate=t.learning_rate,
        weight_decay=t.weight_decay, warmup_steps=t.warmup_ratio, lr_scheduler_type="cosine",
        max_length=params.model.max_length, step_separator=fmt.step_tag, save_strategy="no", report_to=[],
        logging_steps=10, seed=params.base.seed, use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = PRMTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    with timer() as seconds:
        trainer.train()
    return seconds


def run_prefix_recipe(params, tokenizer, fmt, rows, tokenized) -> float:
    import torch
    from transformers import get_cosine_schedule_with_warmup, set_seed

    from prmflow.scoring.modeling import build_model, step_loss
    from prmflow.scoring.tokenization import encode_solution

    t, width = params.train, params.model.max_length
    set_seed(params.base.seed)
    examples = []  # (input_ids padded to max_length, position of the last tag, target)
    for row in rows:
        for k in range(1, len(row["steps"]) + 1):
            ids = encode_solution(tokenizer, fmt, row["problem"], row["steps"][:k]).input_ids
            examples.append((ids + [tokenizer.pad_token_id] * (width - len(ids)), len(ids) - 1,
                             1.0 if row["labels"][k - 1] == "+" else 0.0))
    model = build_model(params.model, tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay)
    total = -(-len(examples) // t.batch_size)
    schedule = get_cosine_schedule_with_warmup(optimizer, round(t.warmup_ratio * total), total)
    order = torch.randperm(len(examples)).tolist()
    model.train()
    with timer() as seconds:
        for start in range(0, len(order), t.batch_size):
            batch = [examples[i] for i in order[start: start + t.batch_size]]
            input_ids = torch.tensor([b[0] for b in batch])
            logits = model(input_ids=input_ids, attention_mask=(input_ids != tokenizer.pad_token_id).long()).logits
            last = logits[torch.arange(len(batch)), torch.tensor([b[1] for b in batch])]
            loss = step_loss(last[:, [fmt.positive_id, fmt.negative_id]], torch.tensor([b[2] for b in batch]))
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    print(json.dumps({"examples": len(examples), "padded_tokens": len(examples) * width}), file=sys.stderr)
    return seconds


def child(runner: str, project: Path, count: int) -> None:
    import torch

    from prmflow.training.train import peak_memory_mb  # on CPU: this process's peak RSS

    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    torch.set_num_threads(1)
    params, tokenizer, fmt, rows, tokenized = load(project, count)
    rss_before = peak_memory_mb()
    seconds = {"prmflow": run_prmflow, "trl": run_trl, "prefix_recipe": run_prefix_recipe}[runner](
        params, tokenizer, fmt, rows, tokenized)
    tokens = sum(t["length"] for t in tokenized)
    steps = sum(len(t["hard_targets"]) for t in tokenized)
    print(json.dumps({"solutions": len(tokenized), "labeled_steps": steps, "solution_tokens": tokens,
                      "wall_seconds": seconds["wall"], "cpu_seconds": seconds["cpu"],
                      "tokens_per_cpu_second": tokens / seconds["cpu"], "steps_per_cpu_second": steps / seconds["cpu"],
                      "peak_rss_mb": peak_memory_mb(), "rss_before_training_mb": rss_before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=ROOT, help="project root with data/rollouts and data/tokenized")
    parser.add_argument("--solutions", type=int, default=800, help="labeled rollouts to train one epoch on")
    parser.add_argument("--runner", choices=RUNNERS, help=argparse.SUPPRESS)  # internal: one trainer per process
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_vs_peers.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.runner:
        child(args.runner, args.project, args.solutions)
        return
    results = {}
    for runner in RUNNERS:
        proc = subprocess.run([sys.executable, __file__, "--runner", runner, "--project", str(args.project),
                               "--solutions", str(args.solutions)], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            results[runner] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
            print(f"{runner}: FAILED\n{proc.stderr[-3000:]}", flush=True)
            continue
        results[runner] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[runner]
        print(f"{runner:>14}: {r['tokens_per_cpu_second']:8.0f} tokens/s  {r['steps_per_cpu_second']:6.0f} steps/s  "
              f"peak RSS {r['peak_rss_mb']:6.0f} MB  ({r['cpu_seconds']:.1f} CPU s, {r['wall_seconds']:.1f} s wall)",
              flush=True)
    base = results.get("prmflow", {}).get("tokens_per_cpu_second")
    for runner, r in results.items():
        if base and "tokens_per_cpu_second" in r:
            r["prmflow_speedup"] = base / r["tokens_per_cpu_second"]
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": 1},
              "solutions": args.solutions, "runners": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
