"""Bounded load test of the served PRM: a real `mlflow models serve` on loopback, concurrent clients.

    .venv/bin/python bench/serve_load.py                       # models/prm, data/rollouts/test.jsonl
    .venv/bin/python bench/serve_load.py --requests 400 --concurrency 16
    .venv/bin/python bench/serve_load.py --outcome-dir models/orm --out bench/results/serve_load_combined.json

Logs the model exactly as the register stage does, into a throwaway sqlite store (the project's
mlflow/ is never touched), serves it, and for 1 and 16 solutions per request sends a fixed number
of requests from concurrent clients: p50/p95 latency, throughput, and errors (must be zero).
Then a burst of malformed requests, after which the server must still answer. The same payloads
scored in process (`Scorer.score`, one caller) give the HTTP + MLflow overhead by difference.
With `--degenerate-share 0.05` each size is run a second time with that share of the solutions
replaced by a degenerate one (its last step a 6,000-digit number, as a repetition loop writes): it
must also answer with 0 errors, every request 200 with all its predictions (`served_degenerate`).
Writes bench/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MALFORMED = [b"{not json", b"[]", b'{"inputs": 3}', b'{"inputs": [{"problem": "p", "steps": [""]}]}',
             b'{"inputs": [{"steps": ["a"]}]}', b'{"inputs": [{"problem": "p", "steps": ["a"]}], '
                                                 b'"params": {"aggregation": "max"}}']


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(latencies: list[float], wall: float, solutions_per_request: int) -> dict:
    return {"requests": len(latencies), "p50_ms": 1000 * percentile(latencies, 0.5),
            "p95_ms": 1000 * percentile(latencies, 0.95), "mean_ms": 1000 * statistics.fmean(latencies),
            "requests_per_s": len(latencies) / wall, "solutions_per_s": len(latencies) * solutions_per_request / wall}


DEGENERATE_STEP = "The total is " + "7" * 6000 + " coins."


def payloads(rows: list[dict], size: int, count: int, degenerate_share: float = 0.0) -> list[dict]:
    """`count` requests of `size` solutions each, cycling through the held-out rollouts; with
    `degenerate_share`, every (1 / share)-th solution overall ends in DEGENERATE_STEP."""
    every = round(1 / degenerate_share) if degenerate_share else 0
    out = []
    for index in range(count):
        start = (index * size) % len(rows)
        chunk = [rows[(start + k) % len(rows)] for k in range(size)]
        inputs = [{"problem": r["problem"], "steps": r["steps"]} for r in chunk]
        for k, solution in enumerate(inputs):
            if every and (index * size + k) % every == every - 1:
                solution["steps"] = solution["steps"][:1] + [DEGENERATE_STEP]
        out.append({"inputs": inputs, "params": {"aggregation": "min"}})
    return out


def load(url: str, requests_: list[dict], concurrency: int) -> tuple[list[float], list[str], float]:
    import requests

    session_per_thread: dict[int, requests.Session] = {}

    def one(payload: dict) -> tuple[float, str | None]:
        import threading

        session = session_per_thread.setdefault(threading.get_ident(), requests.Session())
        start = time.perf_counter()
        try:
            response = session.post(f"{url}/invocations", json=payload, timeout=120)
            ok = response.status_code == 200 and len(response.json()["predictions"]) == len(payload["inputs"])
            error = None if ok else f"{response.status_code}: {response.text[:200]}"
        except Exception as err:  # a benchmark counts every failure rather than stopping at the first
            error = repr(err)
        return time.perf_counter() - start, error

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, requests_))
    wall = time.perf_counter() - start
    return [r[0] for r in results], [r[1] for r in results if r[1]], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(ROOT / "models" / "prm"))
    parser.add_argument("--outcome-dir", default=None,
                        help="a trained ORM (models/orm): serve the combined model (register.model_kind: combined)")
    parser.add_argument("--rollouts", default=str(ROOT / "data" / "rollouts" / "test.jsonl"))
    parser.add_argument("--requests", type=int, default=200, help="requests per payload size")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16], help="solutions per request")
    parser.add_argument("--degenerate-share", type=float, default=0.0,
                        help="also run each size with this share of degenerate solutions (e.g. 0.05)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve_load.json"))
    args = parser.parse_args()
    for key, value in {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                       "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
        os.environ.setdefault(key, value)
    import requests
    import torch

    import mlflow
    from prmflow.jsonl import read_jsonl
    from prmflow.serving.model_server import model_server
    from prmflow.serving.register import log_prm
    from prmflow.serving.scorer import ServingConfig, Solution, load_scorer

    torch.set_num_threads(1)
    rows = read_jsonl(args.rollouts, required=("problem", "steps"))
    config = ServingConfig(max_solutions_per_request=max(args.sizes), batch_size=32)
    result = {"model_dir": args.model_dir, "outcome_dir": args.outcome_dir, "rollouts": args.rollouts, "concurrency": args.concurrency,
              "server": "mlflow models serve --env-manager local (1 uvicorn worker), OMP_NUM_THREADS=1",
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "mlflow": mlflow.__version__, "torch": torch.__version__},
              "serving_config": dataclasses.asdict(config), "served": {}, "served_degenerate": {},
              "degenerate_share": args.degenerate_share, "in_process": {}}
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("bench", artifact_location=Path(tmp, "a").as_uri()))
        with mlflow.start_run():
            version = log_prm(args.model_dir, dataclasses.asdict(config), "prm",
                              outcome_dir=args.outcome_dir).registered_model_version
        model_uri = f"models:/prm/{version}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        started = time.perf_counter()
        with model_server(model_uri, env, tmp, Path(tmp, "serve.log")) as url:
            result["server_ready_s"] = time.perf_counter() - started
            for size in args.sizes:
                batch = payloads(rows, size, args.requests)
                load(url, batch[: args.concurrency], args.concurrency)  # warm-up, not counted
                latencies, errors, wall = load(url, batch, args.concurrency)
                result["served"][str(size)] = summary(latencies, wall, size) | {"errors": len(errors),
                                                                               "error_examples": errors[:3]}
                print(f"served  {size:>2} solutions/request: {result['served'][str(size)]}")
                if args.degenerate_share:
                    latencies, errors, wall = load(url, payloads(rows, size, args.requests, args.degenerate_share),
                                                   args.concurrency)
                    result["served_degenerate"][str(size)] = summary(latencies, wall, size) | {
                        "errors": len(errors), "error_examples": errors[:3]}
                    print(f"served  {size:>2} solutions/request, {args.degenerate_share:.0%} degenerate: "
                          f"{result['served_degenerate'][str(size)]}")
            with ThreadPoolExecutor(args.concurrency) as pool:
                codes = list(pool.map(lambda body: requests.post(
                    f"{url}/invocations", data=body, headers={"Content-Type": "application/json"},
                    timeout=60).status_code, MALFORMED * 20))
            after = requests.post(f"{url}/invocations", json=payloads(rows, 1, 1)[0], timeout=60).status_code
            result["malformed_burst"] = {"requests": len(codes), "all_4xx": all(400 <= c < 500 for c in codes),
                                         "status_codes": sorted(set(codes)), "valid_request_after": after}
            print(f"malformed burst: {result['malformed_burst']}")
        scorer = load_scorer(model_uri)
        for size in args.sizes:
            batch = [[Solution(**s) for s in p["inputs"]] for p in payloads(rows, size, args.requests)]
            scorer.score(batch[0])
            latencies, start = [], time.perf_counter()
            for solutions in batch:
                t = time.perf_counter()
                scorer.score(solutions)
                latencies.append(time.perf_counter() - t)
            result["in_process"][str(size)] = summary(latencies, time.perf_counter() - start, size)
            print(f"in-proc {size:>2} solutions/request: {result['in_process'][str(size)]}")
    errors = sum(r["errors"] for part in ("served", "served_degenerate") for r in result[part].values())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if errors or not result["malformed_burst"]["all_4xx"] or result["malformed_burst"]["valid_request_after"] != 200:
        sys.exit(f"serve_load: {errors} errors under load or the server misbehaved after malformed requests")


if __name__ == "__main__":
    main()
