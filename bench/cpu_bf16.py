"""bfloat16 autocast against float32 for training on this CPU, in one run: step time, peak memory, final loss and
held-out step AUROC, for SmolLM2-135M (full fine-tuning and LoRA) and the builtin toy.

    OMP_NUM_THREADS=1 .venv/bin/python bench/cpu_bf16.py     # ~20-30 min on a shared core; bench/results/cpu_bf16.json

One temporary project (bench/pipeline_stages.py's make_project) per base: SmolLM2-135M-Instruct (the packaged
GGUF; profiles/gsm8k.yaml's params) on the first `--problems` GSM8K train problems, and the builtin model (the
default params) on `--toy-problems` generated problems; both labeled by the simulated policy and tokenized once.
Then each variant runs `prmflow train` in its own process (so the peak resident set is its own) with
`model.dtype: float32` or `bfloat16` (autocast over float32 weights, what `auto` picks for SmolLM2 on a CPU with
AMX / AVX-512 BF16; the report's `precision` says what ran), and its saved PRM scores the held-out rollouts in float32 (step AUROC over every
held-out step against the MC labels). Step time = training seconds / optimizer steps, the same batches in
every variant (same seed, same data order).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pipeline_stages import BIN, ROOT, make_project, timed
from smollm2_profile import profile, smollm2_folder, with_overrides

# (name, base, precision, train overrides); the base's data is made once.
# `bfloat16` trains in autocast over float32 weights (build_model loads float32): what `auto` picks for a wide
# model on a CPU with bfloat16 units, forced here for the builtin model too.
VARIANTS = [("smollm2_full_float32", "smollm2", "float32", {}), ("smollm2_full_bf16", "smollm2", "bfloat16", {}),
            ("smollm2_lora_bf16", "smollm2", "bfloat16", {"lora_r": 8, "learning_rate": 5e-4}),
            ("builtin_float32", "builtin", "float32", {}), ("builtin_bf16", "builtin", "bfloat16", {})]


def base_params(base: str, args) -> dict:
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())
    if base == "builtin":
        return with_overrides(defaults, {"ingest": {"num_train": args.toy_problems, "num_test": 50},
                                         "label": {"compare_methods_on": 0}})
    spec = profile("gsm8k", smollm2_folder(), args.problems, args.test_problems)
    return with_overrides(defaults, {k: v for k, v in spec["params"].items() if k != "evaluate"}
                          | {"train": spec["params"]["train"] | {"save_steps": 0}})


def held_out_step_auroc(project: Path) -> dict:
    """Step AUROC of the project's saved PRM (float32) over every held-out step, and the scoring seconds."""
    sys.path.insert(0, str(ROOT / "src"))
    from prmflow.evaluation.metrics import auroc
    from prmflow.jsonl import read_jsonl
    from prmflow.devices import Placement
    from prmflow.scoring.load import load

    rows = read_jsonl(project / "data" / "rollouts" / "test.jsonl")
    started = time.perf_counter()
    scores = load(project / "models" / "prm", placement=Placement("cpu", "float32"), batch_size=16).step_scores(
        [(r["problem"], r["steps"]) for r in rows])[0]
    seconds = time.perf_counter() - started
    flat = [(x, label == "+") for r, s in zip(rows, scores) for x, label in zip(s, r["labels"])]
    return {"step_auroc": auroc([x for x, _ in flat], [p for _, p in flat]), "test_steps": len(flat),
            "scoring_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=24, help="GSM8K train problems for SmolLM2 (x4 rollouts)")
    parser.add_argument("--test-problems", type=int, default=8)
    parser.add_argument("--toy-problems", type=int, default=500, help="generated train problems for the builtin")
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cpu_bf16.json")
    args = parser.parse_args()
    chosen = [v for v in VARIANTS if not args.only or v[0] in args.only.split(",")]
    results = {}
    with tempfile.TemporaryDirectory(prefix="prmflow-bf16-") as tmp:
        projects = {}
        for name, base, dtype, train in chosen:
            if base not in projects:
                projects[base] = Path(tmp) / base
                projects[base].mkdir()
                make_project(projects[base])
                (projects[base] / "params.yaml").write_text(yaml.safe_dump(base_params(base, args), sort_keys=False))
                for stage in ("check", "ingest", "label", "validate", "tokenize"):
                    timed([str(BIN / "dvc"), "repro", "--single-item", stage], projects[base])
            project = projects[base]
            params = base_params(base, args)
            params["model"]["dtype"] = dtype
            params["train"] |= train
            (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            timed([str(BIN / "prmflow"), "train"], project)  # the stage itself, outside dvc: no caching
            report = json.loads((project / "reports" / "train.json").read_text())
            results[name] = {k: report[k] for k in ("precision", "steps", "seconds", "train_loss", "final_loss",
                                                     "peak_memory_mb", "tokens_per_second", "examples", "parameters")}
            results[name]["step_seconds"] = report["seconds"] / report["steps"]
            results[name] |= held_out_step_auroc(project)
            print(name, json.dumps(results[name]), flush=True)
    result = {"machine": {"platform": platform.platform(), "processor": platform.processor(), "threads": 1,
                          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                          "note": "2 cores shared with other developers' work while this ran"},
              "args": vars(args) | {"out": str(args.out)}, "variants": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
