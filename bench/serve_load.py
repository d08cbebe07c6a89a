"""The served PRM under load: real `mlflow models serve` (this code and a baseline commit's) and vLLM, side by side.

    .venv/bin/python bench/serve_load.py                               # models/prm, data/rollouts/test.jsonl
    .venv/bin/python bench/serve_load.py --requests 10000 --clients 16 --baseline-rev f094e35 \\
        --vllm-python .venv-vllm/bin/python                             # the BENCHMARKS.md run (~25 min, 2 cores)

Logs the model as the register stage does into a throwaway sqlite store (the project's mlflow/ is never touched)
and, for each server:
1. throughput: `--throughput-requests` one-solution requests (held-out rollouts) from `--clients` concurrent
   clients: requests/s, p50/p95 latency, and every answer compared with the candidate's solo score
   (tests/load_check.py: mismatch); the baseline commit's code (logged by that commit's own `log_prm`) is served the same way,
   so the speed-up and the baseline's wrong answers come from one run on one machine;
2. the mixed run (this code only): `--requests` requests, a `--hostile-share` of hostile bodies, hostile
   candidates among the valid ones (load_check.run_mix): wrong answers, 5xx, long 4xx, p50/p95;
3. memory: the server's resident memory (all processes of its group) at start, after the runs, right after
   `--large-requests` concurrent requests of ~3.9 MB each, and 10 s later;
4. vLLM (with `--vllm-python`): `prmflow serve-vllm` of the same version, the same one-solution candidates as
   token ids to /pooling from the same number of clients: requests/s and p95, scores compared with MLflow's.
Writes bench/results/serve_load.json. Only loopback addresses are used.
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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # load_check, model_server: the serving tests' helpers (not in the package)
VLLM_READY_TIMEOUT_S = 900


def group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in process group `pgid` (the server and its uvicorn worker), in MB."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5 of /proc/PID/stat: the process group
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # field 24: resident pages
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e6


def timed(one, items: list, clients: int) -> tuple[list[float], list[str | None], float]:
    """Run `one(item) -> error or None` over `items` from `clients` threads: latencies, errors, wall seconds."""
    def call(item):
        start = time.perf_counter()
        error = one(item)
        return time.perf_counter() - start, error

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as executor:
        results = list(executor.map(call, items))
    return [r[0] for r in results], [r[1] for r in results], time.perf_counter() - start


def summary(latencies: list[float], errors: list, wall: float) -> dict:
    ordered = sorted(latencies)
    at = lambda q: 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]  # noqa: E731
    failed = [e for e in errors if e]
    return {"requests": len(latencies), "requests_per_s": len(latencies) / wall, "p50_ms": at(0.5),
            "p95_ms": at(0.95), "wrong_or_failed": len(failed), "examples": failed[:3]}


def mlflow_throughput(url: str, pool: list[dict], solo: list[dict], count: int, clients: int) -> dict:
    """One-solution requests cycling through `pool`, every answer checked against its solo prediction."""
    import requests

    from load_check import mismatch

    local = threading.local()

    def one(index: int) -> str | None:
        local.session = getattr(local, "session", None) or requests.Session()
        response = local.session.post(f"{url}/invocations", json={"inputs": [pool[index]]}, timeout=300)
        if response.status_code != 200:
            return f"{response.status_code}: {response.text[:200]}"
        return mismatch(response.json()["predictions"][0], solo[index], 1e-5)

    timed(one, list(range(clients)), clients)  # warm-up, not counted
    return summary(*timed(one, [i % len(pool) for i in range(count)], clients))


def vllm_throughput(url: str, model_dir: Path, pool: list[dict], solo: list[dict], count: int, clients: int) -> dict:
    """The same one-solution candidates to vLLM's /pooling (encoded by prmflow.load's PRM in each client thread)."""
    import prmflow

    local = threading.local()
    differences: list[float] = []

    def one(index: int) -> str | None:
        local.scorer = getattr(local, "scorer", None) or prmflow.load(f"{url}/pooling", checkpoint=model_dir)
        (prediction,) = local.scorer.score([(pool[index]["problem"], pool[index]["steps"])])
        scores = prediction.step_scores
        differences.extend(abs(a - b) for a, b in zip(scores, solo[index]["step_scores"]))
        return None if len(scores) == len(solo[index]["step_scores"]) else "scored steps differ"

    timed(one, list(range(clients)), clients)
    return summary(*timed(one, [i % len(pool) for i in range(count)], clients)) | {
        "max_abs_difference_from_mlflow": max(differences, default=0.0)}


def log_baseline(rev: str, model_dir: Path, config: dict, tmp: str, uri: str) -> str:
    """Register `model_dir` with the code of commit `rev` (its own log_prm, so its own code is served)."""
    source = Path(tmp, "baseline")
    source.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    code = (f"import json, mlflow; from prmflow.serving.register import log_prm\n"
            f"mlflow.set_experiment('bench')\n"
            f"with mlflow.start_run(): print(log_prm({str(model_dir)!r}, json.loads({json.dumps(config)!r}), "
            f"'prm-baseline').registered_model_version)")
    env = {**os.environ, "PYTHONPATH": str(source / "src"), "MLFLOW_TRACKING_URI": uri}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


def serve(model_uri: str, env: dict, tmp: str, name: str):
    from model_server import free_port, loopback_process

    port = free_port()
    cmd = ["mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    return port, loopback_process(cmd, f"http://127.0.0.1:{port}/ping", env, tmp, Path(tmp, f"{name}.log"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(ROOT / "models" / "prm"))
    parser.add_argument("--rollouts", default=str(ROOT / "data" / "rollouts" / "test.jsonl"))
    parser.add_argument("--requests", type=int, default=2000, help="requests in the mixed run (0: no mixed run)")
    parser.add_argument("--throughput-requests", type=int, default=800, help="one-solution requests per server")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--hostile-share", type=float, default=0.25)
    parser.add_argument("--large-requests", type=int, default=12, help="concurrent ~3.9 MB requests (memory)")
    parser.add_argument("--baseline-rev", default=None, help="a commit whose server to measure beside this one")
    parser.add_argument("--vllm-python", default=None, help="vLLM's venv interpreter: measure its server too")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve_load.json"))
    args = parser.parse_args()
    for key, value in {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                       "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
        os.environ.setdefault(key, value)
    import requests
    import torch

    import mlflow
    from prmflow.config import Params
    from prmflow.jsonl import read_jsonl
    from load_check import candidate_pool, mlflow_door, run_mix, solo_answers
    from model_server import free_port, loopback_process
    from prmflow.serving.register import log_prm
    from prmflow.serving.scorer import ServingConfig

    config = ServingConfig.from_params(Params())
    rows = read_jsonl(args.rollouts, required=("problem", "steps"))
    plain = [{"problem": r["problem"], "steps": r["steps"]} for r in rows[:64]]
    pool = candidate_pool(rows, config.max_request_bytes)
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "date": time.strftime("%Y-%m-%d"),
              "model_dir": args.model_dir, "clients": args.clients,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "mlflow": mlflow.__version__,
                          "torch": torch.__version__, "note": "2 shared cores; other work ran beside it"},
              "serving_config": dataclasses.asdict(config), "servers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("bench", artifact_location=Path(tmp, "a").as_uri()))
        with mlflow.start_run():
            version = log_prm(args.model_dir, dataclasses.asdict(config),
                              registered_model_name="prm").registered_model_version
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        port, server = serve(f"models:/prm/{version}", env, tmp, "current")
        with server as proc:
            url = f"http://127.0.0.1:{port}"
            memory = {"at_start_mb": group_rss_mb(proc.pid)}
            door = mlflow_door(url, config.max_request_bytes)
            solo_plain = solo_answers(door, plain)
            current = {"throughput_1_solution": mlflow_throughput(url, plain, solo_plain, args.throughput_requests,
                                                                  args.clients)}
            print("current throughput:", current["throughput_1_solution"], flush=True)
            if args.requests:
                current["mixed_run"] = run_mix(door, pool, solo_answers(door, pool), clients=args.clients,
                                               requests=args.requests, hostile_share=args.hostile_share, seed=0)
                print("current mixed run:", {k: v for k, v in current["mixed_run"].items() if k != "examples"},
                      flush=True)
            memory["after_runs_mb"] = group_rss_mb(proc.pid)
            large = {"inputs": [{"problem": rows[0]["problem"], "steps": ["7 " * 1_950_000]}]}  # ~3.9 MB
            _, codes, wall = timed(lambda _: None if requests.post(f"{url}/invocations", json=large, timeout=600)
                                   .status_code == 200 else "not 200", range(args.large_requests), args.large_requests)
            memory |= {"large_requests": args.large_requests, "large_requests_wall_s": wall,
                       "large_requests_failed": sum(bool(c) for c in codes), "after_large_mb": group_rss_mb(proc.pid)}
            time.sleep(10)
            memory["10_s_later_mb"] = group_rss_mb(proc.pid)
            current["memory"] = memory
            print("current memory:", memory, flush=True)
        result["servers"]["mlflow_current"] = current
        if args.baseline_rev:
            baseline_version = log_baseline(args.baseline_rev, Path(args.model_dir), dataclasses.asdict(config), tmp, uri)
            port, server = serve(f"models:/prm-baseline/{baseline_version}", env, tmp, "baseline")
            with server:
                url = f"http://127.0.0.1:{port}"
                throughput = mlflow_throughput(url, plain, solo_answers(mlflow_door(url, config.max_request_bytes),
                                                                        plain), args.throughput_requests, args.clients)
            result["servers"]["mlflow_baseline"] = {"rev": args.baseline_rev, "throughput_1_solution": throughput}
            print("baseline throughput:", throughput, flush=True)
            result["speedup_1_solution"] = (current["throughput_1_solution"]["requests_per_s"]
                                            / throughput["requests_per_s"])
        if args.vllm_python:
            port = free_port()
            command = ["prmflow", "serve-vllm", "--model", f"models:/prm/{version}", "--port", str(port),
                       "--python", str(Path(args.vllm_python).absolute())]  # the server runs in `tmp`
            with loopback_process(command, f"http://127.0.0.1:{port}/health", env | {"VLLM_CPU_KVCACHE_SPACE": "1"},
                                  tmp, Path(tmp, "vllm.log"), ready_timeout=VLLM_READY_TIMEOUT_S):
                throughput = vllm_throughput(f"http://127.0.0.1:{port}", Path(args.model_dir), plain, solo_plain,
                                             args.throughput_requests, args.clients)
            result["servers"]["vllm"] = {"throughput_1_solution": throughput}
            print("vllm throughput:", throughput, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    mixed = result["servers"]["mlflow_current"].get("mixed_run", {"wrong": 0, "server_errors": 0, "bad_4xx": 0,
                                                                  "hostile_accepted": 0})
    if mixed["wrong"] or mixed["server_errors"] or mixed["bad_4xx"] or mixed["hostile_accepted"]:
        sys.exit(f"serve_load: the current server answered wrong under load: {mixed['examples']}")


if __name__ == "__main__":
    main()
