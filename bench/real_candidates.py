"""Best-of-N of a trained PRM on real generator candidates (an `evaluate.external` outcome file), scored by
several single-threaded processes at once: what the evaluate stage's external section computes, for more
problems than one process scores in the time a laptop run allows.

    OMP_NUM_THREADS=1 .venv/bin/python bench/real_candidates.py MODEL_DIR \
        --candidates ../shared/data/strictprm/gsm8k_bon16_dev.jsonl --problems 64 --workers 3 \
        --out /tmp/real_candidates.json          # bench/results/real_candidates.json: the recorded run

Reads the file as `evaluate.external` does (evaluation.inputs.read_external, its first `--problems` problems),
splits the problems over `--workers` processes (torch at 1 thread each, StepTagScorer in float32), and
reports evaluation.best_of_n.evaluate_external with `--aggregation` and 95% bootstrap intervals over the
problems (`--bootstrap` draws, `--seed`): best-of-N against majority vote and a random pick (pass@1), with
the paired differences, plus solutions/s. Scores are written beside the JSON (`<out>.scores.jsonl`).

`--mixed-only` scores only the problems whose candidates disagree in correctness: where all are right (or all
wrong) every pick is right (wrong), so best-of-N, majority vote, pass@1 and oracle over *all* the problems are
exactly what scoring them would give (tests/test_evaluate.py checks it), at a fraction of the cost (GSM8K:
74 of 250 problems are mixed). Their candidates get a constant score, and the solution AUROC is then computed
over the mixed problems' candidates only (`mixed_solution_auroc`).

`--heldout data/rollouts/test.jsonl` also scores a project's held-out rollouts and reports the evaluate stage's
metrics of them (evaluation.evaluate: threshold chosen on the validation half, intervals over problems).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from prmflow.evaluation.best_of_n import evaluate_external  # noqa: E402
from prmflow.evaluation.inputs import problem_key, read_external  # noqa: E402
from prmflow.config import EvaluateParams  # noqa: E402
from prmflow.evaluation.bootstrap import intervals  # noqa: E402
from prmflow.evaluation.heldout_metrics import evaluate_solutions, headline_resampled  # noqa: E402
from prmflow.evaluation.metrics import auroc  # noqa: E402
from prmflow.jsonl import read_jsonl  # noqa: E402
from prmflow.scoring.aggregation import aggregate  # noqa: E402


def score_part(model_dir: str, solutions: list[tuple[str, list[str]]], batch_size: int) -> list[list[float]]:
    import torch

    from prmflow.devices import Placement
    from prmflow.scoring.load import load

    torch.set_num_threads(1)
    return load(model_dir, placement=Placement("cpu", "float32"), batch_size=batch_size).step_scores(solutions)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    # Paths as arguments, no defaults: nothing beside the clone is assumed, nothing tracked is overwritten unasked.
    parser.add_argument("--candidates", type=Path, required=True,
                        help="an evaluate.external outcome file (e.g. ../shared/data/strictprm/gsm8k_bon16_dev.jsonl)")
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--aggregation", default="min")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--heldout", type=Path, help="a project's data/rollouts/test.jsonl, scored too")
    parser.add_argument("--mixed-only", action="store_true",
                        help="score only the problems with both right and wrong candidates")
    parser.add_argument("--out", type=Path, required=True,
                        help="where the JSON goes (bench/results/real_candidates.json holds the recorded run)")
    args = parser.parse_args()
    rows = read_external({"name": "candidates", "path": str(args.candidates), "format": "outcome",
                          "problems": args.problems})
    problems = list(dict.fromkeys(problem_key(r) for r in rows))
    mixed = [p for p in problems if len({bool(r["correct"]) for r in rows if problem_key(r) == p}) == 2]
    scored_problems = mixed if args.mixed_only else problems
    parts = [[r for r in rows if problem_key(r) in scored_problems[w::args.workers]] for w in range(args.workers)]
    heldout = read_jsonl(args.heldout) if args.heldout else []
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(score_part, args.model_dir, [(r["problem"], r["steps"]) for r in part],
                               args.batch_size) for part in parts]
        heldout_parts = [heldout[w::args.workers] for w in range(args.workers)]
        heldout_futures = [pool.submit(score_part, args.model_dir, [(r["problem"], r["steps"]) for r in part],
                                       args.batch_size) for part in heldout_parts]
        scored = {id(r): s for part, f in zip(parts, futures) for r, s in zip(part, f.result())}
        heldout_scored = {id(r): s for part, f in zip(heldout_parts, heldout_futures)
                          for r, s in zip(part, f.result())}
    seconds = time.perf_counter() - started
    scores = [scored.get(id(r), [0.5]) for r in rows]  # unanimous problems (--mixed-only): any pick is the same
    metrics = evaluate_external("outcome", rows, scores, 0.5, args.aggregation, args.bootstrap, args.seed)
    if args.mixed_only:
        del metrics["solution_auroc"]
        in_mixed = [i for i, r in enumerate(rows) if id(r) in scored and scores[i]]
        metrics["mixed_solution_auroc"] = auroc([aggregate(scores[i], args.aggregation) for i in in_mixed],
                                                [bool(rows[i]["correct"]) for i in in_mixed])
    if heldout:
        heldout_scores = [heldout_scored[id(r)] for r in heldout]
        params = EvaluateParams()
        found = evaluate_solutions(heldout, heldout_scores, params).metrics
        found |= intervals(headline_resampled(heldout, heldout_scores, params), args.bootstrap, args.seed)
        metrics |= {f"heldout_{k}": v for k, v in found.items()}
    result = {"machine": {"platform": platform.platform(), "workers": args.workers, "threads_per_worker": 1,
                          "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
              "model_dir": args.model_dir, "candidates": str(args.candidates), "problems": len(problems),
              "mixed_problems": len(mixed), "scored_solutions": len(scored), "scoring_seconds": seconds,
              "solutions_per_second": (len(scored) + len(heldout)) / seconds, "heldout_solutions": len(heldout),
              "metrics": metrics}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    with open(args.out.with_suffix(".scores.jsonl"), "w") as f:
        for row, s in zip(rows, scores):
            if id(row) in scored:
                f.write(json.dumps({"id": row.get("id"), "problem_id": problem_key(row), "correct": row["correct"],
                                    "step_scores": s}) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
