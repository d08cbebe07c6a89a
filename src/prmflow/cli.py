"""`prmflow <stage>`: run one pipeline stage from params.yaml (this is each dvc.yaml `cmd`).

    prmflow ingest | label | validate | tokenize | train | evaluate | register
    prmflow score --model models/prm solutions.jsonl     # score a JSON-lines file
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from prmflow import STAGES

# The module that holds each stage's `main(params)`.
STAGE_MODULES = {stage: f"prmflow.{stage}" for stage in STAGES} | {"tokenize": "prmflow.tokenization"}


def _quiet_environment() -> None:
    for key, value in {"HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false",
                       "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                       "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}.items():
        os.environ.setdefault(key, value)


def score_main(args: argparse.Namespace) -> None:
    from prmflow.jsonl import read_jsonl
    from prmflow.modeling import ProcessRewardModel
    from prmflow.serving import Solution, score_solutions

    rows = read_jsonl(args.input, required=("problem", "steps"))
    solutions = [Solution(problem=r["problem"], steps=r["steps"]) for r in rows]
    prm = ProcessRewardModel(args.model)
    for row, prediction in zip(rows, score_solutions(prm, solutions, args.aggregation, args.threshold)):
        print(json.dumps({"id": row.get("id"), **prediction.model_dump()}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prmflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        p = sub.add_parser(stage, help=f"run the {stage} stage")
        p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    score = sub.add_parser("score", help="score solutions in a JSON-lines file ({problem, steps} per line)")
    score.add_argument("input")
    score.add_argument("--model", default="models/prm", help="trained model directory")
    score.add_argument("--aggregation", default="min", choices=["min", "prod", "last", "mean"])
    score.add_argument("--threshold", type=float, default=0.5, help="first_error: first step scored below this")
    args = parser.parse_args(argv)
    _quiet_environment()

    from prmflow.config import ConfigError, load_params
    from prmflow.jsonl import RecordError
    from prmflow.validate import ValidationFailed

    try:
        if args.command == "score":
            score_main(args)
            return
        params = load_params(args.params)
        importlib.import_module(STAGE_MODULES[args.command]).main(params)
    except (ConfigError, RecordError, ValidationFailed, FileNotFoundError) as err:
        print(f"prmflow {args.command}: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
