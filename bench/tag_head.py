"""The tag-only head against the full-vocabulary logits, on the CPU, at SmolLM2-135M's shape.

    .venv/bin/python bench/tag_head.py            # ~3 minutes; writes bench/results/tag_head.json
    .venv/bin/python bench/tag_head.py --batch-size 8 --length 512   # the issue's batch (several times longer)

The model is built from a config in SmolLM2-135M's shape (Llama: vocabulary 49,152, hidden 576, 30
layers, 9 heads / 3 KV heads, MLP 1536, tied embeddings; random weights, so no download or GGUF is
needed); the batch is `--batch-size` sequences of `--length` random token ids with a step tag every
`--tag-every` tokens (a GSM8K solution has one about every 40). Measured through
`modeling.step_tag_logits`, with the tag-only head and with `full_logits=True`: scoring (one
no-grad forward, P(+) at every tag) and a training step (forward, step loss, backward; the
optimizer update is the same for both and left out). Times: the two paths interleaved for
`--repeat` rounds in one process (load from other work falls on both alike), median and fastest.
Memory: peak resident memory (ru_maxrss) of a fresh process per operation and path, and of one
that only builds the model and batch. Single-threaded, as the pipeline runs on this machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMOLLM2_135M = {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 2048,
                "tie_word_embeddings": True}
PATHS = ("tag_only", "full_logits")
STEP_TAG_ID, POSITIVE_ID, NEGATIVE_ID = 49151, 32, 33  # any ids of the vocabulary serve


def setup(args):
    """The model (seed 0), the prompt format, and the batch: random ids with a step tag every `tag_every`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from prmflow.scoring.tokenization import PromptFormat

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M))
    fmt = PromptFormat("<step>", "Step {i}: {step}", "+", "-", args.length, STEP_TAG_ID, POSITIVE_ID, NEGATIVE_ID)
    input_ids = torch.randint(0, STEP_TAG_ID, (args.batch_size, args.length))
    input_ids[:, args.tag_every - 1:: args.tag_every] = STEP_TAG_ID
    targets = (torch.rand(int((input_ids == STEP_TAG_ID).sum())) < 0.7).float()
    return model, fmt, (input_ids, torch.ones_like(input_ids), targets)


def score(model, fmt, batch, path: str) -> list[float]:
    """P(+) at every tag: one no-grad forward."""
    import torch

    from prmflow.scoring.modeling import step_tag_logits

    input_ids, attention, _ = batch
    with torch.no_grad():
        pair = step_tag_logits(model.eval(), input_ids, attention, fmt, path == "full_logits")
    return torch.softmax(pair.float(), -1)[:, 0].tolist()


def train_step(model, fmt, batch, path: str) -> None:
    """Forward, the step loss, backward: what the head changes (the optimizer update is the same for both)."""
    from prmflow.scoring.modeling import step_loss, step_tag_logits

    input_ids, attention, targets = batch
    step_loss(step_tag_logits(model.train(), input_ids, attention, fmt, path == "full_logits"), targets).backward()
    model.zero_grad(set_to_none=True)


def timings(args) -> dict:
    """Seconds of each (operation, path), the paths interleaved round by round in one process, so that
    load from other work on the machine falls on both alike; the fastest and the median of the rounds."""
    import statistics

    model, fmt, batch = setup(args)
    seconds: dict[str, list[float]] = {f"{op}_{path}": [] for op in ("score", "train") for path in PATHS}
    scores = {}
    for _ in range(args.repeat):
        for path in PATHS:
            started = time.perf_counter()
            scores[path] = score(model, fmt, batch, path)
            seconds[f"score_{path}"].append(time.perf_counter() - started)
            started = time.perf_counter()
            train_step(model, fmt, batch, path)
            seconds[f"train_{path}"].append(time.perf_counter() - started)
    difference = max(abs(a - b) for a, b in zip(scores["tag_only"], scores["full_logits"]))
    return {"tags": len(scores["tag_only"]), "max_abs_score_difference": difference,
            **{name: {"min_s": min(v), "median_s": statistics.median(v)} for name, v in seconds.items()}}


def peak_memory(name: str, args) -> dict:
    """Peak resident memory (MB) of this process after one `name` ("model_only", "score_<path>",
    "train_<path>"); run in a fresh process per name, so the peak is that operation's."""
    model, fmt, batch = setup(args)
    operation, _, path = name.partition("_")
    if operation == "score":
        score(model, fmt, batch, path)
    elif operation == "train":
        train_step(model, fmt, batch, path)
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # Linux: KiB


def child(name: str, args) -> dict:
    command = [sys.executable, __file__, "--measure", name, "--batch-size", str(args.batch_size),
               "--length", str(args.length), "--tag-every", str(args.tag_every), "--repeat", str(args.repeat)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


MEMORY = ("model_only", *(f"{op}_{path}" for op in ("score", "train") for path in PATHS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--tag-every", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--measure", choices=(*MEMORY, "timings"), help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tag_head.json")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(timings(args) if args.measure == "timings" else peak_memory(args.measure, args)))
        return
    times = child("timings", args)
    memory = {name: child(name, args)["peak_rss_mb"] for name in MEMORY}
    report = {
        "machine": {"platform": platform.platform(), "threads": 1},
        "model": SMOLLM2_135M, "batch_size": args.batch_size, "length": args.length, "repeat": args.repeat,
        **times, "peak_rss_mb": memory,
        "score_time_ratio": times["score_tag_only"]["median_s"] / times["score_full_logits"]["median_s"],
        "train_time_ratio": times["train_tag_only"]["median_s"] / times["train_full_logits"]["median_s"],
        "score_peak_rss_saved_mb": memory["score_full_logits"] - memory["score_tag_only"],
        "train_peak_rss_saved_mb": memory["train_full_logits"] - memory["train_tag_only"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
