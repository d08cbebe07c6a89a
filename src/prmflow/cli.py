"""`prmflow <stage>`: run one pipeline stage from params.yaml (this is each dvc.yaml `cmd`).

    prmflow check | ingest | label | validate | tokenize | train | train_orm | evaluate | search | register
    prmflow score solutions.jsonl --model models:/prm@champion   # score a JSON-lines file as the server does
    prmflow promote VERSION --reason "..."                        # move @champion by hand
    prmflow rollback --reason "..."                               # move @champion back to its previous version
    prmflow registry                                              # where @champion and @challenger are; repairs
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
from collections.abc import Callable
from dataclasses import dataclass

from prmflow.param_rules import AGGREGATIONS, DEFAULT_AGGREGATION

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
    """Score a file as the server does (serving/score_file.py); exit status 1 when a line was rejected."""
    from prmflow.serving.score_file import score_file
    from prmflow.serving.scorer import load_scorer

    if ":/" in args.model:
        import mlflow

        mlflow.set_tracking_uri(_tracking_uri(args))
        scorer = load_scorer(args.model)
    else:
        scorer = load_scorer(args.model, threshold=args.threshold, metrics_path=_evaluated_metrics(args))
    print(f"prmflow score: first_error threshold {scorer.config.threshold:g} from {scorer.threshold_source}",
          file=sys.stderr)
    return 1 if score_file(scorer, args.input, args.aggregation, args.rejects,
                           max_unscored_step_fraction=args.max_unscored_step_fraction) else 0




def teacher_scores_main(args: argparse.Namespace) -> int:
    """A teacher PRM's step scores of a candidates file, written as a label.teacher_file (asked once, reused);
    exit status 1 when a candidate was rejected (each printed with its line and reason)."""
    from pathlib import Path

    from prmflow.config import LabelParams
    from prmflow.labeling.teacher_model import teacher_scores_file

    params = LabelParams(method="teacher", teacher_model=args.model, teacher_checkpoint=args.checkpoint,
                         batch_size=args.batch_size, request_timeout_s=args.request_timeout_s)
    written, rejects = teacher_scores_file(Path(args.candidates), params, Path(args.out), args.name)
    for reject in rejects:
        print(f"{reject['file']}:{reject['line']}: {reject['reason']}", file=sys.stderr)
    print(f"prmflow teacher-scores: {written} candidates scored by {args.model} -> {args.out} "
          f"(teacher_models: [{args.name}]), {len(rejects)} rejected")
    return bool(rejects)


def _teacher_scores_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("candidates", help="a candidates file (StrictPRMBench's pool layout, ingest format candidates)")
    p.add_argument("--model", required=True, help="the teacher PRM: a served PRM's URL, vLLM's /pooling URL, a "
                                                  "model folder or a models:/ URI")
    p.add_argument("--checkpoint", default="", help="a /pooling model's PRM folder (its tokenizer encodes)")
    p.add_argument("--out", required=True, help="the teacher file to write ({id, first_step, step_scores})")
    p.add_argument("--name", default="teacher", help="its step_scores entry (default: %(default)s)")
    from prmflow.sections import LabelParams

    p.add_argument("--batch-size", type=int, default=LabelParams.batch_size,
                   help="solutions per request or forward (default: label.batch_size's, %(default)s)")
    p.add_argument("--request-timeout-s", type=float, default=LabelParams.request_timeout_s,
                   help="seconds a request may take (default: label.request_timeout_s's, %(default)s)")


def alias_main(args: argparse.Namespace) -> None:
    """`promote` / `rollback` / `registry` under the registry lock: an interrupted earlier move is completed first
    (and said), then the move; then reports/registry.json says what the registry holds."""
    import getpass
    from pathlib import Path

    from mlflow.exceptions import MlflowException

    from mlflow import MlflowClient
    from prmflow.config import load_params
    from prmflow.serving.register import refresh_registry_report
    from prmflow.serving.registry import finish_moves, promote, registry_lock, registry_state, rollback

    params = load_params(args.params)
    register, uri = params.register, _tracking_uri(args)
    name, alias = register.model_name, register.alias
    client = MlflowClient(tracking_uri=uri)
    who = "" if args.command == "registry" else args.who or getpass.getuser()
    try:
        with registry_lock(uri, name):
            for line in finish_moves(client, name, (alias, register.challenger_alias)):
                print(f"prmflow {args.command}: {line}")
            if args.command == "promote":
                left = promote(client, name, args.version, alias, who, args.reason, force=args.force)
                version = client.get_model_version_by_alias(name, alias).version
                print(f"promote: {name}@{alias} -> version {version} (was {left})")
            elif args.command == "rollback":
                target = rollback(client, name, alias, who, args.reason, args.to, force=args.force)
                print(f"rollback: {name}@{alias} -> version {target}")
            state = registry_state(client, name, alias, register.challenger_alias)
            refresh_registry_report(Path(params.base.reports_dir) / "registry.json", state)
    except (ValueError, MlflowException, TimeoutError) as err:  # TimeoutError: filelock.Timeout, the lock is held
        print(f"prmflow {args.command}: {err}", file=sys.stderr)
        sys.exit(1)
    if args.command == "registry":
        print(f"{name}@{alias}: version {state['champion_version']}; @{register.challenger_alias}: version "
              f"{state['challenger_version']}; {alias} history (oldest first): {state['champion_history']}")
    if state["orphan_versions"]:
        print(f"prmflow {args.command}: orphan versions of {name} (registered, never gated: the register run was "
              f"killed or is still running): {state['orphan_versions']}")


def pairs_main(args: argparse.Namespace) -> None:
    from prmflow.labeling.pairs import write_pairs

    count = write_pairs(args.inputs, args.output, args.separator)
    print(f"pairs: {count} step-level preference pairs -> {args.output}")


def reward_server_main(args: argparse.Namespace) -> None:
    from prmflow.integrations.client import RewardConfig
    from prmflow.integrations.reward_server import TOKEN_ENV, allowed_hosts, is_loopback, serve
    from prmflow.param_rules import redact_url

    try:
        given = {knob: getattr(args, knob) for knob in ("batch_size", "max_retries") if getattr(args, knob) is not None}
        config = RewardConfig(endpoint=args.endpoint or "", model=args.model or "", aggregation=args.aggregation,
                              policy_tokenizer=args.policy_tokenizer, **given)
        allowed_hosts(args.host, args.allow_host)
    except ValueError as err:
        sys.exit(f"prmflow reward-server: {redact_url(str(err))}")
    token = args.token or os.environ.get(TOKEN_ENV, "")
    print(f"reward-server: POST http://{args.host}:{args.port}/get_reward, rewards from {config.source}"
          + ("; requests must carry the token" if token else ""))
    if not token and not is_loopback(args.host):
        print(f"reward-server: bound to {args.host} without a token: any machine that reaches it and names an allowed "
              f"host gets rewards (set {TOKEN_ENV} or --token)", file=sys.stderr)
    serve(config, args.host, args.port, args.allow_host, token)


def run_summary(registry: dict, metrics: dict) -> str:
    """One line after `make run`: what the registry serves, what this run did, the headline metrics."""
    name, alias = registry.get("model_name", "prm"), registry.get("alias", "champion")
    if registry.get("registered", True):
        because = f" ({registry['registered_because']})" if registry.get("registered_because") else ""
        did = f"this run registered version {registry['version']}{because}; gate: {registry['reason']}"
    else:
        did = registry["reason"]
    shown = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("step_auroc", "first_error_f1", "best_of_n_prm_min",
                                                         "best_of_n_majority") if k in metrics)
    return (f"prmflow: {name}@{alias} is version {registry['champion_version']} ({did}); {shown}; "
            f"reports/summary.md, `prmflow metrics`")


def metric_lines(metrics: dict, words: list[str]) -> list[str]:
    """`key value` lines of a flat metrics dict in key order, keys padded to one column, numbers to 4
    significant digits; with `words`, only the keys that contain one of them."""
    kept = {k: v for k, v in sorted(metrics.items()) if not words or any(w in k for w in words)}
    width = max(map(len, kept), default=0)
    return [f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}" for k, v in kept.items()]


def serve_vllm_main(args: argparse.Namespace) -> None:
    import mlflow

    from prmflow.serving.vllm_server import serve_main

    mlflow.set_tracking_uri(_tracking_uri(args))
    serve_main(args)


def summary_main(args: argparse.Namespace) -> None:
    print(run_summary(*(json.loads(open(f"{args.reports}/{name}.json").read()) for name in ("registry", "metrics"))))


def metrics_main(args: argparse.Namespace) -> None:
    print("\n".join(metric_lines(json.loads(open(args.file).read()), args.words)))


def _params_argument(p: argparse.ArgumentParser, what: str = "params file") -> None:
    p.add_argument("--params", default="params.yaml", help=f"{what} (default: params.yaml)")


def _score_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="a JSON-lines file: one {problem, steps | text, id?} object per line")
    p.add_argument("--model", default="models/prm",
                   help="a registered model URI (models:/prm@champion: exactly what the server answers) "
                        "or a trained model directory")
    p.add_argument("--aggregation", default=DEFAULT_AGGREGATION, choices=AGGREGATIONS,
                   help="how the step scores make the solution's `score` (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=None,
                   help="first_error threshold for a model directory (default: evaluate's choice in "
                        "reports/metrics.json for the pipeline's models/prm, else 0.5; a registered model "
                        "carries its own)")
    p.add_argument("--max-unscored-step-fraction", type=float, default=0.05,
                   help="warn when more than this share of the steps is not scored (default: %(default)s)")
    p.add_argument("--rejects", default=None,
                   help="where rejected lines go with their reason (default: INPUT.rejects.jsonl)")
    _params_argument(p, "where the tracking URI comes from, unless MLFLOW_TRACKING_URI is set")


def _promote_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("version", help="the registered model version to serve as @champion (e.g. 7)")
    _alias_arguments(p)


def _rollback_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--to", default=None, help="roll back to this version instead of the previous one")
    _alias_arguments(p)


def _alias_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", required=True, help="why; stored as a tag on the version")
    p.add_argument("--who", default=None, help="who (default: the current user)")
    p.add_argument("--force", action="store_true", help="move the alias to an orphan version too (registered by a "
                                                        "register run that never recorded its gate decision)")
    _params_argument(p)


def _register_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="register even when the latest version holds the same weights, served config and gate inputs")
    _params_argument(p)


def _summary_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reports", default="reports", help="the reports folder (default: reports)")


def _pairs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="labeled rollout files (data/rollouts/*.jsonl)")
    p.add_argument("--output", required=True, help="where to write the pairs (JSON lines)")
    p.add_argument("--separator", default="\n", help="what ends the problem and each shared step in the prompt")


def _serve_vllm_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="models:/prm@champion", help="registered model URI")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    p.add_argument("--python", default=None,
                   help="vLLM's venv interpreter (default: $PRMFLOW_VLLM_PYTHON, else .venv-vllm/bin/python)")
    _params_argument(p, "where the tracking URI comes from, unless MLFLOW_TRACKING_URI is set")
    p.add_argument("vllm_args", nargs=argparse.REMAINDER, help="after --: more arguments for vLLM's server")


def _reward_server_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", default=None, help="base URL of the served PRM (mlflow models serve)")
    p.add_argument("--model", default=None, help="or a model directory / registered model URI to load here")
    p.add_argument("--aggregation", default=DEFAULT_AGGREGATION, choices=AGGREGATIONS,
                   help="how step scores become the completion's reward (default: %(default)s)")
    # Knob defaults stay RewardConfig's (integrations.client), not imported here: it loads torch.
    p.add_argument("--batch-size", type=int, default=None,
                   help="completions per request to the PRM (default: RewardConfig.batch_size)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=5002, help="port to listen on (default: 5002)")
    p.add_argument("--max-retries", type=int, default=None, help="retries of a failed request to the PRM, with "
                                                                "exponential backoff (default: RewardConfig.max_retries)")
    p.add_argument("--allow-host", action="append", default=[],
                   help="a Host name clients use (repeatable); needed when bound to every interface")
    p.add_argument("--token", default=None, help="a token every request must carry (Authorization: Bearer TOKEN, or "
                                                 "http://prm:TOKEN@host:port/get_reward); default: "
                                                 "$PRMFLOW_REWARD_TOKEN, else none (a command line shows in ps)")
    p.add_argument("--policy-tokenizer", default="", help="the policy's tokenizer (directory or hub id): its "
                                                          "special tokens are cut off a completion's end")


def _metrics_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("words", nargs="*", help="keep only the keys that contain one of these words")
    p.add_argument("--file", default="reports/metrics.json", help="default: reports/metrics.json")


@dataclass(frozen=True)
class Command:
    """One `prmflow` subcommand. A pipeline stage names its module (whose `main(params)` runs, with params.yaml
    read); any other command its function (`run(args)`, a true result: exit status 1) and its arguments."""

    name: str
    help: str
    module: str = ""
    run: Callable[[argparse.Namespace], object] | None = None
    arguments: Callable[[argparse.ArgumentParser], None] = _params_argument


# Every subcommand, the stages first in pipeline order (dvc.yaml's; inputs and outputs: dvc.yaml).
COMMANDS = (
    Command("check", "check params.yaml (unknown or repeated sections and keys, types, rules) before any stage runs",
            "prmflow.config"),
    Command("ingest", "read the problem sources (ingest.sources) into data/problems/{train,test}.jsonl",
            "prmflow.data.ingest"),
    Command("label", "sample solutions with the policy and label each step by Monte-Carlo completions -> "
                     "data/rollouts", "prmflow.labeling.label"),
    Command("validate", "check problems and rollouts with Great Expectations -> reports/validation.json; fails on "
                        "errors", "prmflow.labeling.validate"),
    Command("tokenize", "render each step with its step tag and tokenize -> data/tokenized",
            "prmflow.training.tokenize_stage"),
    Command("train", "train the PRM on the tokenized rollouts -> models/prm, reports/train.json",
            "prmflow.training.train"),
    Command("train_orm", "train the outcome reward model (final-answer correctness) -> models/orm, "
                         "reports/train_orm.json", "prmflow.training.train_orm"),
    Command("evaluate", "score the held-out rollouts beside baselines -> reports/metrics.json, summary.md, plots",
            "prmflow.evaluation.evaluate"),
    Command("search", "steer the policy with the PRM (best-of-N, vote, beam, DVTS) vs majority -> "
                      "reports/search.json", "prmflow.evaluation.search"),
    Command("register", "log the PRM to MLflow as @challenger; the gate promotes it to @champion only if better",
            "prmflow.serving.register", arguments=_register_arguments),
    Command("score", "score solutions in a JSON-lines file ({problem, steps} per line)", run=score_main,
            arguments=_score_arguments),
    Command("promote", "point the champion alias at VERSION, recording who and why", run=alias_main,
            arguments=_promote_arguments),
    Command("rollback", "point the champion alias back at the version it held before", run=alias_main,
            arguments=_rollback_arguments),
    Command("registry", "say where @champion and @challenger are, the champion history and orphan versions; "
                        "complete a move a killed command left unfinished", run=alias_main),
    Command("teacher-scores", "a teacher PRM's step scores of a candidates file -> a label.teacher_file, so a "
                              "served teacher is asked once", run=teacher_scores_main,
            arguments=_teacher_scores_arguments),
    Command("pairs", "step-level preference pairs {prompt, chosen, rejected} from labeled rollouts, for TRL's "
                     "DPOTrainer (Step-DPO)", run=pairs_main, arguments=_pairs_arguments),
    Command("serve-vllm", "serve a registered PRM with vLLM's pooling runner (same step scores as mlflow models "
                          "serve; POST /pooling with token ids)", run=serve_vllm_main, arguments=_serve_vllm_arguments),
    Command("reward-server", "OpenRLHF's remote reward endpoint (POST /get_reward) in front of a served PRM or a "
                             "model directory", run=reward_server_main, arguments=_reward_server_arguments),
    Command("summary", "one line: the served version, what the last run did, headline metrics", run=summary_main,
            arguments=_summary_arguments),
    Command("metrics", "print reports/metrics.json one `key value` a line (as a `dvc metrics show` table it is "
                       "hundreds of columns wide)", run=metrics_main, arguments=_metrics_arguments),
)
STAGES = tuple(command.name for command in COMMANDS if command.module)  # dvc.yaml's stages, in order
STAGE_MODULES = {command.name: command.module for command in COMMANDS if command.module}


def parser() -> argparse.ArgumentParser:
    """`prmflow`'s argument parser: one subcommand per row of COMMANDS."""
    top = argparse.ArgumentParser(prog="prmflow", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.arguments(sub.add_parser(command.name, help=command.help, description=command.help))
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    _project_environment()

    from prmflow.config import ConfigError, load_params
    from prmflow.jsonl import RecordError
    from prmflow.labeling.validate import ValidationFailed

    command = next(c for c in COMMANDS if c.name == args.command)
    try:
        if command.module:
            options = {k: v for k, v in vars(args).items() if k not in ("command", "params")}  # e.g. --force
            importlib.import_module(command.module).main(load_params(args.params), **options)
        elif command.run(args):
            sys.exit(1)
    except (ConfigError, RecordError, ValidationFailed, FileNotFoundError, TimeoutError) as err:
        print(f"prmflow {args.command}: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
