"""The `params.yaml` sections: one dataclass each, its knobs with their help text and rules beside them.

A field's metadata carries its help text, and where it has one its rule (`POSITIVE`, `NON_NEGATIVE`,
`FRACTION`) or its `choices`; relations between a section's fields are its `check`, a short list of
(holds, message) requirements. Adding a knob touches one place: its field here (and params.yaml).
The names and rules they use are in param_rules.py; config.py reads the file and applies all of it.
The sections of what comes after training (combine, evaluate, search, register) are in sections_evaluation.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from prmflow.param_rules import (
    ANSWER_READINGS, DEVICE_PATTERN, DTYPES, FRACTION, GENERATOR_MAX_STEPS, NON_NEGATIVE, POSITIVE, TEACHER_COMBINES,
    source_problems, unmet,
)

# model.step_template's default, and the reward models' and Math-Shepherd PRMs' (prmflow.data.step_text lays it out).
DEFAULT_STEP_TEMPLATE = "Step {i}: {step}"


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
        default=1, metadata={"rule": POSITIVE, "help": "torch CPU threads; 1 is fastest for tiny models."}
    )


@dataclass
class IngestParams:
    num_train: int = field(default=2000, metadata={"rule": POSITIVE, "help": "Generated problems in the train split."})
    num_test: int = field(default=100, metadata={"rule": POSITIVE, "help": "Generated problems in the test split."})
    min_steps: int = field(default=2, metadata={"rule": POSITIVE,
                                                "help": "Fewest reference steps per generated problem."})
    max_steps: int = field(default=5, metadata={"help": "Most reference steps per generated problem."})
    max_operand: int = field(default=20, metadata={"rule": POSITIVE, "help": "Largest operand the generator draws."})
    decimal_rate: float = field(
        default=0.0, metadata={"rule": FRACTION,
                               "help": "Share of generated problems about measured amounts with decimals."}
    )
    fraction_rate: float = field(
        default=0.0, metadata={"rule": FRACTION,
                               "help": "Share of generated steps that keep a simple fraction p/q of the amount."}
    )
    sources: list[dict] = field(
        default_factory=lambda: [{"format": "generator"}],
        metadata={"help": "Problem sources, combined: {format: generator} or {format: gsm8k|math|prm800k|"
                          "math_shepherd|trl_stepwise|input_value_label|processbench|candidates|prm800k_stepwise "
                          "(parquet), path: file-or-folder | hub: dataset, split: train|test|auto, limit: N, "
                          "name: label, neutral: positive|negative (prm800k, prm800k_stepwise)}."},
    )
    test_fraction: float = field(
        default=0.1, metadata={"rule": FRACTION,
                               "help": "Share of problems of `split: auto` sources that go to test, by problem id."}
    )
    max_reject_fraction: float = field(
        default=0.2, metadata={"rule": FRACTION,
                               "help": "The stage fails when any source rejects more than this share of records."}
    )

    def check(self) -> list[str]:
        names = [str(spec.get("name") or spec.get("format")) for spec in self.sources]
        return unmet([
            (self.max_steps >= self.min_steps, f"max_steps: {self.max_steps} is below min_steps {self.min_steps}"),
            (self.max_operand >= 2, f"max_operand: must be >= 2, got {self.max_operand}"),
            (self.max_steps <= GENERATOR_MAX_STEPS,
             f"max_steps: at most {GENERATOR_MAX_STEPS}, got {self.max_steps}"),
            (bool(self.sources), "sources: must list at least one source"),
            *((names.count(name) == 1, f"sources: {name!r} is listed twice (give one a distinct name)")
              for name in sorted(set(names))),
        ]) + [p for i, spec in enumerate(self.sources) for p in source_problems(f"sources[{i}]", spec)]


@dataclass
class LabelParams:
    policy: str = field(
        default="simulated",
        metadata={"choices": ("simulated", "transformers", "openai"),
                  "help": "Rollout policy: simulated (offline, knows its true first error), transformers "
                          "(a local causal LM in label.model_dir) or openai (an OpenAI-compatible /v1/completions "
                          "server at label.endpoint, e.g. vLLM)."},
    )
    method: str = field(
        default="mc",
        metadata={"choices": ("mc", "binary_search", "relative_progress", "teacher"),
                  "help": "Step labeling: mc (N completions from every prefix, Math-Shepherd), relative_progress "
                          "(GenPRM: + where MC(after) / MC(before) >= label.progress_threshold), binary_search "
                          "(OmegaPRM: completions only at the prefixes a binary search for the first error probes) "
                          "or teacher (a teacher PRM's step scores of each candidate solution, from "
                          "label.teacher_file or the PRM at label.teacher_model; no policy is run)."},
    )
    progress_threshold: float = field(
        default=0.8, metadata={"rule": FRACTION, "help": "relative_progress: a step is + when the Monte-Carlo value "
                                                         "after it over the value before it is at least this (GenPRM)."}
    )
    consensus_file: str = field(
        default="", metadata={"help": "Keep a train solution only where this second source's labels of it (a file "
                                      "or folder of JSON lines: id and first_error, ProcessBench's label, or +/- "
                                      "labels; e.g. another run's data/rollouts) put the first error on the same "
                                      "step; the rest go to data/rollouts/rejects.jsonl. Test is kept whole. "
                                      "'': off."}
    )
    teacher_file: str = field(
        default="", metadata={"help": "teacher: JSON lines of cached step scores, {id, step_scores: {model: "
                                      "[float per step]}}, keyed by the candidate ids of the ingested rows."}
    )
    teacher_model: str = field(
        default="", metadata={"help": "teacher: a PRM asked for the step scores instead of a file (prmflow.load): a "
                                      "served PRM's URL (/invocations), vLLM's /pooling URL (with "
                                      "label.teacher_checkpoint), a model folder or a models:/ URI. A candidate it "
                                      "cannot score whole (cut by its context) is rejected. Solutions per request: "
                                      "label.batch_size; request_timeout_s, max_retries as the openai policy."}
    )
    teacher_checkpoint: str = field(
        default="", metadata={"help": "teacher: the PRM's folder whose tokenizer encodes candidates for a /pooling "
                                      "teacher_model (vLLM's server takes token ids)."}
    )
    teacher_models: list[str] = field(
        default_factory=lambda: ["qwen_prm"],
        metadata={"help": "teacher: the teacher_file's step_scores entries to use; several are combined by "
                          "teacher_combine."},
    )
    teacher_combine: str = field(
        default="mean", metadata={"choices": TEACHER_COMBINES,
                                  "help": "teacher: several teachers' scores of a step to one: mean, min (good only "
                                          "if every teacher says so) or max (good if any does)."}
    )
    teacher_labels: str = field(
        default="soft", metadata={"choices": ("soft", "hard"),
                                  "help": "teacher: values are the combined score (soft) or 1/0 from the labels "
                                          "(hard); labels are + where the score >= teacher_threshold, - below."}
    )
    teacher_threshold: float = field(
        default=0.5, metadata={"rule": FRACTION, "help": "teacher: a step is + when its combined score is at least "
                                                         "this; the first - is the solution's first error."}
    )
    answer_reading: str = field(
        default="strict",
        metadata={"choices": ANSWER_READINGS,
                  "help": "transformers/openai policies: how a rollout's final answer is read. strict: markers only "
                          "(####, \\boxed, 'The answer is', 'Answer:' lines), what the prompt's format asks for; "
                          "flexible: also a concluding sentence ('Therefore, Janet makes $18 every day.'), for "
                          "generators that do not follow it. A rollout cut mid-sentence states no answer either way."},
    )
    trajectories_per_problem: int = field(default=4, metadata={"rule": POSITIVE,
                                                               "help": "Sampled solutions per problem."})
    completions_per_step: int = field(
        default=8, metadata={"rule": POSITIVE, "help": "Completions sampled from each step prefix (Math-Shepherd's N)."}
    )
    compare_methods_on: int = field(
        default=200,
        metadata={"rule": NON_NEGATIVE,
                  "help": "simulated policy: also label this many train problems with every method and report "
                          "their agreement with the true first error and calls (reports/labeling.json); 0: off."},
    )
    first_round_completions: int = field(
        default=2,
        metadata={"rule": POSITIVE, "help": "binary_search: completions drawn first at a probed prefix; the rest of "
                          "completions_per_step only if none of these reaches the answer (same hard label, "
                          "fewer calls: bench/labeling.py)."},
    )
    slip_rate: float = field(
        default=0.19, metadata={"rule": FRACTION, "help": "Per-step probability that the simulated policy slips."}
    )
    operation_slip_fraction: float = field(
        default=0.5, metadata={"rule": FRACTION,
                               "help": "Share of slips that use the wrong operation; the rest get a wrong result."}
    )
    misconception_rate: float = field(default=0.25, metadata={"rule": FRACTION, "help": "simulated policy: chance "
        "that a sample (or a prefix's completion) holds the problem's one systematic error (a wrong operation, a "
        "misread quantity or a skipped step, drawn once per problem); 0: independent slips only."})
    model_dir: str = field(
        default="", metadata={"help": "transformers policy: local model directory (tokenizer + causal LM)."}
    )
    gguf_file: str = field(
        default="", metadata={"help": "transformers policy: a GGUF file in label.model_dir to load (dequantized) "
                                      "instead of a transformers checkpoint, e.g. SmolLM2-135M-Instruct.Q4_1.gguf."}
    )
    max_new_tokens: int = field(
        default=256, metadata={"rule": POSITIVE,
                               "help": "transformers and openai policies: most tokens generated per completion."}
    )
    temperature: float = field(
        default=0.7, metadata={"rule": NON_NEGATIVE,
                               "help": "transformers and openai policies: sampling temperature; 0 decodes greedily."}
    )
    batch_size: int = field(
        default=16, metadata={"rule": POSITIVE,
                              "help": "transformers policy: prompts (prefix completions) per generate call."}
    )
    endpoint: str = field(
        default="", metadata={"help": "openai policy: server base URL, e.g. http://127.0.0.1:8000/v1; several "
                                      "comma-separated (each request goes to the least busy)."}
    )
    model_name: str = field(
        default="", metadata={"help": "openai policy: model id sent with each request; empty sends none "
                                      "(a server that serves one model uses it)."}
    )
    concurrency: int = field(default=32, metadata={"rule": POSITIVE, "help": "openai policy: requests in flight, "
                             "over all problems and endpoints (per Ray worker with label.workers > 1)."})
    send_seed: bool = field(default=True, metadata={"help": "openai policy: send each request a seed (reproducible "
                            "samples); false where seeded requests fail (vLLM's CPU build, chunked prefill)."})
    request_timeout_s: float = field(default=120.0, metadata={"rule": POSITIVE, "help": "openai policy: seconds a "
                                     "request waits on the server (to connect, or for more of its answer) to retry."})
    max_retries: int = field(
        default=5, metadata={"rule": NON_NEGATIVE,
                             "help": "openai policy: retries of a request after a connection error, timeout, "
                                     "429 or 5xx; other 4xx answers fail at once."}
    )
    retry_backoff_s: float = field(default=1.0, metadata={"rule": NON_NEGATIVE, "help": "openai policy: wait before "
                                   "the first retry; doubled each retry (capped at 30 s), with random jitter."})
    api_key_env: str = field(
        default="", metadata={"help": "openai policy: name of the environment variable holding the API key, "
                                      "sent as a Bearer token; empty sends none."}
    )
    workers: int = field(default=1, metadata={"rule": POSITIVE, "help": "Ray workers labeling problems, each with its "
                         "own policy; 1: in the stage's process, no Ray. The output is the same for any number."})
    ray_address: str = field(default="", metadata={"help": "workers > 1: the Ray cluster to join (ray://head:10001, "
                             "or auto: this node's); empty starts a local Ray with `workers` CPUs."})
    worker_gpus: float = field(default=0.0, metadata={"rule": NON_NEGATIVE, "help": "workers > 1: GPUs Ray gives "
                               "each worker (the transformers policy loads its model there)."})
    chunk_problems: int = field(default=64, metadata={"rule": POSITIVE, "help": "workers > 1: problems sent to a "
                                "worker at once, 2 chunks queued each; a killed worker's chunks are redone."})

    def check(self) -> list[str]:
        return unmet([
            (self.method != "teacher" or bool(self.teacher_file.strip()) != bool(self.teacher_model.strip()),
             "teacher_file, teacher_model: the teacher method needs exactly one source of step scores (a file of "
             f"cached scores or a PRM to ask), got teacher_file={self.teacher_file!r}, "
             f"teacher_model={self.teacher_model!r}"),
            (self.method == "teacher" or not self.teacher_model,
             f"teacher_model: only label.method teacher asks a PRM, got method {self.method!r}"),
            (not self.teacher_model.rstrip("/").endswith("/pooling") or bool(self.teacher_checkpoint),
             f"teacher_checkpoint: the /pooling teacher_model {self.teacher_model!r} takes token ids: name the "
             f"PRM's folder whose tokenizer encodes the candidates"),
            (not self.teacher_checkpoint or self.teacher_model.rstrip("/").endswith("/pooling"),
             "teacher_checkpoint: only a /pooling teacher_model reads it"),
            (self.method != "teacher" or bool(self.teacher_models),
             "teacher_models: the teacher method needs at least one step_scores entry to use"),
            (len(set(self.teacher_models)) == len(self.teacher_models),
             f"teacher_models: {self.teacher_models} lists a model twice"),
            (self.policy != "transformers" or bool(self.model_dir),
             "model_dir: the transformers policy needs a local model directory"),
            (self.policy != "openai"
             or all(url.strip().startswith(("http://", "https://")) for url in self.endpoint.split(",")),
             f"endpoint: the openai policy needs the server's base URL (http://host:port/v1; several: "
             f"comma-separated), got {self.endpoint!r}"),
        ])


@dataclass
class ValidateParams:
    min_steps: int = field(default=1, metadata={"help": "Fewest steps a labeled solution may have."})
    max_steps: int = field(default=20, metadata={"help": "Most steps a labeled solution may have."})
    max_step_chars: int = field(default=400, metadata={"help": "Longest step text allowed."})
    min_negative_fraction: float = field(
        default=0.02, metadata={"rule": FRACTION, "help": "Fewer '-' labels than this fraction means a labeling bug."}
    )
    max_negative_fraction: float = field(
        default=0.9, metadata={"rule": FRACTION, "help": "More '-' labels than this fraction means a labeling bug."}
    )
    warn_min_negative_fraction: float = field(
        default=0.05, metadata={"rule": FRACTION,
                                "help": "Fewer '-' labels than this is legal but skewed: a warning, not a failure."}
    )
    warn_max_negative_fraction: float = field(
        default=0.6, metadata={"rule": FRACTION,
                               "help": "More '-' labels than this is legal but skewed: a warning, not a failure."}
    )
    max_label_conflict_fraction: float = field(
        default=0.1,
        metadata={"rule": FRACTION,
                  "help": "Most solutions whose identical twin (same problem, same steps) has other hard labels; "
                          "Monte-Carlo noise gives ~3% with 4 completions per step, a labeling bug far more."},
    )
    max_duplicate_fraction: float = field(
        default=0.6,
        metadata={"rule": FRACTION,
                  "help": "Above this share of solutions repeating an earlier one of their problem: a warning "
                          "(the policy legitimately resamples slip-free trajectories)."},
    )

    def check(self) -> list[str]:
        ordered = [("min_steps", "max_steps"), ("min_negative_fraction", "max_negative_fraction"),
                   ("warn_min_negative_fraction", "warn_max_negative_fraction")]
        return unmet([(getattr(self, upper) >= getattr(self, lower),
                       f"{upper}: {getattr(self, upper)} is below {lower} {getattr(self, lower)}")
                      for lower, upper in ordered])


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
    step_template: str = field(default=DEFAULT_STEP_TEMPLATE, metadata={"help": "How each step is rendered."})
    vocab_size: int = field(default=512, metadata={"help": "Corpus tokenizer size (builtin model only)."})
    hidden_size: int = field(default=64, metadata={"rule": POSITIVE, "help": "Builtin model width."})
    num_layers: int = field(default=2, metadata={"rule": POSITIVE, "help": "Builtin model depth."})
    num_heads: int = field(default=2, metadata={"rule": POSITIVE, "help": (
        "Builtin model attention heads. Heads of hidden_size / num_heads = 32 are the smallest vLLM's CPU attention "
        "serves (it refuses 16), so the default model can be served by vLLM too.")})
    intermediate_size: int = field(default=192, metadata={"help": "Builtin model MLP width."})
    max_length: int = field(default=512, metadata={"rule": POSITIVE,
                                                   "help": "Context length; longer solutions lose whole steps."})
    truncate_problem_left: bool = field(
        default=False,
        metadata={"help": "A problem too long for its first step keeps its tail (else the example is dropped)."},
    )
    device: str = field(
        default="auto",
        metadata={"help": "Where every model loads (train, evaluate, the transformers policy, serving): auto "
                          "(CUDA when present), cpu, cuda or cuda:N."},
    )
    dtype: str = field(
        default="auto",
        metadata={"choices": DTYPES,
                  "help": "Inference precision, and the mixed-precision type of training: auto (inference: bfloat16 "
                          "on CUDA, float32 on the CPU; training: bfloat16 autocast on CUDA and on a CPU with AMX / "
                          "AVX-512 BF16, else float32), float32, bfloat16 or float16."},
    )

    def check(self) -> list[str]:
        return unmet([
            (self.hidden_size % max(self.num_heads, 1) == 0,
             f"hidden_size: {self.hidden_size} is not divisible by num_heads {self.num_heads}"),
            (self.positive_token != self.negative_token, "negative_token: must differ from positive_token"),
            (self.step_tag.strip() != "" and self.step_tag not in (self.positive_token, self.negative_token),
             f"step_tag: {self.step_tag!r} must be a non-blank token other than the label tokens "
             f"{self.positive_token!r} and {self.negative_token!r}"),
            ("{step}" in self.step_template, f"step_template: {self.step_template!r} has no {{step}} placeholder"),
            (re.fullmatch(DEVICE_PATTERN, self.device) is not None,
             f"device: {self.device!r} is not auto, cpu, cuda or cuda:N"),
        ])


@dataclass
class TrainParams:
    epochs: float = field(default=4.0, metadata={"rule": POSITIVE, "help": "Passes over the training set."})
    batch_size: int = field(default=16, metadata={"rule": POSITIVE, "help": "Solutions per optimizer step."})
    learning_rate: float = field(default=3e-3, metadata={"rule": POSITIVE, "help": "AdamW peak learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.05, metadata={"rule": FRACTION,
                                                        "help": "Fraction of steps with linear warmup."})
    label_type: str = field(
        default="hard", metadata={"choices": ("hard", "soft"),
                                  "help": "'hard' (Math-Shepherd +/-) or 'soft' (MC value) targets."}
    )
    negative_class_weight: float = field(
        default=1.0, metadata={"rule": POSITIVE,
                               "help": "Loss weight of the '-' class relative to '+' (>1 favours catching errors)."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"rule": POSITIVE,
                             "help": "Batches per optimizer step (effective batch = batch_size x this x processes)."}
    )
    lora_r: int = field(default=0, metadata={"rule": NON_NEGATIVE,
                                             "help": "LoRA rank (peft, merged before saving); 0 = full fine-tuning."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha (used only when lora_r > 0)."})
    save_steps: int = field(
        default=500,
        metadata={"rule": NON_NEGATIVE,
                  "help": "Checkpoint every N optimizer steps to <models_dir>/prm-checkpoints (last 2 kept); "
                          "an interrupted train stage resumes from there. 0 = no checkpoints."},
    )
    frozen_layers: int = field(
        default=0,
        metadata={"rule": NON_NEGATIVE,
                  "help": "Frozen prefix: the first N decoder layers (and the input embedding) stay as the base's; "
                          "their hidden states are computed once per training solution and reused in every epoch, "
                          "and only the layers above, the final norm and the +/- rows of the output head (untied "
                          "from the input embedding) train. N = the model's depth: a linear head on the frozen base. "
                          "0 = off (full fine-tuning, or LoRA)."},
    )
    keep_layers: int = field(
        default=0,
        metadata={"rule": NON_NEGATIVE,
                  "help": "Cut the base to its first N decoder layers before training (a shallower, cheaper PRM to "
                          "train and to serve); 0 = all layers."},
    )

    def check(self) -> list[str]:
        return unmet([
            (not (self.frozen_layers and self.lora_r), "frozen_layers: a frozen prefix trains the top layers "
                                                       "themselves; set lora_r to 0"),
            (not (self.frozen_layers and self.keep_layers) or self.frozen_layers <= self.keep_layers,
             f"frozen_layers: {self.frozen_layers} is more than keep_layers {self.keep_layers}"),
        ])


@dataclass
class TrainOrmParams:
    epochs: float = field(
        default=2.0,
        metadata={"rule": POSITIVE,
                  "help": "Passes over the training set for the outcome reward model (stage train_orm); it "
                          "replaces train.epochs, every other train.* and model.* value is shared with the PRM."},
    )
