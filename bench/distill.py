"""Distil a teacher PRM into a shallow frozen-prefix SmolLM2 student on one CPU core, and measure it on held-out
problems of the same pools (StrictPRMBench: QwQ-32B, 16 candidates per problem).

    .venv/bin/python bench/distill.py --keep 10 --frozen 8 --train-per-problem 6 --epochs 2 \
        --out bench/results/distill.json

Steps (the library functions the pipeline's stages use): candidates read as ingest reads them
(data.sources.parse_candidates: a leading chat transcript cut off), split by problem as ingest splits them
(`hashed_split` of the problem-text id, `--test-fraction`); teacher soft labels from the cached step-score file
(labeling.teacher: `--teachers` combined by mean, the cut steps' scores dropped); the student is SmolLM2-135M cut to
its first `--keep` layers, the first `--frozen` frozen (their hidden states computed once), the rest, the final norm
and the label rows trained (training.frozen_prefix) on `--train-per-problem` candidates of each train problem with
right and wrong candidates. Saved in the step-tag format and scored through StepTagScorer (the serving path) on
every candidate of the held-out problems with right and wrong candidates; the others' best-of-16 outcome is the same
for any selector and is added as it is. Reports within-problem solution AUROC (min and last step) with 95% bootstrap
intervals over problems, best-of-16 against a random pick and majority vote (paired intervals), the teacher's own
figures on the same problems, the student's step AUROC against the teacher's hard labels (>= 0.5), and the time and
tokens/s of each phase.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "strictprm"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def read_pool(path: Path, teacher: dict, models: list[str]) -> list[dict]:
    """Candidates as ingest reads them, each with `problem_id` and the teacher's combined step scores."""
    from prmflow.data.sources import content_id, parse_candidates
    from prmflow.labeling.teacher import combined_scores

    rows = []
    for line in path.open():
        raw = json.loads(line)
        row = parse_candidates(raw, {}) | {"id": raw["id"]}
        row["problem_id"] = content_id(row["problem"])
        per_model = {m: teacher[raw["id"]]["scores"][m][row["leading_steps_dropped"]:] for m in models}
        row["teacher"] = combined_scores(per_model, "mean")
        if len(row["teacher"]) != len(row["steps"]):
            raise ValueError(f"{path}: {raw['id']}: {len(row['steps'])} steps but {len(row['teacher'])} scores")
        rows.append(row)
    return rows


def ranking_figures(rows: list[dict], scores: list[list[float]], samples: int, seed: int) -> dict:
    """Within-problem AUROC (min, last) with intervals, and best-of-N (min) against random and majority."""
    from prmflow.evaluation.best_of_n import evaluate_external
    from prmflow.evaluation.bootstrap import bootstrap_interval
    from prmflow.evaluation.ranking import mixed_problems, within_problem_auroc
    from prmflow.scoring.aggregation import aggregate

    figures = {}
    mixed = mixed_problems(rows)
    scored = [(r, s) for r, s in zip(rows, scores) if r["problem_id"] in mixed]
    for how in ("min", "last"):
        resampled = within_problem_auroc([r for r, _ in scored], [aggregate(s, how) for _, s in scored])
        low, high = bootstrap_interval(resampled, samples, seed)
        figures[f"within_problem_auroc_{how}"] = {"value": resampled.point(), "ci_low": low, "ci_high": high}
    figures["mixed_problems"] = len(mixed)
    # Unmixed problems: any selector picks a right answer on all-right problems and a wrong one on all-wrong ones;
    # they enter with a constant score so best-of-16, random pick and the vote are over every held-out problem.
    full = [s if r["problem_id"] in mixed else [0.5] * len(r["steps"]) for r, s in zip(rows, scores)]
    for subset, (subset_rows, subset_scores) in {"all": (rows, full),
                                                 "mixed": ([r for r, _ in scored], [s for _, s in scored])}.items():
        metrics = evaluate_external("outcome", subset_rows, subset_scores, 0.5, "min", samples=samples, seed=seed)
        figures[f"best_of_16_{subset}"] = {k: v for k, v in metrics.items() if k.startswith(
            ("best_of_n_prm_min", "best_of_n_majority", "best_of_n_pass_at_1", "best_of_n_oracle")) and "_at_" not in k}
        figures[f"best_of_16_{subset}"]["problems"] = len({r["problem_id"] for r in subset_rows})
    return figures


