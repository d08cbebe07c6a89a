"""Step AUROC of any PRM against PRM800K's human step ratings (phase 1 test: GPT-4 solutions to MATH problems).

    .venv/bin/python bench/prm800k_step_auroc.py models:/prm-distill@champion \
        --parquet ../shared/data/prm800k/phase1_test.stepwise-critic.parquet --out bench/results/prm800k_distill.json

The solution paths are rebuilt from the stepwise-critic rows (data/prm800k.py: one path per leaf of each problem's
tree of rated alternatives); every path is scored whole by the PRM (`prmflow.load`: a folder, a registry URI or a
served endpoint; `--paths-per-problem` of each problem's paths, a seeded sample), and each step rated +1 (right) or -1 (wrong) by a labeler enters the AUROC; steps rated 0
(ambiguous) and human-written hint steps (unrated) are scored but left out, and steps the model's context cut are
counted and left out. The 95% interval resamples problems. Source of the data and the rating scale: PRM800K
("Let's Verify Step by Step", Lightman et al., 2023).
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import time
from pathlib import Path


def rated_steps(paths: list[dict], predictions: list) -> tuple[list[tuple[str, float, bool]], dict]:
    """(problem, step score, rated right) for every scored step rated +1 or -1, and the counts of what was left
    out: ambiguous (0), human-written, and cut by the context (not scored)."""
    steps, left_out = [], {"ambiguous": 0, "human_written": 0, "cut": 0}
    for path, prediction in zip(paths, predictions):
        for index, (rating, human) in enumerate(zip(path["ratings"], path["human"])):
            if index >= len(prediction.step_scores):
                left_out["cut"] += 1
            elif human:
                left_out["human_written"] += 1
            elif rating == 0:
                left_out["ambiguous"] += 1
            else:
                steps.append((path["problem"], prediction.step_scores[index], rating == 1))
    return steps, left_out


def main() -> None:
    import pandas as pd

    import prmflow
    from prmflow.data.prm800k import solution_paths
    from prmflow.evaluation.bootstrap import Resampled, bootstrap_interval, weighted_auroc

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="what prmflow.load takes: a model folder, models:/name@alias, a served URL")
    parser.add_argument("--parquet", required=True, help="PRM800K stepwise-critic parquet (phase1_test...)")
    parser.add_argument("--out", required=True, help="results JSON")
    parser.add_argument("--paths-per-problem", type=int, default=3,
                        help="paths scored per problem, a seeded sample (0: all 3,277 of phase 1 test, ~49k steps)")
    parser.add_argument("--samples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()

    by_problem: dict[str, list[dict]] = {}
    for _, path in solution_paths(pd.read_parquet(args.parquet)):
        if not path["missing"]:
            by_problem.setdefault(path["problem"], []).append(path)
    rng = random.Random(args.seed)
    paths = [p for group in by_problem.values()
             for p in (rng.sample(group, min(args.paths_per_problem, len(group))) if args.paths_per_problem else group)]
    prm = prmflow.load(args.model)
    started = time.perf_counter()
    predictions = prm.score([(p["problem"], p["steps"]) for p in paths])
    seconds = time.perf_counter() - started
    steps, left_out = rated_steps(paths, predictions)
    resampled = Resampled([p for p, _, _ in steps], functools.partial(weighted_auroc, [s for _, s, _ in steps],
                                                                      [r for _, _, r in steps]))
    low, high = bootstrap_interval(resampled, args.samples, args.seed)
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model": args.model,
           "command": "bench/prm800k_step_auroc.py " + " ".join(f"{k}={v}" for k, v in vars(args).items()),
           "step_auroc": {"value": resampled.point(), "ci_low": low, "ci_high": high},
           "paths": len(paths), "problems": len({p["problem"] for p in paths}), "rated_steps": len(steps),
           "wrong_steps": sum(not r for _, _, r in steps), "left_out": left_out, "scoring_seconds": seconds}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
