"""`prmflow <stage>`: run one pipeline stage from params.yaml (this is each dvc.yaml `cmd`).

    prmflow ingest | label | validate | tokenize | train | train_orm | evaluate | search | register
    prmflow score solutions.jsonl --model models:/prm@champion   # score a JSON-lines file as the server does
    prmflow promote VERSION --reason "..."                        # move @champion by hand
    prmflow rollback --reason "..."                               # move @champion back to its previous version
    prmflow pairs data/rollouts/train.jsonl --output pairs.jsonl  # step-level DPO pairs from labeled rollouts
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from prmflow import STAGES

# The module that holds each stage's `main(params)`: the subpackage of its part of the pipeline.
STAGE_MODULES = {"ingest": "prmflow.data.ingest", "label": "prmflow.labeling.label",
                 "validate": "prmflow.labeling.validate", "tokenize": "prmflow.model.tokenize",
                 "train": "prmflow.model.train", "train_orm": "prmflow.model.train_orm",
                 "evaluate": "prmflow.evaluation.evaluate", "search": "prmflow.evaluation.search",
                 "register": "prmflow.serving.register"}


def _quiet_environment() -> None:
    for key, value in {"HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false",
                       "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                       "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}.items():
        os.environ.setdefault(key, value)


def _tracking_uri(args: argparse.Namespace) -> str:
    from prmflow.config import load_params

    return os.environ.get("MLFLOW_TRACKING_URI") or load_params(args.params).base.mlflow_tracking_uri


def score_main(args: argparse.Namespace) -> None:
    """Score a file with the same `Scorer.score` the server runs, in requests no larger than it accepts."""
    import pydantic

    from prmflow.jsonl import RecordError, read_jsonl
    from prmflow.serving.scorer import Solution, load_scorer

    rows = read_jsonl(args.input, required=("problem", "steps"))
    solutions = []
    for number, row in enumerate(rows, start=1):
        try:
            solutions.append(Solution(problem=row["problem"], steps=row["steps"]))
        except pydantic.ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise RecordError(f"{args.input}: record {number}: {field}: {first['msg']}") from None
    if ":/" in args.model:
        import mlflow

        mlflow.set_tracking_uri(_tracking_uri(args))
    scorer = load_scorer(args.model, args.threshold)
    size = scorer.config.max_solutions_per_request
    for start in range(0, len(solutions), size):
        try:
            predictions = scorer.score(solutions[start: start + size], args.aggregation)
        except ValueError as err:  # name the record, as the server names inputs[i]
            end = min(start + size, len(solutions))
            raise RecordError(f"{args.input}: request of records {start + 1}-{end} "
                              f"(inputs[0] is record {start + 1}): {err}") from None
        for row, prediction in zip(rows[start: start + size], predictions):
            print(json.dumps(({"id": row["id"]} if "id" in row else {}) | prediction.model_dump()))


def alias_main(args: argparse.Namespace) -> None:
    import getpass

    from mlflow.exceptions import MlflowException

    from mlflow import MlflowClient
    from prmflow.config import load_params
    from prmflow.serving.registry import promote, rollback

    register = load_params(args.params).register
    client = MlflowClient(tracking_uri=_tracking_uri(args))
    who = args.who or getpass.getuser()
    try:
        if args.command == "promote":
            left = promote(client, register.model_name, args.version, register.alias, who, args.reason)
            print(f"promote: {register.model_name}@{register.alias} -> version {args.version} (was {left})")
        else:
            target = rollback(client, register.model_name, register.alias, who, args.reason, args.to)
            print(f"rollback: {register.model_name}@{register.alias} -> version {target}")
    except (ValueError, MlflowException) as err:
        print(f"prmflow {args.command}: {err}", file=sys.stderr)
        sys.exit(1)


def pairs_main(args: argparse.Namespace) -> None:
    from prmflow.model.pairs import write_pairs

    count = write_pairs(args.inputs, args.output, args.separator)
    print(f"pairs: {count} step-level preference pairs -> {args.output}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prmflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        p = sub.add_parser(stage, help=f"run the {stage} stage")
        p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    score = sub.add_parser("score", help="score solutions in a JSON-lines file ({problem, steps} per line)")
    score.add_argument("input")
    score.add_argument("--model", default="models/prm",
                       help="a registered model URI (models:/prm@champion: exactly what the server answers) "
                            "or a trained model directory")
    score.add_argument("--aggregation", default="min", choices=["min", "prod", "last", "mean"])
    score.add_argument("--threshold", type=float, default=None,
                       help="first_error threshold for a model directory (a registered model carries its own)")
    score.add_argument("--params", default="params.yaml", help="where the tracking URI comes from, unless "
                                                               "MLFLOW_TRACKING_URI is set")
    promote = sub.add_parser("promote", help="point the champion alias at VERSION, recording who and why")
    promote.add_argument("version")
    rollback = sub.add_parser("rollback", help="point the champion alias back at the version it held before")
    rollback.add_argument("--to", default=None, help="roll back to this version instead of the previous one")
    for p in (promote, rollback):
        p.add_argument("--reason", required=True, help="why; stored as a tag on the version")
        p.add_argument("--who", default=None, help="who (default: the current user)")
        p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    pairs = sub.add_parser("pairs", help="step-level preference pairs {prompt, chosen, rejected} from labeled "
                                         "rollouts, for TRL's DPOTrainer (Step-DPO)")
    pairs.add_argument("inputs", nargs="+", help="labeled rollout files (data/rollouts/*.jsonl)")
    pairs.add_argument("--output", required=True, help="where to write the pairs (JSON lines)")
    pairs.add_argument("--separator", default="\n", help="what ends the problem and each shared step in the prompt")
    args = parser.parse_args(argv)
    _quiet_environment()

    from prmflow.config import ConfigError, load_params
    from prmflow.jsonl import RecordError
    from prmflow.labeling.validate import ValidationFailed

    try:
        if args.command == "score":
            score_main(args)
            return
        if args.command in ("promote", "rollback"):
            alias_main(args)
            return
        if args.command == "pairs":
            pairs_main(args)
            return
        params = load_params(args.params)
        importlib.import_module(STAGE_MODULES[args.command]).main(params)
    except (ConfigError, RecordError, ValidationFailed, FileNotFoundError) as err:
        print(f"prmflow {args.command}: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
