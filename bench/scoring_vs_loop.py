"""Steps scored per second: StepTagScorer vs the per-prefix loop vs a bare forward pass.

    .venv/bin/python bench/scoring_vs_loop.py        # ~1-2 minutes; writes bench/results/scoring_vs_loop.json

Same model (the trained default `models/prm`), same solutions, one thread:
- prmflow: `StepTagScorer.score_batch`, every step of a solution in one pass, solutions
  batched (the evaluate stage's batch size), tokenization and softmax included;
- per-prefix loop: the original inference example, one forward pass per step prefix
  (problem + steps[:k] + tag, read P(+) at the last tag), one solution at a time;
- bare forward: the model alone over the token batches `score_batch` builds, pre-tokenized and
  pre-padded, no softmax: the most this model can score on this machine.
Solutions of 4, 8 and 16 steps are made by chaining steps of data/rollouts/test.jsonl.
Rates are per CPU second of this (single-threaded) process, the least of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from prmflow.jsonl import read_jsonl
from prmflow.scoring.load import load
from prmflow.scoring.modeling import StepTagScorer, pad_batch
from prmflow.scoring.tokenization import encode_solution

ROOT = Path(__file__).resolve().parent.parent


def make_solutions(tokenizer, rows: list[dict], num_steps: int, count: int) -> list[tuple[str, list[str]]]:
    """`count` solutions of exactly `num_steps` steps, from the shortest tenth of the problems and steps.

    Rollouts hold 2-5 steps; 16 median-length steps overflow the default max_length (512), so every
    length draws from the same short pool, which keeps tokens per step equal across lengths.
    """
    def shortest_tenth(texts):
        texts = sorted(set(texts), key=lambda t: len(tokenizer.encode(t, add_special_tokens=False)))
        return texts[: max(1, len(texts) // 10)]

    problems = shortest_tenth(row["problem"] for row in rows)
    pool = shortest_tenth(step for row in rows for step in row["steps"])
    return [(problems[i % len(problems)], [pool[(i * num_steps + k) % len(pool)] for k in range(num_steps)])
            for i in range(count)]


def per_prefix_loop(prm: StepTagScorer, solutions) -> list[list[float]]:
    fmt = prm.format
    scores = []
    with torch.no_grad():
        for problem, steps in solutions:
            rewards = []
            for k in range(1, len(steps) + 1):
                ids = encode_solution(prm.tokenizer, fmt, problem, steps[:k]).input_ids
                logits = prm.model(input_ids=torch.tensor([ids])).logits[0, -1]  # the last token is the tag
                rewards.append(torch.softmax(logits[[fmt.positive_id, fmt.negative_id]], -1)[0].item())
            scores.append(rewards)
    return scores


def bare_batches(prm: StepTagScorer, solutions, batch_size: int):
    """The padded batches `score_batch` feeds the model (same sort by length), built ahead of the clock."""
    encoded = sorted((encode_solution(prm.tokenizer, prm.format, p, s).input_ids for p, s in solutions), key=len)
    return [pad_batch(encoded[i: i + batch_size], prm.tokenizer.pad_token_id)
            for i in range(0, len(encoded), batch_size)]


def bare_forward(prm: StepTagScorer, batches) -> None:
    with torch.no_grad():
        for input_ids, attention in batches:
            prm.model(input_ids=input_ids, attention_mask=attention)


def fastest(repeats: int, runs: dict) -> dict[str, float]:
    """Least CPU seconds of `repeats` interleaved runs of each.

    One thread, so this process's CPU time is the work done; wall time on the shared 2-core
    machine mostly measures who else was running.
    """
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            started = time.process_time()
            fn()
            times[name].append(time.process_time() - started)
    return {name: min(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "prm")
    parser.add_argument("--rollouts", type=Path, default=ROOT / "data" / "rollouts" / "test.jsonl")
    parser.add_argument("--solutions", type=int, default=64, help="solutions per length")
    parser.add_argument("--batch-size", type=int, default=32, help="score_batch batch size (evaluate.batch_size)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scoring_vs_loop.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    prm = load(args.model).scorer  # its StepTagScorer: the kernel timed
    rows = read_jsonl(args.rollouts, required=("problem", "steps"))
    results = {}
    for num_steps in (4, 8, 16):
        solutions = make_solutions(prm.tokenizer, rows, num_steps, args.solutions)
        batched = prm.score_batch(solutions, batch_size=args.batch_size)
        if any(len(s) != num_steps for s in batched):
            raise SystemExit(f"{num_steps}-step solutions exceed max_length {prm.format.max_length}")
        looped = per_prefix_loop(prm, solutions)
        # Causal attention: a prefix's last tag sees exactly what that tag sees in the full pass.
        max_diff = max(abs(a - b) for x, y in zip(batched, looped) for a, b in zip(x, y))
        batches = bare_batches(prm, solutions, args.batch_size)
        steps = num_steps * len(solutions)
        seconds = fastest(args.repeats, {
            "prmflow": lambda: prm.score_batch(solutions, batch_size=args.batch_size),
            "per_prefix_loop": lambda: per_prefix_loop(prm, solutions),
            "bare_forward": lambda: bare_forward(prm, batches),
        })
        rate = {name: steps / s for name, s in seconds.items()}
        results[f"{num_steps}_steps"] = {
            "solutions": len(solutions), "steps": steps,
            "tokens_per_solution": sum(int(a.sum()) for _, a in batches) / len(solutions),
            "cpu_seconds": seconds, "steps_per_cpu_second": rate,
            "prmflow_over_loop": rate["prmflow"] / rate["per_prefix_loop"],
            "prmflow_over_bare_forward": rate["prmflow"] / rate["bare_forward"],
            "max_score_difference_vs_loop": max_diff,
        }
        r = results[f"{num_steps}_steps"]
        print(f"{num_steps:>2} steps: prmflow {rate['prmflow']:8.0f}  loop {rate['per_prefix_loop']:7.0f}  "
              f"bare {rate['bare_forward']:8.0f} steps/s   prmflow/loop {r['prmflow_over_loop']:5.1f}x  "
              f"prmflow/bare {r['prmflow_over_bare_forward']:.2f}  max|diff| {max_diff:.1e}", flush=True)
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": 1},
              "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
              "batch_size": args.batch_size, "repeats": args.repeats, "lengths": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
