"""The GSM8K profile's train-size curve: SmolLM2-135M trained on N problems, measured on the same held-out sets.

    OMP_NUM_THREADS=1 .venv/bin/python bench/train_size_curve.py --sizes 100 300 900 --keep /tmp/curve

For each N in `--sizes`: a fresh project (bench/smollm2_profile.py's profile `gsm8k`, its GSM8K train limit set
to N, the test limit to `--test-problems`, the same for every N) runs ingest, label, validate, tokenize and train
with `dvc repro --single-item`; then bench/real_candidates.py scores the trained PRM on the first
`--real-problems` problems of the real QwQ-32B candidates (`--mixed-only`) and on the project's held-out GSM8K
rollouts. One point per N: training figures (steps, loss, seconds, peak memory) and the metrics with their 95%
intervals, in bench/results/train_size_curve.json (each point written as soon as it is measured, so a run cut
short keeps the finished points; a rerun skips the sizes already there).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pipeline_stages import BIN, ROOT, make_project, timed, tool_env
from smollm2_profile import TRAIN_REPORTED, profile, smollm2_folder, with_overrides

STAGES = ("check", "ingest", "label", "validate", "tokenize", "train")
CURVE_METRICS = ("best_of_n_prm_min", "best_of_n_pass_at_1", "best_of_n_majority",
                 "best_of_n_prm_min_minus_pass_at_1", "best_of_n_prm_min_minus_majority", "mixed_solution_auroc",
                 "heldout_step_auroc", "heldout_first_error_f1", "heldout_best_of_n_prm_min")


def train_and_measure(project: Path, params: dict, real_problems: int, label: str = "") -> dict:
    """Write `params` into `project`, run ingest -> train there (one `dvc repro --single-item` per stage), and measure
    the PRM with bench/real_candidates.py: the first `real_problems` QwQ-32B GSM8K problems (`--mixed-only`) and the
    project's held-out rollouts. The point's training figures, stage seconds and CURVE_METRICS (with intervals)."""
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    seconds = {}
    for stage in STAGES:
        seconds[stage] = timed([str(BIN / "dvc"), "repro", "--single-item", stage], project)
        print(f"{label}{stage:>9}: {seconds[stage]:7.1f} s", flush=True)
    train = json.loads((project / "reports" / "train.json").read_text())
    measured = project / "real_candidates.json"
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "bench" / "real_candidates.py"), str(project / "models" / "prm"),
                    "--candidates", str(ROOT.parent / "shared" / "data" / "strictprm" / "gsm8k_bon16_dev.jsonl"),
                    "--problems", str(real_problems), "--workers", "1", "--mixed-only",
                    "--heldout", str(project / "data" / "rollouts" / "test.jsonl"), "--out", str(measured)],
                   check=True, env=tool_env(project), stdout=subprocess.DEVNULL)
    seconds["measure"] = time.perf_counter() - started
    real = json.loads(measured.read_text())
    return {"labeled_solutions": train.get("examples"), "stages_seconds": seconds,
            "train": {k: train[k] for k in TRAIN_REPORTED if k in train},
            "real_problems": real["problems"], "real_mixed_problems": real["mixed_problems"],
            "heldout_solutions": real["heldout_solutions"],
            "metrics": {k: v for k, v in real["metrics"].items()
                        if k.removesuffix("_ci_low").removesuffix("_ci_high") in CURVE_METRICS}}


def point(size: int, args, folder: str, defaults: dict) -> dict:
    """Train on `size` GSM8K problems in a new project under args.keep and measure the PRM."""
    project = (args.keep / f"train{size}").resolve()
    project.mkdir(parents=True)
    make_project(project)
    spec = profile("gsm8k", folder, size, args.test_problems)
    return {"train_problems": size, **train_and_measure(project, with_overrides(defaults, spec["params"]),
                                                         args.real_problems, label=f"N={size} ")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 900], help="GSM8K train problems per point")
    parser.add_argument("--test-problems", type=int, default=40, help="held-out GSM8K test problems (every point)")
    parser.add_argument("--real-problems", type=int, default=100, help="QwQ-32B candidate problems (every point)")
    parser.add_argument("--keep", type=Path, required=True, help="a folder for the projects (one per size)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_size_curve.json")
    args = parser.parse_args()
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())
    folder = smollm2_folder()
    result = json.loads(args.out.read_text()) if args.out.exists() else {"command": " ".join(sys.argv), "points": []}
    done = {p["train_problems"] for p in result["points"]}
    for size in args.sizes:
        if size in done:
            continue
        result["points"].append(point(size, args, folder, defaults))
        result["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["points"][-1], indent=2), flush=True)


if __name__ == "__main__":
    main()
