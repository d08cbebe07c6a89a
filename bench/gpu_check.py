"""GPU check: a realistic-size PRM trained in bf16 with the tag-only head and with full logits, then scored.

    python bench/gpu_check.py                       # a GPU machine: ~0.5B Llama-style, 152k vocabulary, bf16
    python bench/gpu_check.py --device cpu --tiny   # the same logic at a tiny size (tests/test_gpu_check.py)
    .venv/bin/python bench/gpu_check.py --write-data bench/data/gpu_check_solutions.jsonl   # here: remake the data

Made for a machine with only torch, transformers, accelerate and peft: no network, no MLflow, DVC,
Prefect or `datasets`; it puts this checkout's src/ on the path and imports only prmflow modules
that need nothing else. The model is built from a config in the shape of Qwen2.5-0.5B as a Llama
(hidden 896, 24 layers, 14 heads / 2 KV heads, MLP 4864, vocabulary 151,936, tied embeddings:
494M parameters); the tokenizer is the builtin one trained on the carried solutions, so only its
first few thousand ids occur, but every head product runs over the whole vocabulary.

Training: `--steps` AdamW steps under bf16 autocast (float32 weights, as the train stage's Trainer
with `bf16`), batches of `--batch-size` solutions from bench/data/gpu_check_solutions.jsonl (GSM8K-
format solutions of the bundled generator, labeled by the simulated policy), once through the
tag-only head and once through the full logits (`modeling.step_tag_logits(full_logits=True)`), from
the same initial weights and batches. Reported per path: non-padding tokens/s over the steps after
`--warmup`, peak GPU memory, model FLOPs utilisation = 6 x parameters x tokens/s / `--peak-tflops`
(default 989: the H100/H200 SXM dense BF16 tensor-core peak of NVIDIA's datasheet, 1,979 with
sparsity), and the first and last losses. Scoring: the tag-only model saved and loaded by
`StepTagScorer` in bfloat16 and in float32 on the same device, `--score` solutions each;
solutions/s and steps/s in bfloat16, and the largest |bf16 score - float32 score|. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # the GPU machine has the checkout, not an installed prmflow

DATA = ROOT / "bench" / "data" / "gpu_check_solutions.jsonl"
# Qwen2.5-0.5B's shape as a Llama; --tiny: small enough for a CPU test, vocabulary still far above hidden.
SHAPES = {
    "full": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
             "num_key_value_heads": 2, "vocab_size": 151936},
    "tiny": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 8192},
}
TOKENIZER_VOCAB = 2048  # the builtin tokenizer trained on the carried solutions
H200_DENSE_BF16_TFLOPS = 989.0


def write_data(path: Path, problems: int = 128, seed: int = 20) -> None:
    """GSM8K-format solutions of the bundled generator, labeled by the simulated policy (run where prmflow is
    installed: this imports the ingest and label code)."""
    from prmflow.config import IngestParams, LabelParams
    from prmflow.data.ingest import build_splits
    from prmflow.labeling.label import rollout_rows

    train = build_splits(IngestParams(num_train=problems, num_test=1, max_steps=5), seed=seed).splits["train"]
    rows = rollout_rows(train, LabelParams(trajectories_per_problem=4, completions_per_step=4), seed=seed)
    keep = ("id", "problem", "steps", "labels", "values", "correct")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({k: row[k] for k in keep}) + "\n" for row in rows))
    print(f"{path}: {len(rows)} solutions")


def build(rows: list[dict], shape: dict):
    """(tokenizer, prompt format, tokenized rows, model config) for `shape`."""
    from transformers import LlamaConfig

    from prmflow.config import ModelParams
    from prmflow.scoring.tokenization import corpus_texts, prepare_tokenizer, prompt_format, tokenize_rows

    params = ModelParams(vocab_size=TOKENIZER_VOCAB, max_length=1024)
    tokenizer = prepare_tokenizer(params, corpus_texts(rows, params))
    fmt = prompt_format(tokenizer, params)
    tokenized, _ = tokenize_rows(tokenizer, fmt, rows)
    config = LlamaConfig(**shape | {"vocab_size": max(shape["vocab_size"], len(tokenizer))},
                         max_position_embeddings=1024, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer, fmt, tokenized, config


def batches(tokenized: list[dict], size: int, count: int, pad_id: int):
    """`count` batches of `size` solutions, cycling through the data in file order: the same for both paths."""
    import torch

    from prmflow.scoring.modeling import pad_batch

    for index in range(count):
        chunk = [tokenized[(index * size + k) % len(tokenized)] for k in range(size)]
        input_ids, attention = pad_batch([r["input_ids"] for r in chunk], pad_id)
        yield input_ids, attention, torch.tensor([t for r in chunk for t in r["hard_targets"]])


def train(config, fmt, tokenized, pad_id: int, args, full_logits: bool) -> tuple[dict, object]:
    """Train a fresh model (seed 0) for args.steps; return its figures and the model."""
    import torch
    from transformers import LlamaForCausalLM

    from prmflow.scoring.modeling import step_loss, step_tag_logits

    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    with torch.device(args.device):
        model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    losses, tokens, started = [], 0, None
    for step, (input_ids, attention, targets) in enumerate(batches(tokenized, args.batch_size, args.steps, pad_id)):
        if step == args.warmup:
            if cuda:
                torch.cuda.synchronize()
            started, tokens = time.perf_counter(), 0
        input_ids, attention, targets = input_ids.to(args.device), attention.to(args.device), targets.to(args.device)
        with torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16):
            loss = step_loss(step_tag_logits(model, input_ids, attention, fmt, full_logits), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())  # .item() waits for the step: the clock sees finished work
        tokens += int(attention.sum())
    seconds = time.perf_counter() - started
    parameters = sum(p.numel() for p in model.parameters())
    tokens_per_second = tokens / seconds
    figures = {"tokens_per_second": tokens_per_second, "timed_steps": args.steps - args.warmup,
               "first_loss": losses[0], "last_loss": losses[-1],
               "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
               "mfu": 6 * parameters * tokens_per_second / (args.peak_tflops * 1e12) if cuda else None}
    del optimizer
    return figures, model


def score(model, tokenizer, fmt, rows: list[dict], device: str) -> dict:
    """The trained model through StepTagScorer in bfloat16 and float32: speed, and the largest difference."""
    import torch

    from prmflow.devices import Placement
    from prmflow.scoring.load import load
    from prmflow.scoring.tokenization import save_prompt_format

    solutions = [(r["problem"], r["steps"]) for r in rows]
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        save_prompt_format(fmt, directory)
        scores, seconds = {}, 0.0
        for dtype in ("float32", "bfloat16"):
            prm = load(directory, placement=Placement(device, dtype)).scorer  # its StepTagScorer
            prm.score_batch(solutions[:8])  # warm-up: kernels chosen, memory allocated
            started = time.perf_counter()
            scores[dtype] = [s for steps in prm.score_batch(solutions) for s in steps]
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started  # the bfloat16 pass: the last one
            del prm
    full, half = scores["float32"], scores["bfloat16"]
    return {"solutions": len(solutions), "steps": len(half), "solutions_per_second": len(solutions) / seconds,
            "steps_per_second": len(half) / seconds, "max_abs_bf16_minus_float32": max(abs(a - b) for a, b in
                                                                                      zip(full, half)),
            "float32_score_range": [min(full), max(full)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the tiny shape, a few steps (the CPU test)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per path (default 40; tiny 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 5; tiny 1)")
    parser.add_argument("--batch-size", type=int, default=None, help="solutions per step (default 32; tiny 4)")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--score", type=int, default=64, help="solutions scored in each dtype")
    parser.add_argument("--peak-tflops", type=float, default=H200_DENSE_BF16_TFLOPS,
                        help="the accelerator's dense BF16 peak for MFU (default: H100/H200 SXM)")
    parser.add_argument("--write-data", type=Path, help="write the carried solutions file here and stop")
    args = parser.parse_args()
    if args.write_data:
        write_data(args.write_data)
        return
    defaults = (3, 1, 4) if args.tiny else (40, 5, 32)
    args.steps, args.warmup, args.batch_size = [given if given is not None else default for given, default in
                                                zip((args.steps, args.warmup, args.batch_size), defaults)]
    import torch
    import transformers

    rows = [json.loads(line) for line in args.data.read_text().splitlines()]
    shape = SHAPES["tiny" if args.tiny else "full"]
    tokenizer, fmt, tokenized, config = build(rows, shape)
    report = {"device": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu",
              "torch": torch.__version__, "transformers": transformers.__version__, "shape": shape,
              "batch_size": args.batch_size, "mean_tokens_per_solution": sum(len(r["input_ids"]) for r in tokenized)
              / len(tokenized),
              # the GPU's peak behind MFU; no MFU (and so no peak) is computed on a CPU
              "peak_tflops": args.peak_tflops if args.device.startswith("cuda") else None}
    full_figures, model = train(config, fmt, tokenized, tokenizer.pad_token_id, args, full_logits=True)
    del model
    report["train_full_logits"] = full_figures
    report["train_tag_only"], model = train(config, fmt, tokenized, tokenizer.pad_token_id, args, full_logits=False)
    report["parameters"] = sum(p.numel() for p in model.parameters())
    report["score"] = score(model, tokenizer, fmt, rows[: args.score], args.device)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
