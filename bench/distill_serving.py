"""The distilled student served two ways: `mlflow models serve` and `prmflow serve-vllm` (vLLM's pooling runner) of
the same registered version must give the same step scores (to 1e-5) on held-out QwQ-32B candidates.

    PRMFLOW_VLLM_PYTHON=.venv-vllm/bin/python .venv/bin/python bench/distill_serving.py \
        --model models:/prm-distill@champion --tracking-uri sqlite:///mlflow/mlflow.db --candidates 24

Both servers run on loopback, each in its own process group, stopped by its id at the end. Writes
bench/results/distill_serving.json (max |difference|, candidates, steps, seconds to ready).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(cmd: list[str], health_url: str, env: dict, log_path: Path, timeout: float):
    """Start `cmd` in its own session; yield the seconds it took to answer `health_url`; stop its group."""
    import requests

    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        started = time.monotonic()
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[:3]} exited {proc.returncode}: {log_path.read_text()[-2000:]}")
                with contextlib.suppress(requests.ConnectionError):
                    if requests.get(health_url, timeout=2).status_code == 200:
                        break
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"{cmd[:3]} did not answer {health_url} in {timeout} s")
                time.sleep(1)
            yield time.monotonic() - started
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    import mlflow

    from prmflow.scoring.load import load

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models:/prm-distill@champion")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow/mlflow.db")
    parser.add_argument("--pool", default=str(ROOT.parent / "shared/data/strictprm/gsm8k_bon16_dev.jsonl"))
    parser.add_argument("--candidates", type=int, default=24)
    parser.add_argument("--timeout", type=float, default=1500)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "distill_serving.json"))
    parser.add_argument("--logs", default="/tmp")
    args = parser.parse_args()
    from prmflow.data.sources import parse_candidates

    rows = [parse_candidates(json.loads(line), {}) for line in open(args.pool)][-args.candidates:]
    solutions = [(r["problem"], r["steps"]) for r in rows]
    env = dict(os.environ, MLFLOW_TRACKING_URI=args.tracking_uri, OMP_NUM_THREADS="1", VLLM_CPU_KVCACHE_SPACE="1")
    mlflow.set_tracking_uri(args.tracking_uri)
    downloaded = Path(mlflow.artifacts.download_artifacts(args.model))
    model_dir = next(downloaded.rglob("prm_config.json")).parent  # the logged model's model_dir artifact
    logs = Path(args.logs)
    port = free_port()
    mlflow_cmd = ["mlflow", "models", "serve", "-m", args.model, "--env-manager", "local", "-h", "127.0.0.1",
                  "-p", str(port)]
    with serving(mlflow_cmd, f"http://127.0.0.1:{port}/ping", env, logs / "distill-mlflow.log", 600) as mlflow_ready:
        served = load(f"http://127.0.0.1:{port}", batch_size=len(solutions), request_timeout_s=1200).score(solutions)
        mlflow_scores = [p.step_scores for p in served]
    port = free_port()
    vllm_cmd = ["prmflow", "serve-vllm", "--model", args.model, "--port", str(port),
                "--python", os.environ["PRMFLOW_VLLM_PYTHON"]]
    with serving(vllm_cmd, f"http://127.0.0.1:{port}/health", env, logs / "distill-vllm.log", args.timeout) as vllm_ready:
        pooled = load(f"http://127.0.0.1:{port}/pooling", checkpoint=model_dir, request_timeout_s=900).score(solutions)
        vllm_scores = [p.step_scores for p in pooled]
    pairs = [(a, b) for m, v in zip(mlflow_scores, vllm_scores) for a, b in zip(m, v)]
    lengths_equal = all(len(m) == len(v) for m, v in zip(mlflow_scores, vllm_scores))
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": 1}, "model": args.model,
              "command": " ".join(["bench/distill_serving.py", *sys.argv[1:]]), "candidates": len(solutions),
              "steps": len(pairs), "same_step_counts": lengths_equal,
              "max_abs_difference": max(abs(a - b) for a, b in pairs), "mlflow_ready_s": mlflow_ready,
              "vllm_ready_s": vllm_ready, "score_range": [min(a for a, _ in pairs), max(a for a, _ in pairs)]}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not lengths_equal or result["max_abs_difference"] > 1e-5:
        raise SystemExit("the two servers disagree")


if __name__ == "__main__":
    main()
