"""Labeling methods compared: `mc` vs `binary_search` on the default generator data, simulated policy.

    .venv/bin/python bench/labeling.py              # params.yaml's ingest + label, 3 seeds (~1 minute)
    .venv/bin/python bench/labeling.py --seeds 1

For each seed, both methods label the same problems and (same per-problem random streams) the
same trajectories, so they compare pair by pair: policy calls per labeled step, labeled steps
per second, agreement of the hard labels and of the first error with the simulator's true first
error. Also the discordant trajectories (one method finds the true first error, the other does
not), which say whether an agreement gap is more than noise. Target: binary_search at
least as good as mc on first-error agreement with at most 40% of its calls.
Writes bench/results/labeling.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("mc", "binary_search")


def run_method(problems: dict[str, list[dict]], label_params, seed: int) -> tuple[dict, list[dict]]:
    from prmflow.labeling.label import label_split, label_summary

    start = time.perf_counter()
    results = [r for split in problems.values() for r in label_split(split, label_params, seed)]
    wall = time.perf_counter() - start
    rows = [row for r in results for row in r.rows]
    summary = label_summary(rows, results)
    return {**summary, "wall_s": wall, "labeled_steps_per_s": summary["steps"] / wall}, rows


def miss_kinds(rows: list[dict]) -> dict[str, int]:
    """Trajectories whose predicted first error is not the true one, by how it is wrong."""
    kinds = {"late": 0, "early": 0, "missed_slip": 0, "invented_slip": 0}
    for row in rows:
        predicted, true = row["first_error"], row["true_first_error"]
        if predicted == true:
            continue
        kind = ("invented_slip" if true < 0 else "missed_slip" if predicted < 0
                else "late" if predicted > true else "early")
        kinds[kind] += 1
    return kinds


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from prmflow.config import load_params
    from prmflow.data.ingest import build_splits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    runs = []
    for offset in range(args.seeds):
        seed = params.base.seed + offset
        problems = build_splits(params.ingest, seed=seed).splits
        by_method, rows = {}, {}
        for method in METHODS:
            by_method[method], rows[method] = run_method(problems, dataclasses.replace(params.label, method=method),
                                                         seed)
        hits = {m: [r["first_error"] == r["true_first_error"] for r in rows[m]] for m in METHODS}
        assert [r["steps"] for r in rows["mc"]] == [r["steps"] for r in rows["binary_search"]]
        runs.append({
            "seed": seed, **by_method,
            "only_mc_finds_first_error": sum(a and not b for a, b in zip(hits["mc"], hits["binary_search"])),
            "only_binary_search_finds_first_error": sum(b and not a for a, b in zip(hits["mc"], hits["binary_search"])),
            "call_ratio": by_method["binary_search"]["policy_calls"] / by_method["mc"]["policy_calls"],
            "first_error_misses": {m: miss_kinds(rows[m]) for m in METHODS},
        })
        print(json.dumps(runs[-1], indent=1))
    totals = {m: {"policy_calls": sum(r[m]["policy_calls"] for r in runs),
                  "first_error_agreement": sum(r[m]["first_error_agreement"] for r in runs) / len(runs)}
              for m in METHODS}
    call_ratio = totals["binary_search"]["policy_calls"] / totals["mc"]["policy_calls"]
    gap = totals["binary_search"]["first_error_agreement"] - totals["mc"]["first_error_agreement"]
    result = {
        "label_params": dataclasses.asdict(params.label), "ingest": {"num_train": params.ingest.num_train,
                                                                      "num_test": params.ingest.num_test},
        "runs": runs, "mean_first_error_agreement": {m: totals[m]["first_error_agreement"] for m in METHODS},
        "call_ratio": call_ratio, "first_error_agreement_gap": gap,
        "target_met": call_ratio <= 0.4 and gap >= 0, "python": platform.python_version(),
    }
    out = ROOT / "bench" / "results" / "labeling.json"
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"call ratio {call_ratio:.3f}, first-error agreement gap (bs - mc) {gap:+.4f} -> {out}")


if __name__ == "__main__":
    main()
