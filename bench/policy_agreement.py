"""How often samples of a problem share an answer: the simulated policy against real generators.

    .venv/bin/python bench/policy_agreement.py                   # params.yaml's ingest + label (~40 s)
    .venv/bin/python bench/policy_agreement.py --grid 0.15,0 0.2,0.25 0.19,0.25

Labels the default generator problems with label.label_split (the label stage's function: the
trajectories are the ones `reports/labeling.json` describes) and reports, per split, the share of
problems where two of the `label.trajectories_per_problem` samples share the right answer and where
two share a wrong one (data/answers.py's answer_agreement, the definition evaluate uses). Target:
within 3 points of 45% and 20%, what four real models' samples show on GSM8K test
problems. `--grid slip_rate,misconception_rate ...` samples the train trajectories only (no
labels, same random streams), for calibrating. Writes bench/results/policy_agreement.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def labeled(params) -> dict:
    from prmflow.data.ingest import build_splits
    from prmflow.labeling.label import label_split, label_summary

    splits = build_splits(params.ingest, params.base.seed).splits
    out = {}
    for split in ("train", "test"):
        results = label_split(splits[split], params.label, params.base.seed)
        summary = label_summary([row for r in results for row in r.rows], results)
        out[split] = {k: summary[k] for k in ("answers_repeated_right_share", "answers_repeated_wrong_share",
                                             "solution_accuracy", "first_error_agreement", "hard_label_agreement")}
    return out


def sampled(params, slip_rate: float, misconception_rate: float) -> dict:
    from prmflow.data.answers import answer_agreement
    from prmflow.data.ingest import build_splits
    from prmflow.labeling.policies import make_policy

    label = dataclasses.replace(params.label, slip_rate=slip_rate, misconception_rate=misconception_rate)
    policy, rows = make_policy(label, params.base.seed), []
    for problem in build_splits(params.ingest, params.base.seed).splits["train"]:
        rng = random.Random(f"{params.base.seed}:{problem['id']}")  # the stream sample_and_label samples from
        for _ in range(label.trajectories_per_problem):
            answer = policy.sample_trajectory(problem, rng).final_answer
            rows.append({"problem_id": problem["id"], "predicted_answer": answer,
                         "correct": answer == problem["answer"]})
    return {**answer_agreement(rows), "solution_accuracy": sum(r["correct"] for r in rows) / len(rows)}


def main() -> None:
    from prmflow.config import load_params

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", nargs="*", default=None, help="slip_rate,misconception_rate pairs")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    if args.grid:
        result = {spec: sampled(params, *map(float, spec.split(","))) for spec in args.grid}
    else:
        result = {"slip_rate": params.label.slip_rate, "misconception_rate": params.label.misconception_rate,
                  **labeled(params)}
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "policy_agreement.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
