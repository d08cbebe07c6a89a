"""`prmflow <stage>`: run one pipeline stage from params.yaml (this is each dvc.yaml `cmd`).

    prmflow ingest | label | validate | tokenize | train | train_orm | evaluate | search | register
    prmflow score solutions.jsonl --model models:/prm@champion   # score a JSON-lines file as the server does
    prmflow promote VERSION --reason "..."                        # move @champion by hand
    prmflow rollback --reason "..."                               # move @champion back to its previous version
    prmflow pairs data/rollouts/train.jsonl --output pairs.jsonl  # step-level DPO pairs from labeled rollouts
    prmflow reward-server --endpoint http://127.0.0.1:5001 --port 5002  # OpenRLHF's remote reward endpoint
    prmflow metrics [WORD ...]                                    # reports/metrics.json, one metric a line
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from prmflow import STAGES
from prmflow.param_rules import AGGREGATIONS, DEFAULT_AGGREGATION

# The module that holds each stage's `main(params)`: the subpackage of its part of the pipeline.
STAGE_MODULES = {"ingest": "prmflow.data.ingest", "label": "prmflow.labeling.label",
                 "validate": "prmflow.labeling.validate", "tokenize": "prmflow.training.tokenize_stage",
                 "train": "prmflow.training.train", "train_orm": "prmflow.training.train_orm",
                 "evaluate": "prmflow.evaluation.evaluate", "search": "prmflow.evaluation.search",
                 "register": "prmflow.serving.register"}
# What each stage does, for `prmflow --help` (inputs and outputs: dvc.yaml).
STAGE_HELP = {
    "ingest": "read the problem sources (ingest.sources) into data/problems/{train,test}.jsonl",
    "label": "sample solutions with the policy and label each step by Monte-Carlo completions -> data/rollouts",
    "validate": "check problems and rollouts with Great Expectations -> reports/validation.json; fails on errors",
    "tokenize": "render each step with its step tag and tokenize -> data/tokenized",
    "train": "train the PRM on the tokenized rollouts -> models/prm, reports/train.json",
    "train_orm": "train the outcome reward model (final-answer correctness) -> models/orm, reports/train_orm.json",
    "evaluate": "score the held-out rollouts beside baselines -> reports/metrics.json, summary.md, plots",
    "search": "steer the policy with the PRM (best-of-N, vote, beam, DVTS) vs majority -> reports/search.json",
    "register": "log the PRM to MLflow as @challenger; the gate promotes it to @champion only if better",
}


# The project's settings for every prmflow command, wherever it is typed (a value set by the user wins):
# offline (a missing hub id fails at once instead of after ~50 s), no telemetry.
PROJECT_ENV = {"HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "false"}
# Library noise, off unless PRMFLOW_VERBOSE=1: the libraries' own progress bars (the "Loading weights" bar
# of every model load, MLflow's artifact-download bar) and their info/warning logging; prmflow's own
# progress bars (training, labeling, search) stay.
QUIET_ENV = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
             "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
             "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}


def _project_environment() -> None:
    verbose = os.environ.get("PRMFLOW_VERBOSE", "") not in ("", "0")
    for key, value in PROJECT_ENV.items() | ({} if verbose else QUIET_ENV).items():
        os.environ.setdefault(key, value)


def _tracking_uri(args: argparse.Namespace) -> str:
    from prmflow.config import load_params

    return os.environ.get("MLFLOW_TRACKING_URI") or load_params(args.params).base.mlflow_tracking_uri


def _checked_line(line: str, config) -> tuple[dict, object, list[str]]:
    """(row, solution, steps) of one JSON line, by the server's rules; raises RequestError naming the field.

    A file's other fields (`id`, a rollout's labels, ...) are its own columns, not a request's: they are
    left out of the solution (`id` is copied to the output), where the server refuses unknown keys."""
    from prmflow.serving.requests import SOLUTION_KEYS, RequestError, check_solution, parse_json, solution_from_json

    row = parse_json(line, "")
    solution = solution_from_json({k: v for k, v in row.items() if k in SOLUTION_KEYS} if isinstance(row, dict)
                                  else row, "")
    steps = check_solution(solution, "")
    if len(steps) > config.max_steps_per_request:
        raise RequestError(f"steps: {len(steps)} steps, more than the limit of {config.max_steps_per_request} "
                           f"per request")
    return row, solution, steps


def _read_lines(path: str, config) -> tuple[list[tuple[dict, object, list[str]]], list[dict]]:
    """Each line of a JSON-lines file checked on its own: the good lines in order, and a reject record
    {line, reason, record (the line, clipped to 2,000 characters)} for each bad one."""
    from prmflow.serving.requests import RequestError, clip

    good, rejects = [], []
    with open(path, "rb") as lines:
        for number, data in enumerate(lines, start=1):
            line = data.decode("utf-8", errors="replace")  # what a reject record shows of the line
            if not line.strip():
                continue
            try:
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError as err:  # scoring a replaced character would score another text
                    raise RequestError(f"not UTF-8: byte 0x{data[err.start]:02x} at column {err.start + 1}") from None
                good.append(_checked_line(line, config))
            except RequestError as err:
                rejects.append({"line": number, "reason": str(err), "record": clip(line.rstrip("\n"), 2000)})
    return good, rejects


def _requests(good: list[tuple[dict, object, list[str]]], config) -> list[list[tuple[dict, object, list[str]]]]:
    """The good lines in file order, cut into requests no larger than the server accepts."""
    chunks, steps = [[]], 0
    for item in good:
        if len(chunks[-1]) == config.max_solutions_per_request or steps + len(item[2]) > config.max_steps_per_request:
            chunks.append([])
            steps = 0
        chunks[-1].append(item)
        steps += len(item[2])
    return [chunk for chunk in chunks if chunk]


def _evaluated_metrics(args: argparse.Namespace) -> str | None:
    """reports/metrics.json when `--model` is the pipeline's own models/prm: its threshold was chosen there."""
    from pathlib import Path

    from prmflow.config import load_params

    if not Path(args.params).is_file():
        return None
    base = load_params(args.params).base
    if Path(args.model).resolve() != (Path(base.models_dir) / "prm").resolve():
        return None
    return str(Path(base.reports_dir) / "metrics.json")