def step_auroc_vs_teacher(rows: list[dict], scores: list[list[float]], samples: int, seed: int) -> dict:
    """AUROC of the student's step scores for the teacher's hard labels (+ at >= 0.5), over the scored steps."""
    import functools

    from prmflow.evaluation.bootstrap import Resampled, bootstrap_interval, weighted_auroc

    flat = [(r["problem_id"], s, t >= 0.5) for r, ss in zip(rows, scores) for s, t in zip(ss, r["teacher"])]
    resampled = Resampled([p for p, _, _ in flat], functools.partial(weighted_auroc, [s for _, s, _ in flat],
                                                                     [t for _, _, t in flat]))
    low, high = bootstrap_interval(resampled, samples, seed)
    return {"value": resampled.point(), "ci_low": low, "ci_high": high, "steps": len(flat),
            "teacher_negative_steps": sum(not t for _, _, t in flat)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", nargs="+", default=["gsm8k", "math500"])
    parser.add_argument("--teachers", nargs="+", default=["qwen_prm"])
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--keep", type=int, default=10, help="student depth: the base's first N layers")
    parser.add_argument("--frozen", type=int, default=8, help="frozen lower layers (cached once)")
    parser.add_argument("--train-per-problem", type=int, default=6)
    parser.add_argument("--train-problems", type=int, default=0, help="mixed train problems per pool (0: all)")
    parser.add_argument("--test-problems", type=int, default=0, help="held-out problems per pool (0: all)")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=3072)
    parser.add_argument("--samples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--model-dir", default=str(ROOT / "models" / "distill-student"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "distill.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    from smollm2_profile import smollm2_folder

    from prmflow.config import ModelParams
    from prmflow.data.ingest import hashed_split
    from prmflow.devices import Placement
    from prmflow.labeling.teacher import read_teacher_scores
    from prmflow.scoring.modeling import StepTagScorer, build_model
    from prmflow.scoring.tokenization import encode_candidate, prepare_tokenizer, prompt_format, save_prompt_format
    from prmflow.training import frozen_prefix

    started = time.time()
    teacher, rejects = read_teacher_scores(DATA / "teacher_step_scores_dev.jsonl", args.teachers)
    rng = random.Random(args.seed)
    train, held_out = [], {}
    for pool in args.pools:
        rows = read_pool(DATA / f"{pool}_bon16_dev.jsonl", teacher, args.teachers)
        by_problem = defaultdict(list)
        for row in rows:
            by_problem[row["problem_id"]].append(row)
        train_ids = sorted(p for p in by_problem if hashed_split(p, args.test_fraction) == "train"
                           and len({r["correct"] for r in by_problem[p]}) == 2)
        test_ids = sorted(p for p in by_problem if hashed_split(p, args.test_fraction) == "test")
        rng.shuffle(train_ids)
        rng.shuffle(test_ids)
        train_ids = train_ids[:args.train_problems or None]
        test_ids = test_ids[:args.test_problems or None]
        for p in train_ids:
            train += rng.sample(by_problem[p], min(args.train_per_problem, len(by_problem[p])))
        held_out[pool] = [r for p in sorted(test_ids) for r in sorted(by_problem[p], key=lambda r: r["id"])]
        log(pool, f"train: {len(train_ids)} mixed problems; held out: {len(test_ids)} problems, "
                  f"{len(held_out[pool])} candidates")
    model_params = ModelParams(base_model=smollm2_folder(), gguf_file=GGUF_FILE, max_length=args.max_length,
                               dtype="float32")
    tokenizer = prepare_tokenizer(model_params, [])
    fmt = prompt_format(tokenizer, model_params)
    model = build_model(model_params, tokenizer).eval()
    frozen_prefix.keep_layers(model, args.keep)
    examples, cut = [], 0
    for row in train:
        encoded = encode_candidate(tokenizer, fmt, row["problem"], row["steps"])
        cut += bool(encoded.dropped_steps or encoded.truncated_steps)
        examples.append({"input_ids": encoded.input_ids, "targets": row["teacher"][:encoded.num_steps]})
    log(f"training on {len(examples)} candidates ({cut} cut), {sum(len(e['input_ids']) for e in examples)} tokens")
    last = [0.0]

    def progress(stage, done, total):
        if time.time() - last[0] > 60 or done == total:
            last[0] = time.time()
            log(f"{stage} {done}/{total}")

    report = frozen_prefix.train_top(model, examples, fmt, frozen_layers=args.frozen, epochs=args.epochs,
                                     batch_size=args.batch_size, learning_rate=args.learning_rate, weight_decay=0.0,
                                     warmup_ratio=0.05, negative_class_weight=1.0, seed=args.seed,
                                     dtype=torch.float32, progress=progress)
    log("trained", report)
    model.save_pretrained(args.model_dir)
    tokenizer.save_pretrained(args.model_dir)
    save_prompt_format(fmt, args.model_dir)
    scorer = StepTagScorer(args.model_dir, Placement("cpu", "float32"))
    from prmflow.evaluation.ranking import mixed_problems

    results = {}
    for pool, rows in held_out.items():
        mixed = mixed_problems(rows)
        to_score = [r for r in rows if r["problem_id"] in mixed]
        encoded = scorer.encode([(r["problem"], r["steps"]) for r in to_score])
        scoring_started = time.time()
        scores = {}
        for r, e in zip(to_score, encoded):
            scores[r["id"]] = scorer.score_batch([(r["problem"], r["steps"])], batch_size=1, encoded=[e])[0]
            if len(scores) % 50 == 0:
                log(f"{pool}: scored {len(scores)}/{len(to_score)}")
        seconds = time.time() - scoring_started
        if not to_score:
            raise ValueError(f"{pool}: no held-out problem with right and wrong candidates; hold out more problems")
        tokens = [len(e.input_ids) for e in encoded]
        student = [scores.get(r["id"], [0.5] * len(r["steps"])) for r in rows]
        teacher_scores = [r["teacher"] for r in rows]
        for r in to_score:  # the teacher's scores over the steps the student scored (a cut candidate loses its tail)
            r["teacher"] = r["teacher"][:len(scores[r["id"]])]
        results[pool] = {
            "student": ranking_figures(rows, student, args.samples, args.seed),
            "teacher": ranking_figures(rows, teacher_scores, args.samples, args.seed),
            "student_step_auroc_vs_teacher_hard": step_auroc_vs_teacher(to_score, [scores[r["id"]] for r in to_score],
                                                                        args.samples, args.seed),
            "scored_candidates": len(to_score), "scored_tokens": sum(tokens), "scoring_seconds": seconds,
            "scoring_tokens_per_second": sum(tokens) / seconds,
            "candidates_cut": sum(bool(e.dropped_steps or e.truncated_steps) for e in encoded),
            "token_length_median": sorted(tokens)[len(tokens) // 2], "token_length_max": max(tokens),
        }
        log(pool, json.dumps(results[pool]["student"], indent=1))
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.processor() or "cpu",
           "command": " ".join(["bench/distill.py", *sys.argv[1:]]), "args": vars(args), "train": report,
           "train_candidates": len(examples), "train_candidates_cut": cut, "teacher_rejects": len(rejects),
           "held_out": results, "total_seconds": time.time() - started}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    log("wrote", args.out)


if __name__ == "__main__":
    main()
