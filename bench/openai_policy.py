"""The `openai` labeling policy against a real `transformers serve` on loopback, by concurrency.

    .venv/bin/python bench/openai_policy.py                    # ~3 minutes on the shared 2-core machine
    .venv/bin/python bench/openai_policy.py --problems 2 --concurrency 1 4

Builds a small GPT-2 (4 layers, hidden 128, ~0.9 M parameters, the byte-level tokenizer of the
policy tests trained on generator text) and trains it for a few seconds on generator problems'
reference solutions in the prompt format: untrained, half its trajectories had a single step (1.8
steps on average in 16 samples, against 3.4 after training), which leaves `mc` few prefixes to
complete. The samples are still mostly wrong; what is measured is the labeling work, not its quality.

The same fixed generator problems are labeled with `label.policy: openai`, method `mc`, through
`prmflow.labeling.engine.sample_and_label`, at each concurrency, against `transformers serve` pinned to that
model dir (one uvicorn worker, `OMP_NUM_THREADS=1`); then with `--continuous-batching`, if that
server works on this CPU (else its error is recorded); and in process with the `transformers`
policy on the same model dir (batch 1 and the default batch 16) for reference. Per run: wall
time, completions (policy calls: trajectories and prefix completions, each one sampled
sequence), completions/s, generated tokens/s, retries, and `os.getloadavg()` before and after
(the machine is shared). Writes bench/results/openai_policy.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED = 1234
MODEL = {"n_embd": 128, "n_layer": 4, "n_head": 4, "n_positions": 512}
TRAIN_STEPS, TRAIN_BATCH, TRAIN_BLOCK = 150, 8, 128
# The workload: short solutions (2-3 steps) so that a run takes seconds, and enough completions per
# trajectory for concurrency to have requests to overlap.
INGEST = {"num_train": 4, "num_test": 1, "min_steps": 2, "max_steps": 3}
LABEL = {"method": "mc", "trajectories_per_problem": 2, "completions_per_step": 4, "max_new_tokens": 96,
         "temperature": 1.0}


def solution_texts(problems: list[dict]) -> list[str]:
    """Problems with their reference solutions in the policies' prompt format, ending at a final-answer line."""
    from prmflow.labeling.completion_text import prompt_text

    return [prompt_text(p, [*p["reference_steps"], f"#### {p['answer']}"]) for p in problems]


def build_policy_lm(directory: Path) -> dict:
    """Train the small GPT-2 on generator solutions (other problems than the workload's) and save it."""
    from tiny_models import fit_policy_lm

    from prmflow.config import IngestParams
    from prmflow.data.ingest import build_splits

    corpus = solution_texts(build_splits(IngestParams(num_train=400, num_test=1, min_steps=INGEST["min_steps"],
                                                      max_steps=INGEST["max_steps"]), seed=SEED + 1).splits["train"])
    return fit_policy_lm(directory, corpus, "gpt2", MODEL, TRAIN_STEPS, SEED, TRAIN_BATCH, TRAIN_BLOCK)


def label_run(policy, problems: list[dict], label_params) -> dict:
    """Label `problems` with `policy` (one made per run, so its counters are this run's)."""
    from prmflow.labeling.engine import sample_and_label

    load_before = os.getloadavg()
    start = time.perf_counter()
    results = [sample_and_label(policy, problem, label_params, SEED) for problem in problems]
    wall = time.perf_counter() - start
    calls = sum(r.policy_calls for r in results)
    tokens = sum(r.generated_tokens for r in results)
    return {"wall_s": wall, "policy_calls": calls, "completions_per_s": calls / wall,
            "generated_tokens": tokens, "generated_tokens_per_s": tokens / wall,
            "tokens_per_completion": tokens / max(calls, 1),
            "labeled_steps": sum(len(row["labels"]) for r in results for row in r.rows),
            "requests_or_generate_calls": policy.generate_calls, "retries": getattr(policy, "retries", None),
            "loadavg_before": load_before, "loadavg_after": os.getloadavg()}


