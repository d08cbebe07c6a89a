"""Do trained weights depend on the CPU kernels torch picks? The same `prmflow train`, run with only the
vector-kernel path changed (`ATEN_CPU_CAPABILITY`), on the same tokenized data (docs/operations.md).

    .venv/bin/python bench/kernel_paths.py     # ~2 minutes; writes bench/results/kernel_paths.json

A tiny project in a temporary folder: 40 generated problems labeled by the simulated policy (seed 7),
48 solutions tokenized, a 1-layer builtin model of width 16 trained for 2 epochs (12 steps), 1 thread.
Each capability in turn, the unset one first and last (does a run agree with itself?): the md5 of
`models/prm/model.safetensors` and `train_loss` of `reports/train.json`. A capability the CPU lacks
falls back to a lower one (torch's rule), so the table says which one torch reports for this machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAPABILITIES = ("", "default", "avx2", "")  # "" leaves the variable unset: torch's own choice


def make_project(folder: Path) -> None:
    import yaml

    from prmflow.config import BaseParams, IngestParams, LabelParams, ModelParams, Params, TrainParams
    from prmflow.data.ingest import build_splits
    from prmflow.jsonl import write_jsonl
    from prmflow.labeling.label import rollout_rows
    from prmflow.training import tokenize_stage

    splits = build_splits(IngestParams(num_train=40, num_test=10), seed=7).splits
    rows = rollout_rows(splits["train"], LabelParams(trajectories_per_problem=3, completions_per_step=4), seed=7)
    os.chdir(folder)
    write_jsonl("data/rollouts/train.jsonl", rows[:48])
    write_jsonl("data/rollouts/test.jsonl", rows[48:54])
    params = Params(base=BaseParams(mlflow_tracking_uri="sqlite:///mlflow/mlflow.db"),
                    model=ModelParams(vocab_size=300, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32),
                    train=TrainParams(epochs=2.0, batch_size=8, save_steps=0))
    Path("params.yaml").write_text(yaml.safe_dump(dataclasses.asdict(params)))
    tokenize_stage.main(params)


def train(folder: Path, capability: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"} | {"OMP_NUM_THREADS": "1"}
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    proc = subprocess.run([str(Path(sys.executable).parent / "prmflow"), "train"], cwd=folder, env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                           env=env, capture_output=True, text=True)
    report = json.loads((folder / "reports/train.json").read_text())
    return {"ATEN_CPU_CAPABILITY": capability or "unset", "torch_capability": probe.stdout.strip(),
            "model_md5": hashlib.md5((folder / "models/prm/model.safetensors").read_bytes()).hexdigest(),
            "train_loss": report["train_loss"], "steps": report["steps"]}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_project(folder)
        runs = [train(folder, capability) for capability in CAPABILITIES]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    result = {"machine": {"platform": platform.platform(), "cpu": cpu, "threads": 1}, "runs": runs,
              "same_capability_agrees": runs[0]["model_md5"] == runs[-1]["model_md5"],
              "distinct_models": len({run["model_md5"] for run in runs})}
    out = ROOT / "bench" / "results" / "kernel_paths.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
