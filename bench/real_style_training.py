"""SmolLM2 trained on real generator output (QwQ-32B's MATH-500 candidates, outcome labels), measured on QwQ-32B's
GSM8K candidates: does a PRM trained in the generator's own style pick better than a random candidate?

    OMP_NUM_THREADS=1 .venv/bin/python bench/real_style_training.py --train-problems 64 --keep /tmp/real_style

The GSM8K profile's SmolLM2 runs (bench/train_size_curve.py) learn the simulated policy's style and transfer
nothing to QwQ-32B's candidates. Here the training data is QwQ-32B's own output on other problems: the MATH-500
half of the StrictPRMBench pools (../shared/data/strictprm, never copied into the project), converted to TRL's
stepwise format in the project's `data/incoming`-free source file, each step labeled with its candidate's outcome
(`+` for every step of a right candidate, `-` for every step of a wrong one: the value target of Math-Shepherd's
outcome-supervised baseline, since these candidates carry no step labels). Problems with both right and wrong
candidates come first. `--test-problems` further MATH-500 problems are the project's held-out split. The pipeline
(ingest, label: pass-through of pre-labeled rows, validate, tokenize, train) runs with the GSM8K profile's model
and train sections; then bench/real_candidates.py measures the trained PRM on the first `--real-problems`
GSM8K problems of the QwQ-32B pool (`--mixed-only`), exactly as the train-size curve does.
Writes bench/results/real_style_training.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import yaml

from pipeline_stages import ROOT, make_project
from smollm2_profile import profile, smollm2_folder, with_overrides
from train_size_curve import train_and_measure

POOLS = ROOT.parent / "shared" / "data" / "strictprm"


def stepwise_rows(candidates: list[dict], problems: int, skip: int = 0) -> list[dict]:
    """TRL stepwise rows (prompt, completions, labels) of `problems` problems after the first `skip`, mixed problems
    (right and wrong candidates) first, every step labeled with its candidate's outcome."""
    by_problem = defaultdict(list)
    for row in candidates:
        by_problem[row["problem_id"]].append(row)
    ordered = sorted(by_problem, key=lambda p: len({bool(r["correct"]) for r in by_problem[p]}) != 2)
    return [{"prompt": r["problem"], "completions": r["steps"], "labels": [bool(r["correct"])] * len(r["steps"])}
            for p in ordered[skip: skip + problems] for r in by_problem[p] if r["steps"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-problems", type=int, default=64, help="MATH-500 problems (16 candidates each)")
    parser.add_argument("--test-problems", type=int, default=8, help="further MATH-500 problems held out")
    parser.add_argument("--real-problems", type=int, default=100, help="QwQ-32B GSM8K problems measured")
    parser.add_argument("--keep", type=Path, required=True, help="a new folder for the project")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "real_style_training.json")
    args = parser.parse_args()
    candidates = [json.loads(line) for line in (POOLS / "math500_bon16_dev.jsonl").read_text().splitlines()]
    project = args.keep.resolve()
    project.mkdir(parents=True)
    make_project(project)
    sources = []
    for split, rows in (("train", stepwise_rows(candidates, args.train_problems)),
                        ("test", stepwise_rows(candidates, args.test_problems, skip=args.train_problems))):
        path = project / f"qwq_math500_{split}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        sources.append({"format": "trl_stepwise", "path": path.name, "split": split, "name": f"qwq-math500-{split}"})
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())
    spec = profile("gsm8k", smollm2_folder(), None, None)
    # Real generator output: up to ~100 steps of up to a few thousand characters (the defaults fit the bundled
    # generator's short steps and fail these rows in validate).
    overrides = {**spec["params"], "ingest": {**spec["params"]["ingest"], "sources": sources},
                 "validate": {"max_steps": 200, "max_step_chars": 8000}}
    result = {"command": "OMP_NUM_THREADS=1 .venv/bin/python " + " ".join(["bench/real_style_training.py", *sys.argv[1:]]),
              "date": time.strftime("%Y-%m-%d"), "train_problems": args.train_problems,
              **train_and_measure(project, with_overrides(defaults, overrides), args.real_problems)}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
