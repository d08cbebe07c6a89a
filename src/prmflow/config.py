"""Typed configuration: one dataclass per `params.yaml` section, validated on load.

This is the only module that reads `params.yaml`. Every stage receives the dataclass for
its section(s), never the raw dictionary, so a typo in `params.yaml` fails at load time with
one error that lists every problem, instead of being silently ignored mid-pipeline.

    from prmflow.config import load_params
    params = load_params("params.yaml")
    params.train.learning_rate
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """Raised with every problem found in a params file, one per line."""


@dataclass
class BaseParams:
    seed: int = field(default=1234, metadata={"help": "Global seed; every stage derives its RNG from it."})
    data_dir: str = field(default="data", metadata={"help": "Root of the DVC-tracked data outputs."})
    models_dir: str = field(default="models", metadata={"help": "Where trained models are saved."})
    reports_dir: str = field(default="reports", metadata={"help": "Metrics, validation results, plots."})
    mlflow_tracking_uri: str = field(
        default="sqlite:///mlflow/mlflow.db",
        metadata={"help": "MLflow backend store; the file store refuses to start in MLflow 3.17."},
    )
    mlflow_artifacts_dir: str = field(default="mlflow/artifacts", metadata={"help": "MLflow artifact root."})
    mlflow_experiment: str = field(default="prmflow", metadata={"help": "MLflow experiment name."})
    num_threads: int = field(
        default=1, metadata={"help": "torch CPU threads; 1 is fastest for tiny models (STACK.md)."}
    )


@dataclass
class IngestParams:
    num_train: int = field(default=2000, metadata={"help": "Generated problems in the train split."})
    num_test: int = field(default=100, metadata={"help": "Generated problems in the test split."})
    min_steps: int = field(default=2, metadata={"help": "Fewest reference steps per generated problem."})
    max_steps: int = field(default=5, metadata={"help": "Most reference steps per generated problem."})
    max_operand: int = field(default=20, metadata={"help": "Largest operand the generator draws."})
    decimal_rate: float = field(
        default=0.0, metadata={"help": "Share of generated problems about measured amounts with decimals."}
    )
    fraction_rate: float = field(
        default=0.0, metadata={"help": "Share of generated steps that keep a simple fraction p/q of the amount."}
    )
    sources: list[dict] = field(
        default_factory=lambda: [{"format": "generator"}],
        metadata={"help": "Problem sources, combined: {format: generator} or {format: gsm8k|math|prm800k|"
                          "math_shepherd|trl_stepwise|input_value_label, path: file-or-folder | hub: dataset, "
                          "split: train|test|auto, limit: N, name: label, neutral: positive|negative (prm800k)}."},
    )
    test_fraction: float = field(
        default=0.1, metadata={"help": "Share of problems of `split: auto` sources that go to test, by problem id."}
    )
    max_reject_fraction: float = field(
        default=0.2, metadata={"help": "The stage fails when any source rejects more than this share of records."}
    )


@dataclass
class LabelParams:
    policy: str = field(
        default="simulated",
        metadata={"help": "Rollout policy: simulated (offline, knows its true first error), transformers "
                          "(a local causal LM in label.model_dir) or openai (an OpenAI-compatible /v1/completions "
                          "server at label.endpoint, e.g. vLLM)."},
    )
    method: str = field(
        default="mc",
        metadata={"help": "Step labeling: mc (N completions from every prefix, Math-Shepherd) or binary_search "
                          "(OmegaPRM: completions only at the prefixes a binary search for the first error probes)."},
    )
    trajectories_per_problem: int = field(default=4, metadata={"help": "Sampled solutions per problem."})
    completions_per_step: int = field(
        default=8, metadata={"help": "Completions sampled from each step prefix (Math-Shepherd's N)."}
    )
    compare_methods_on: int = field(
        default=200,
        metadata={"help": "simulated policy: also label this many train problems with every method and report "
                          "their agreement with the true first error and calls (reports/labeling.json); 0: off."},
    )
    first_round_completions: int = field(
        default=2,
        metadata={"help": "binary_search: completions drawn first at a probed prefix; the rest of "
                          "completions_per_step only if none of these reaches the answer (same hard label, "
                          "fewer calls: bench/labeling.py)."},
    )
    slip_rate: float = field(
        default=0.15, metadata={"help": "Per-step probability that the simulated policy slips."}
    )
    operation_slip_fraction: float = field(
        default=0.5, metadata={"help": "Share of slips that use the wrong operation; the rest get a wrong result."}
    )
    model_dir: str = field(
        default="", metadata={"help": "transformers policy: local model directory (tokenizer + causal LM)."}
    )
    gguf_file: str = field(
        default="", metadata={"help": "transformers policy: a GGUF file in label.model_dir to load (dequantized) "
                                      "instead of a transformers checkpoint, e.g. SmolLM2-135M-Instruct.Q4_1.gguf."}
    )
    max_new_tokens: int = field(
        default=256, metadata={"help": "transformers and openai policies: most tokens generated per completion."}
    )
    temperature: float = field(
        default=0.7, metadata={"help": "transformers and openai policies: sampling temperature; 0 decodes greedily."}
    )
    batch_size: int = field(
        default=16, metadata={"help": "transformers policy: prompts (prefix completions) per generate call."}
    )
    endpoint: str = field(
        default="", metadata={"help": "openai policy: base URL of the server, e.g. http://127.0.0.1:8000/v1."}
    )
    model_name: str = field(
        default="", metadata={"help": "openai policy: model id sent with each request; empty sends none "
                                      "(a server that serves one model uses it)."}
    )
    concurrency: int = field(default=8, metadata={"help": "openai policy: requests in flight at once."})
    request_timeout_s: float = field(
        default=120.0, metadata={"help": "openai policy: seconds a request waits on the server (to connect, or "
                                         "for the next bytes of its answer) before it is retried."}
    )
    max_retries: int = field(
        default=5, metadata={"help": "openai policy: retries of a request after a connection error, timeout, "
                                     "429 or 5xx; other 4xx answers fail at once."}
    )
    retry_backoff_s: float = field(
        default=1.0, metadata={"help": "openai policy: wait before the first retry; doubled each retry "
                                       "(capped at 30 s), with random jitter."}
    )
    api_key_env: str = field(
        default="", metadata={"help": "openai policy: name of the environment variable holding the API key, "
                                      "sent as a Bearer token; empty sends none."}
    )


@dataclass
class ValidateParams:
    min_steps: int = field(default=1, metadata={"help": "Fewest steps a labeled solution may have."})
    max_steps: int = field(default=20, metadata={"help": "Most steps a labeled solution may have."})
    max_step_chars: int = field(default=400, metadata={"help": "Longest step text allowed."})
    min_negative_fraction: float = field(
        default=0.02, metadata={"help": "Fewer '-' labels than this fraction means a labeling bug."}
    )
    max_negative_fraction: float = field(
        default=0.9, metadata={"help": "More '-' labels than this fraction means a labeling bug."}
    )
    warn_min_negative_fraction: float = field(
        default=0.05, metadata={"help": "Fewer '-' labels than this is legal but skewed: a warning, not a failure."}
    )
    warn_max_negative_fraction: float = field(
        default=0.6, metadata={"help": "More '-' labels than this is legal but skewed: a warning, not a failure."}
    )
    max_label_conflict_fraction: float = field(
        default=0.1,
        metadata={"help": "Most solutions whose identical twin (same problem, same steps) has other hard labels; "
                          "Monte-Carlo noise gives ~3% with 4 completions per step, a labeling bug far more."},
    )
    max_duplicate_fraction: float = field(
        default=0.6,
        metadata={"help": "Above this share of solutions repeating an earlier one of their problem: a warning "
                          "(the policy legitimately resamples slip-free trajectories)."},
    )


@dataclass
class ModelParams:
    base_model: str = field(
        default="builtin",
        metadata={"help": "'builtin' (small Llama from a config, corpus tokenizer), a local HF model dir, "
                          "or a hub id (online only)."},
    )
    gguf_file: str = field(
        default="", metadata={"help": "A GGUF file inside base_model's folder to load from (needs `gguf`); '' = none."}
    )
    step_tag: str = field(default="<step>", metadata={"help": "Special token appended after every step."})
    positive_token: str = field(default="+", metadata={"help": "Label token for a correct step."})
    negative_token: str = field(default="-", metadata={"help": "Label token for an incorrect step."})
    step_template: str = field(default="Step {i}: {step}", metadata={"help": "How each step is rendered."})
    vocab_size: int = field(default=512, metadata={"help": "Corpus tokenizer size (builtin model only)."})
    hidden_size: int = field(default=64, metadata={"help": "Builtin model width."})
    num_layers: int = field(default=2, metadata={"help": "Builtin model depth."})
    num_heads: int = field(default=4, metadata={"help": "Builtin model attention heads."})
    intermediate_size: int = field(default=192, metadata={"help": "Builtin model MLP width."})
    max_length: int = field(default=512, metadata={"help": "Context length; longer solutions lose whole steps."})
    truncate_problem_left: bool = field(
        default=False,
        metadata={"help": "A problem too long for its first step keeps its tail (else the example is dropped)."},
    )


@dataclass
class TrainParams:
    epochs: float = field(default=4.0, metadata={"help": "Passes over the training set."})
    batch_size: int = field(default=16, metadata={"help": "Solutions per optimizer step."})
    learning_rate: float = field(default=3e-3, metadata={"help": "AdamW peak learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Fraction of steps with linear warmup."})
    label_type: str = field(
        default="hard", metadata={"help": "'hard' (Math-Shepherd +/-) or 'soft' (MC value) targets."}
    )
    negative_class_weight: float = field(
        default=1.0, metadata={"help": "Loss weight of the '-' class relative to '+' (>1 favours catching errors)."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Batches per optimizer step (effective batch = batch_size x this x processes)."}
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank (peft, merged before saving); 0 = full fine-tuning."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha (used only when lora_r > 0)."})
    save_steps: int = field(
        default=500,
        metadata={"help": "Checkpoint every N optimizer steps to <models_dir>/prm-checkpoints (last 2 kept); "
                          "an interrupted train stage resumes from there. 0 = no checkpoints."},
    )


@dataclass
class TrainOrmParams:
    epochs: float = field(
        default=2.0,
        metadata={"help": "Passes over the training set for the outcome reward model (stage train_orm); it "
                          "replaces train.epochs, every other train.* and model.* value is shared with the PRM."},
    )


@dataclass
class CombineParams:
    process_weight: float = field(
        default=0.7,
        metadata={"help": "Combined score = this x PRM aggregate (P(+)) + outcome_weight x ORM P(correct)."},
    )
    outcome_weight: float = field(
        default=0.3, metadata={"help": "Weight of the trained ORM's score in the combined score (evaluate, register)."}
    )


@dataclass
class EvaluateParams:
    threshold: float = field(default=0.5, metadata={"help": "Step score below this predicts '-'."})
    aggregation: str = field(default="min", metadata={"help": "Step-score aggregation for best-of-N."})
    batch_size: int = field(default=32, metadata={"help": "Solutions scored per forward pass."})
    validation_fraction: float = field(
        default=0.5,
        metadata={"help": "Share of held-out problems (by a hash of the problem id) on which the first-error "
                          "threshold is chosen; metrics are reported on the rest. 0: use `threshold`."},
    )
    calibration_bins: int = field(
        default=10, metadata={"help": "Equal-width bins of P(+) for the expected calibration error."}
    )
    zero_shot_baseline: bool = field(
        default=True, metadata={"help": "Also score the untrained base model with the verification prompt."}
    )
    champion_baseline: bool = field(
        default=True, metadata={"help": "Also score the registry's current champion, when there is one."}
    )
    external: list[dict] = field(
        default_factory=list,
        metadata={"help": "Extra held-out files, each reported as its own section: {name, path, format: "
                          "outcome (problem, steps, correct; best-of-N) | processbench (problem, steps, "
                          "label = first error or -1)}."},
    )


@dataclass
class RegisterParams:
    model_name: str = field(default="prm", metadata={"help": "Registered model name."})
    alias: str = field(
        default="champion", metadata={"help": "Alias that serving follows; moved only when the gate passes."}
    )
    challenger_alias: str = field(default="challenger", metadata={"help": "Alias set on every new version."})
    gate_metric: str = field(
        default="first_error_f1",
        metadata={"help": "reports/metrics.json key (higher is better) that decides promotion."},
    )
    promotion_margin: float = field(
        default=0.01, metadata={"help": "The challenger must beat the champion's gate metric by more than this."}
    )
    max_solutions_per_request: int = field(
        default=64, metadata={"help": "Served model: more solutions in one request is a 400."}
    )
    max_steps_per_solution: int = field(
        default=64, metadata={"help": "Served model: more steps in one solution is a 400."}
    )
    model_kind: str = field(
        default="prm",
        metadata={"help": "What is registered and served: prm (models/prm alone) or combined (models/prm and "
                          "models/orm, score = combine weights; the response adds outcome_score)."},
    )


@dataclass
class Params:
    base: BaseParams = field(default_factory=BaseParams)
    ingest: IngestParams = field(default_factory=IngestParams)
    label: LabelParams = field(default_factory=LabelParams)
    validate: ValidateParams = field(default_factory=ValidateParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    train_orm: TrainOrmParams = field(default_factory=TrainOrmParams)
    combine: CombineParams = field(default_factory=CombineParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    register: RegisterParams = field(default_factory=RegisterParams)


# Values that are only legal from a fixed set; checked after types.
CHOICES = {
    ("label", "policy"): {"simulated", "transformers", "openai"},
    ("label", "method"): {"mc", "binary_search"},
    ("train", "label_type"): {"hard", "soft"},
    ("register", "model_kind"): {"prm", "combined"},
    ("evaluate", "aggregation"): {"min", "prod", "last", "mean"},
    # Higher-is-better keys of reports/metrics.json.
    ("register", "gate_metric"): {"first_error_f1", "step_auroc", "negative_f1", "step_accuracy",
                                  "best_of_n_prm_min", "best_of_n_prm_prod", "best_of_n_prm_last",
                                  "best_of_n_prm_mean"},
}


def _type_ok(value: object, annotation: object) -> bool:
    if annotation is float:  # YAML writes 3 for 3.0; an int is a fine float
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if annotation is type(None):
        return value is None
    return isinstance(value, annotation)  # type: ignore[arg-type]


def _build_section(name: str, cls: type, raw: object, problems: list[str]) -> object:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{name}: expected a mapping, got {type(raw).__name__}")
        return cls()
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in sorted(set(raw) - known):
        problems.append(f"{name}.{key}: unknown key (known: {', '.join(sorted(known))})")
    values = {}
    for key in known & set(raw):
        value, annotation = raw[key], hints[key]
        if not _type_ok(value, annotation):
            expected = getattr(annotation, "__name__", str(annotation))
            problems.append(f"{name}.{key}: expected {expected}, got {type(value).__name__} {value!r}")
            continue
        if annotation is float:
            value = float(value)
        allowed = CHOICES.get((name, key))
        if allowed is not None and value not in allowed:
            problems.append(f"{name}.{key}: {value!r} is not one of {sorted(allowed)}")
            continue
        values[key] = value
    return cls(**values)


def _check_ranges(p: Params, problems: list[str]) -> None:
    positive = [
        ("ingest.num_train", p.ingest.num_train), ("ingest.num_test", p.ingest.num_test),
        ("ingest.min_steps", p.ingest.min_steps), ("ingest.max_operand", p.ingest.max_operand),
        ("label.trajectories_per_problem", p.label.trajectories_per_problem),
        ("label.completions_per_step", p.label.completions_per_step),
        ("label.first_round_completions", p.label.first_round_completions),
        ("label.max_new_tokens", p.label.max_new_tokens), ("label.batch_size", p.label.batch_size),
        ("label.concurrency", p.label.concurrency), ("label.request_timeout_s", p.label.request_timeout_s),
        ("model.hidden_size", p.model.hidden_size), ("model.num_layers", p.model.num_layers),
        ("model.num_heads", p.model.num_heads), ("model.max_length", p.model.max_length),
        ("train.batch_size", p.train.batch_size), ("train.epochs", p.train.epochs),
        ("train_orm.epochs", p.train_orm.epochs),
        ("train.learning_rate", p.train.learning_rate), ("base.num_threads", p.base.num_threads),
        ("train.negative_class_weight", p.train.negative_class_weight),
        ("train.gradient_accumulation_steps", p.train.gradient_accumulation_steps),
        ("evaluate.batch_size", p.evaluate.batch_size), ("evaluate.calibration_bins", p.evaluate.calibration_bins),
        ("register.max_solutions_per_request", p.register.max_solutions_per_request),
        ("register.max_steps_per_solution", p.register.max_steps_per_solution),
    ]
    problems += [f"{name}: must be > 0, got {value!r}" for name, value in positive if value <= 0]
    if p.ingest.max_steps < p.ingest.min_steps:
        problems.append(f"ingest.max_steps: {p.ingest.max_steps} is below ingest.min_steps {p.ingest.min_steps}")
    if p.ingest.max_operand < 2:
        problems.append(f"ingest.max_operand: must be >= 2, got {p.ingest.max_operand}")
    _check_sources(p.ingest, problems)
    _check_external(p.evaluate, problems)
    ordered = [  # (lower name, lower, upper name, upper): each pair must not cross
        ("validate.min_steps", p.validate.min_steps, "validate.max_steps", p.validate.max_steps),
        ("validate.min_negative_fraction", p.validate.min_negative_fraction,
         "validate.max_negative_fraction", p.validate.max_negative_fraction),
        ("validate.warn_min_negative_fraction", p.validate.warn_min_negative_fraction,
         "validate.warn_max_negative_fraction", p.validate.warn_max_negative_fraction),
    ]
    problems += [f"{upper}: {high} is below {lower} {low}" for lower, low, upper, high in ordered if high < low]
    fractions = [
        ("label.slip_rate", p.label.slip_rate), ("label.operation_slip_fraction", p.label.operation_slip_fraction),
        ("train.warmup_ratio", p.train.warmup_ratio),
        ("ingest.decimal_rate", p.ingest.decimal_rate), ("ingest.fraction_rate", p.ingest.fraction_rate),
        ("ingest.test_fraction", p.ingest.test_fraction), ("ingest.max_reject_fraction", p.ingest.max_reject_fraction),
        ("evaluate.threshold", p.evaluate.threshold), ("register.promotion_margin", p.register.promotion_margin),
        ("evaluate.validation_fraction", p.evaluate.validation_fraction),
        ("validate.min_negative_fraction", p.validate.min_negative_fraction),
        ("validate.max_negative_fraction", p.validate.max_negative_fraction),
        ("validate.warn_min_negative_fraction", p.validate.warn_min_negative_fraction),
        ("validate.warn_max_negative_fraction", p.validate.warn_max_negative_fraction),
        ("validate.max_label_conflict_fraction", p.validate.max_label_conflict_fraction),
        ("validate.max_duplicate_fraction", p.validate.max_duplicate_fraction),
    ]
    problems += [f"{name}: must be in [0, 1], got {value!r}" for name, value in fractions if not 0 <= value <= 1]
    if p.model.hidden_size % max(p.model.num_heads, 1):
        problems.append(
            f"model.hidden_size: {p.model.hidden_size} is not divisible by model.num_heads {p.model.num_heads}"
        )
    weights = [("combine.process_weight", p.combine.process_weight),
               ("combine.outcome_weight", p.combine.outcome_weight)]
    problems += [f"{name}: must be >= 0, got {value!r}" for name, value in weights if value < 0]
    if p.combine.process_weight + p.combine.outcome_weight <= 0:
        problems.append("combine.outcome_weight: combine.process_weight + combine.outcome_weight must be > 0")
    if p.register.alias == p.register.challenger_alias:
        problems.append(f"register.challenger_alias: must differ from register.alias {p.register.alias!r}")
    problems += [f"{name}: must be >= 0, got {value!r}" for name, value in
                 [("train.lora_r", p.train.lora_r), ("train.save_steps", p.train.save_steps),
                  ("label.temperature", p.label.temperature), ("label.max_retries", p.label.max_retries),
                  ("label.retry_backoff_s", p.label.retry_backoff_s),
                  ("label.compare_methods_on", p.label.compare_methods_on)] if value < 0]
    if p.label.policy == "transformers" and not p.label.model_dir:
        problems.append("label.model_dir: the transformers policy needs a local model directory")
    if p.label.policy == "openai" and not p.label.endpoint.startswith(("http://", "https://")):
        problems.append(f"label.endpoint: the openai policy needs the server's base URL (http://host:port/v1), "
                        f"got {p.label.endpoint!r}")
    if p.model.positive_token == p.model.negative_token:
        problems.append("model.negative_token: must differ from model.positive_token")
    if "{step}" not in p.model.step_template:
        problems.append(f"model.step_template: {p.model.step_template!r} has no {{step}} placeholder")


SOURCE_KEYS = {"format", "path", "hub", "split", "limit", "name", "neutral"}


def _check_sources(ingest: IngestParams, problems: list[str]) -> None:
    """Each `ingest.sources` entry: a known format, one place to read it from, legal options."""
    from prmflow.generator import MAX_STEPS
    from prmflow.sources import FORMATS, NEUTRAL_LABELS, SPLITS

    if ingest.max_steps > MAX_STEPS:
        problems.append(f"ingest.max_steps: at most {MAX_STEPS}, got {ingest.max_steps}")
    if not ingest.sources:
        problems.append("ingest.sources: must list at least one source")
    names = []
    for i, spec in enumerate(ingest.sources):
        where = f"ingest.sources[{i}]"
        problems += [f"{where}.{key}: unknown key (known: {', '.join(sorted(SOURCE_KEYS))})"
                     for key in sorted(set(spec) - SOURCE_KEYS)]
        fmt = spec.get("format")
        if fmt not in FORMATS:
            problems.append(f"{where}.format: {fmt!r} is not one of {list(FORMATS)}")
        names.append(str(spec.get("name") or fmt))
        places = [key for key in ("path", "hub") if key in spec]
        if fmt == "generator":
            problems += [f"{where}.{key}: the generator takes no {key} (num_train/num_test set its splits)"
                         for key in ("path", "hub", "split", "limit") if key in spec]
        elif fmt in FORMATS and len(places) != 1:
            problems.append(f"{where}: give exactly one of path (a local file or folder) or hub (a dataset name)")
        for key in ("path", "hub", "name"):
            if key in spec and not (isinstance(spec[key], str) and spec[key].strip()):
                problems.append(f"{where}.{key}: expected a non-empty string, got {spec[key]!r}")
        if "split" in spec and spec["split"] not in SPLITS:
            problems.append(f"{where}.split: {spec['split']!r} is not one of {list(SPLITS)}")
        if "limit" in spec and not (isinstance(spec["limit"], int) and not isinstance(spec["limit"], bool)
                                    and spec["limit"] > 0):
            problems.append(f"{where}.limit: must be a positive integer, got {spec['limit']!r}")
        if "neutral" in spec and (fmt != "prm800k" or spec["neutral"] not in NEUTRAL_LABELS):
            problems.append(f"{where}.neutral: only for prm800k, one of {list(NEUTRAL_LABELS)}; "
                            f"got {spec['neutral']!r}")
    problems += [f"ingest.sources: {name!r} is listed twice (give one a distinct name)"
                 for name in sorted({n for n in names if names.count(n) > 1})]


EXTERNAL_KEYS = ("name", "path", "format")


def _check_external(evaluate: EvaluateParams, problems: list[str]) -> None:
    """Each `evaluate.external` entry: exactly name, path and a known format; names unique."""
    from prmflow.evaluate import EXTERNAL_FORMATS

    if evaluate.validation_fraction >= 1:
        problems.append(f"evaluate.validation_fraction: must be below 1 (some problems must be left to report), "
                        f"got {evaluate.validation_fraction}")
    names = []
    for i, spec in enumerate(evaluate.external):
        where = f"evaluate.external[{i}]"
        problems += [f"{where}.{key}: unknown key (known: {', '.join(EXTERNAL_KEYS)})"
                     for key in sorted(set(spec) - set(EXTERNAL_KEYS))]
        problems += [f"{where}.{key}: expected a non-empty string, got {spec.get(key)!r}"
                     for key in EXTERNAL_KEYS if not (isinstance(spec.get(key), str) and spec[key].strip())]
        if isinstance(spec.get("format"), str) and spec["format"] not in EXTERNAL_FORMATS:
            problems.append(f"{where}.format: {spec['format']!r} is not one of {list(EXTERNAL_FORMATS)}")
        names.append(spec.get("name"))
    problems += [f"evaluate.external: name {name!r} is listed twice"
                 for name in sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})]


def params_from_dict(raw: object, source: str = "params") -> Params:
    """Build and validate `Params` from a parsed YAML mapping; raise one ConfigError listing all problems."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    sections = {f.name: f for f in dataclasses.fields(Params)}
    for name in sorted(set(raw) - set(sections)):
        problems.append(f"{name}: unknown section (known: {', '.join(sections)})")
    built = {
        name: _build_section(name, typing.get_type_hints(Params)[name], raw.get(name), problems)
        for name in sections
    }
    params = Params(**built)
    if not problems:
        _check_ranges(params, problems)
    if problems:
        raise ConfigError(f"{source}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the project root or pass --params)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return params_from_dict(raw, source=str(path))
