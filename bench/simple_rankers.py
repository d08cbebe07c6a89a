"""What ranks a generator's candidates without a PRM: within-problem solution AUROC of simple per-candidate signals
on the StrictPRMBench pools, the floor a distilled student has to clear.

    .venv/bin/python bench/simple_rankers.py ../shared/data/strictprm/gsm8k_bon16_dev.jsonl \
        ../shared/data/strictprm/math500_bon16_dev.jsonl --out bench/results/simple_rankers.json

Signals: the share of the problem's candidates that state the same predicted answer (self-consistency, Wang et al.
2023: the majority vote as a score), fewer steps, fewer characters. AUROC over the problems with right and wrong
candidates (evaluation.ranking, as bench/distill.py measures), with 95% bootstrap intervals over problems.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path


def signals(rows: list[dict]) -> dict[str, list[float]]:
    """Per candidate, in order: each signal's value (higher: ranked first)."""
    votes: dict[str, Counter] = {}
    for row in rows:
        votes.setdefault(row["problem_id"], Counter())[str(row["predicted_answer"])] += 1
    share = [votes[r["problem_id"]][str(r["predicted_answer"])] / sum(votes[r["problem_id"]].values()) for r in rows]
    return {"answer_vote_share": share,
            "fewer_steps": [-len(r["steps"]) for r in rows],
            "fewer_characters": [-sum(len(s) for s in r["steps"]) for r in rows]}


def main() -> None:
    from prmflow.evaluation.bootstrap import bootstrap_interval
    from prmflow.evaluation.ranking import mixed_problems, within_problem_auroc

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pools", nargs="+", help="candidates files (StrictPRMBench pool layout)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "command": "bench/simple_rankers.py " + " ".join(Path(p).name for p in args.pools), "pools": {}}
    for path in args.pools:
        rows = [json.loads(line) for line in Path(path).open()]
        figures = {"mixed_problems": len(mixed_problems(rows))}
        for name, values in signals(rows).items():
            resampled = within_problem_auroc(rows, values)
            low, high = bootstrap_interval(resampled, args.samples, args.seed)
            figures[name] = {"value": resampled.point(), "ci_low": low, "ci_high": high}
        out["pools"][Path(path).name] = figures
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