def score_main(args: argparse.Namespace) -> int:
    """Score a file with the same `Scorer.score` the server runs, line by line: a bad line is reported
    (file:line: field: rule) and written to the rejects file, every other line is scored and printed in
    order. Returns the number of rejected lines."""
    from prmflow.serving.scorer import load_scorer

    if ":/" in args.model:
        import mlflow

        mlflow.set_tracking_uri(_tracking_uri(args))
        scorer = load_scorer(args.model)
    else:
        scorer = load_scorer(args.model, threshold=args.threshold, metrics_path=_evaluated_metrics(args))
    print(f"prmflow score: first_error threshold {scorer.config.threshold:g} from {scorer.threshold_source}",
          file=sys.stderr)
    good, rejects = _read_lines(args.input, scorer.config)
    for chunk in _requests(good, scorer.config):
        predictions = scorer.score([solution for _, solution, _ in chunk], args.aggregation)
        for (row, _, _), prediction in zip(chunk, predictions):
            print(json.dumps(({"id": row["id"]} if "id" in row else {}) | prediction.model_dump()))
    if rejects:
        rejects_path = args.rejects or f"{args.input}.rejects.jsonl"
        with open(rejects_path, "w") as out:
            for reject in rejects:
                print(f"prmflow score: {args.input}:{reject['line']}: {reject['reason']}", file=sys.stderr)
                out.write(json.dumps({"file": args.input, **reject}) + "\n")
        print(f"prmflow score: {len(rejects)} of {len(good) + len(rejects)} lines rejected -> {rejects_path}",
              file=sys.stderr)
    return len(rejects)