def server_sweep(model_dir: Path, problems: list[dict], label_params, concurrencies: list[int], extra_args: tuple,
                 log_path: Path) -> tuple[list[dict], dict]:
    """Serve `model_dir` with `extra_args`, probe it with one request, then label at each concurrency."""
    from tiny_models import serve_policy_lm

    from prmflow.config import LabelParams
    from prmflow.labeling.openai_policy import OpenAIPolicy
    from prmflow.labeling.policies import make_policy
    from model_server import free_port

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/v1"
    start = time.perf_counter()
    info = {"args": list(extra_args), "works": False, "error": None}
    runs = []
    try:
        with serve_policy_lm(model_dir, port, log_path, extra_args):
            info["ready_s"] = time.perf_counter() - start
            # Warm-up, and the check that the server generates at all: no retries, so a broken one fails at once.
            probe = OpenAIPolicy(LabelParams(endpoint=endpoint, max_new_tokens=8, temperature=1.0, concurrency=1,
                                             request_timeout_s=60, max_retries=0))
            probe.complete(problems[0], [[]], random.Random(0))
            info["works"] = True
            for concurrency in concurrencies:
                params = dataclasses.replace(label_params, endpoint=endpoint, concurrency=concurrency)
                runs.append({"path": "openai, transformers serve" + "".join(f" {a}" for a in extra_args),
                             "concurrency": concurrency, **label_run(make_policy(params, seed=0), problems, params)})
                print(json.dumps(runs[-1]), flush=True)
    except Exception as error:  # a benchmark records why a server variant did not work and goes on
        info["error"] = f"{type(error).__name__}: {str(error)[-1500:]}"
        print(f"transformers serve {' '.join(extra_args)}: {info['error']}", flush=True)
    return runs, info


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "tests"))  # tiny_models: the policy tests' server and model helpers
    for key, value in {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(key, value)
    import torch

    from prmflow.config import IngestParams, LabelParams
    from prmflow.data.ingest import build_splits
    from prmflow.labeling.policies import make_policy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=INGEST["num_train"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the server (OMP_NUM_THREADS=1): one core each on this 2-core machine
    bench_start = time.perf_counter()
    ingest = IngestParams(**{**INGEST, "num_train": args.problems})
    problems = build_splits(ingest, seed=SEED).splits["train"]
    label_params = LabelParams(policy="openai", **LABEL)
    with tempfile.TemporaryDirectory(prefix="openai-policy-bench-") as tmp:
        model_dir = Path(tmp) / "policy-lm"
        model = build_policy_lm(model_dir)
        print(f"model: {model}", flush=True)
        runs, plain = server_sweep(model_dir, problems, label_params, args.concurrency, (), Path(tmp) / "serve.log")
        cb_runs, cb = server_sweep(model_dir, problems, label_params, args.concurrency, ("--continuous-batching",),
                                   Path(tmp) / "serve-cb.log")
        runs += cb_runs
        for batch_size in (1, LabelParams.batch_size):
            params = dataclasses.replace(label_params, policy="transformers", model_dir=str(model_dir),
                                         batch_size=batch_size)
            runs.append({"path": f"transformers in process, batch {batch_size}", "concurrency": None,
                         **label_run(make_policy(params, seed=0), problems, params)})
            print(json.dumps(runs[-1]), flush=True)
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "note": "2 cores shared with other "
                    "engineers' work; client and server 1 torch thread each", "python": platform.python_version(),
                    "torch": torch.__version__, "transformers": __import__("transformers").__version__},
        "model": model, "workload": {"ingest": dataclasses.asdict(ingest), "problems": len(problems),
                                     "label": {k: v for k, v in dataclasses.asdict(label_params).items()
                                               if k in LABEL}, "seed": SEED},
        "servers": {"plain": plain, "continuous_batching": cb}, "runs": runs,
        "bench_s": time.perf_counter() - bench_start,
    }
    out = ROOT / "bench" / "results" / "openai_policy.json"
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"{result['bench_s']:.0f} s -> {out}")


if __name__ == "__main__":
    main()