def alias_main(args: argparse.Namespace) -> None:
    """`promote` / `rollback` under the registry lock; then reports/registry.json says what the registry holds."""
    import getpass
    from pathlib import Path

    from mlflow.exceptions import MlflowException

    from mlflow import MlflowClient
    from prmflow.config import load_params
    from prmflow.serving.register import refresh_registry_report
    from prmflow.serving.registry import promote, registry_lock, registry_state, rollback

    params = load_params(args.params)
    register, uri = params.register, _tracking_uri(args)
    client = MlflowClient(tracking_uri=uri)
    who = args.who or getpass.getuser()
    try:
        with registry_lock(uri, register.model_name):
            if args.command == "promote":
                left = promote(client, register.model_name, args.version, register.alias, who, args.reason)
                print(f"promote: {register.model_name}@{register.alias} -> version {args.version} (was {left})")
            else:
                target = rollback(client, register.model_name, register.alias, who, args.reason, args.to)
                print(f"rollback: {register.model_name}@{register.alias} -> version {target}")
            state = registry_state(client, register.model_name, register.alias, register.challenger_alias)
            refresh_registry_report(Path(params.base.reports_dir) / "registry.json", state)
    except (ValueError, MlflowException, TimeoutError) as err:  # TimeoutError: filelock.Timeout, the lock is held
        print(f"prmflow {args.command}: {err}", file=sys.stderr)
        sys.exit(1)


def pairs_main(args: argparse.Namespace) -> None:
    from prmflow.labeling.pairs import write_pairs

    count = write_pairs(args.inputs, args.output, args.separator)
    print(f"pairs: {count} step-level preference pairs -> {args.output}")


def reward_server_main(args: argparse.Namespace) -> None:
    from prmflow.integrations.client import RewardConfig
    from prmflow.integrations.reward_server import allowed_hosts, serve
    from prmflow.param_rules import redact_url

    try:
        config = RewardConfig(endpoint=args.endpoint or "", model=args.model or "", aggregation=args.aggregation,
                              batch_size=args.batch_size, policy_tokenizer=args.policy_tokenizer,
                              max_retries=args.max_retries)
        allowed_hosts(args.host, args.allow_host)
    except ValueError as err:
        sys.exit(f"prmflow reward-server: {redact_url(str(err))}")
    print(f"reward-server: POST http://{args.host}:{args.port}/get_reward, rewards from {config.source}")
    serve(config, args.host, args.port, args.allow_host)
def metric_lines(metrics: dict, words: list[str]) -> list[str]:
    """`key value` lines of a flat metrics dict in key order, keys padded to one column, numbers to 4
    significant digits; with `words`, only the keys that contain one of them."""
    kept = {k: v for k, v in sorted(metrics.items()) if not words or any(w in k for w in words)}
    width = max(map(len, kept), default=0)
    return [f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}" for k, v in kept.items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prmflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        p = sub.add_parser(stage, help=STAGE_HELP[stage], description=STAGE_HELP[stage])
        p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    score = sub.add_parser("score", help="score solutions in a JSON-lines file ({problem, steps} per line)")
    score.add_argument("input", help="a JSON-lines file: one {problem, steps | text, id?} object per line")
    score.add_argument("--model", default="models/prm",
                       help="a registered model URI (models:/prm@champion: exactly what the server answers) "
                            "or a trained model directory")
    score.add_argument("--aggregation", default=DEFAULT_AGGREGATION, choices=AGGREGATIONS,
                       help="how the step scores make the solution's `score` (default: %(default)s)")
    score.add_argument("--threshold", type=float, default=None,
                       help="first_error threshold for a model directory (default: evaluate's choice in "
                            "reports/metrics.json for the pipeline's models/prm, else 0.5; a registered model "
                            "carries its own)")
    score.add_argument("--rejects", default=None,
                       help="where rejected lines go with their reason (default: INPUT.rejects.jsonl)")
    score.add_argument("--params", default="params.yaml", help="where the tracking URI comes from, unless "
                                                               "MLFLOW_TRACKING_URI is set")
    promote = sub.add_parser("promote", help="point the champion alias at VERSION, recording who and why")
    promote.add_argument("version", help="the registered model version to serve as @champion (e.g. 7)")
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
    vllm = sub.add_parser("serve-vllm", help="serve a registered PRM with vLLM's pooling runner (same step scores as "
                                             "mlflow models serve; POST /pooling with token ids)")
    vllm.add_argument("--model", default="models:/prm@champion", help="registered model URI")
    vllm.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    vllm.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    vllm.add_argument("--python", default=None, help="vLLM's venv interpreter (default: $PRMFLOW_VLLM_PYTHON, else .venv-vllm/bin/python)")
    vllm.add_argument("--params", default="params.yaml", help="where the tracking URI comes from, unless "
                                                              "MLFLOW_TRACKING_URI is set")
    vllm.add_argument("vllm_args", nargs=argparse.REMAINDER, help="after --: more arguments for vLLM's server")
    reward = sub.add_parser("reward-server", help="OpenRLHF's remote reward endpoint (POST /get_reward) in front of "
                                                  "a served PRM or a model directory")
    reward.add_argument("--endpoint", default=None, help="base URL of the served PRM (mlflow models serve)")
    reward.add_argument("--model", default=None, help="or a model directory / registered model URI to load here")
    reward.add_argument("--aggregation", default=DEFAULT_AGGREGATION, choices=AGGREGATIONS,
                        help="how step scores become the completion's reward (default: %(default)s)")
    reward.add_argument("--batch-size", type=int, default=32, help="completions per request to the PRM")
    reward.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    reward.add_argument("--port", type=int, default=5002, help="port to listen on (default: 5002)")
    reward.add_argument("--max-retries", type=int, default=5, help="retries of a failed request to the PRM, with "
                                                                   "exponential backoff (default: %(default)s)")
    reward.add_argument("--allow-host", action="append", default=[],
                        help="a Host name clients use (repeatable); needed when bound to every interface")
    reward.add_argument("--policy-tokenizer", default="", help="the policy's tokenizer (directory or hub id): its "
                                                                "special tokens are cut off a completion's end")
    metrics = sub.add_parser("metrics", help="print reports/metrics.json one `key value` a line (as a `dvc "
                                             "metrics show` table it is hundreds of columns wide)")
    metrics.add_argument("words", nargs="*", help="keep only the keys that contain one of these words")
    metrics.add_argument("--file", default="reports/metrics.json", help="default: reports/metrics.json")
    args = parser.parse_args(argv)
    _project_environment()

    from prmflow.config import ConfigError, load_params
    from prmflow.jsonl import RecordError
    from prmflow.labeling.validate import ValidationFailed

    try:
        if args.command == "score":
            if score_main(args):
                sys.exit(1)
            return
        if args.command in ("promote", "rollback"):
            alias_main(args)
            return
        if args.command == "pairs":
            pairs_main(args)
            return
        if args.command == "serve-vllm":
            import mlflow

            from prmflow.serving.vllm_server import serve_main

            mlflow.set_tracking_uri(_tracking_uri(args))
            serve_main(args)
            return
        if args.command == "reward-server":
            reward_server_main(args)
            return
        if args.command == "metrics":
            print("\n".join(metric_lines(json.loads(open(args.file).read()), args.words)))
            return
        params = load_params(args.params)
        importlib.import_module(STAGE_MODULES[args.command]).main(params)
    except (ConfigError, RecordError, ValidationFailed, FileNotFoundError, TimeoutError) as err:
        print(f"prmflow {args.command}: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
