"""The `params.yaml` sections of what comes after training: combine, evaluate, search, register (see sections.py
for how a section is written; config.py reads both)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prmflow.param_rules import (
    AGGREGATIONS, ANSWER_READINGS, BUILTIN_SCORERS, DEFAULT_AGGREGATION, EXTERNAL_FORMATS, EXTERNAL_KEYS, FRACTION, GATE_METRICS,
    NON_NEGATIVE, POSITIVE, PRM_FORMATS, SCORER_KEYS, spec_problems, unmet,
)


@dataclass
class CombineParams:
    process_weight: float = field(
        default=0.7,
        metadata={"rule": NON_NEGATIVE,
                  "help": "Combined score = this x PRM aggregate (P(+)) + outcome_weight x ORM P(correct)."},
    )
    outcome_weight: float = field(
        default=0.3, metadata={"rule": NON_NEGATIVE,
                               "help": "Weight of the trained ORM's score in the combined score (evaluate, register)."}
    )

    def check(self) -> list[str]:
        return unmet([(self.process_weight + self.outcome_weight > 0,
                       "outcome_weight: process_weight + outcome_weight must be > 0")])


@dataclass
class EvaluateParams:
    threshold: float = field(default=0.5, metadata={"rule": FRACTION, "help": "Step score below this predicts '-'."})
    aggregation: str = field(default=DEFAULT_AGGREGATION, metadata={"choices": AGGREGATIONS,
                                                      "help": "Step-score aggregation for best-of-N."})
    batch_size: int = field(default=32, metadata={"rule": POSITIVE, "help": "Solutions scored per forward pass."})
    answer_reading: str = field(default="flexible", metadata={"choices": ANSWER_READINGS, "help": (
        "How a candidate's final answer is read where best-of-N ranks by (has_final_answer, score): the external "
        "outcome sets here, and the registered model's `has_final_answer` (register stores it), hence `prmflow "
        "score` and the RL rewards' no_answer_reward. flexible: markers (####, \\boxed, 'The answer is', "
        "'Answer:') or else a concluding sentence ('Therefore, Janet makes $18 every day.'); strict: markers only. "
        "Real generators mostly end with a sentence (bench/answer_reading.py).")})
    validation_fraction: float = field(
        default=0.5,
        metadata={"rule": FRACTION,
                  "help": "Share of held-out problems (by a hash of the problem id) on which the first-error "
                          "threshold is chosen; metrics are reported on the rest. 0: use `threshold`."},
    )
    calibration_bins: int = field(
        default=10, metadata={"rule": POSITIVE, "help": "Equal-width bins of P(+) for the expected calibration error."}
    )
    zero_shot_baseline: bool = field(
        default=True, metadata={"help": "Also score the untrained base model with the verification prompt."}
    )
    champion_baseline: bool = field(
        default=False, metadata={"help": (
            "Also score the registry's current champion, when there is one. Off by default: the champion is "
            "this machine's registry, not a DVC input, so the tracked reports would differ from one checkout "
            "to the next; register's gate compares with the champion in any case (reports/registry.json).")}
    )
    max_unscored_step_fraction: float = field(default=0.05, metadata={"rule": FRACTION, "help": (
        "Warn (stage output and summary.md) when more than this share of a set's steps is not scored: cut off "
        "by the model's context (`model.max_length` tokens for a trained PRM). The counts are always reported: "
        "`scored_steps`, `cut_steps`, `dropped_steps`, `solutions_with_dropped_steps`, `unscored_solutions`.")})
    bootstrap_samples: int = field(default=1000, metadata={"rule": NON_NEGATIVE, "help": (
        "Resamples of the reported problems (with replacement, seeded by base.seed) behind the 95% interval of "
        "each headline metric (`<metric>_ci_low/_ci_high`); 0: no intervals.")})
    external: list[dict] = field(
        default_factory=list,
        metadata={"help": "Extra held-out files, each reported as its own section: {name, path, format: "
                          "outcome (problem, steps, correct; best-of-N against majority vote and a random pick, "
                          "with intervals) | processbench (problem, steps, label = first error or -1), and "
                          "optionally problems: n (the first n problems of the file only)}."},
    )
    scorers: list[dict] = field(default_factory=list, metadata={
        "help": "Other PRM checkpoints scored beside the trained one, in the same comparison: {name, path: a model "
                "directory, format: prmflow|trl|math_shepherd|chat|zero_shot (detected when left out; chat and "
                "zero_shot must be named)}. Metrics: scorer_<name>_*, compare_<name>_*."})

    def check(self) -> list[str]:
        problems = unmet([(self.validation_fraction < 1, f"validation_fraction: must be below 1 (some problems "
                                                          f"must be left to report), got {self.validation_fraction}")])
        problems += spec_problems("external", self.external, EXTERNAL_KEYS, ("name", "path", "format"),
                                  EXTERNAL_FORMATS)
        problems += [f"external[{i}].problems: expected a positive integer, got {spec['problems']!r}"
                     for i, spec in enumerate(self.external) if "problems" in spec
                     and not (isinstance(spec["problems"], int) and not isinstance(spec["problems"], bool)
                              and spec["problems"] > 0)]
        problems += spec_problems("scorers", self.scorers, SCORER_KEYS, ("name", "path"), PRM_FORMATS)
        names = [spec.get("name") for spec in self.scorers]
        return problems + [f"scorers[{i}].name: {n!r} must be letters, digits and underscores, and not a built-in "
                           f"scorer's ({', '.join(BUILTIN_SCORERS)})" for i, n in enumerate(names)
                           if isinstance(n, str) and (n in BUILTIN_SCORERS or not n.isidentifier())]


@dataclass
class SearchParams:
    sizes: list[int] = field(default_factory=lambda: [1, 4, 16], metadata={
        "help": "N: samples (best-of-N, votes) or beams (beam search, DVTS) per problem, each reported; 64 opt-in."})
    beam_width: int = field(default=4, metadata={"rule": POSITIVE, "help": "M: expansions per kept beam (beam search "
                                                 "keeps N // M beams; DVTS runs N // M subtrees)."})
    max_steps: int = field(default=12, metadata={"rule": POSITIVE, "help": "Step-level search: steps per solution."})
    aggregation: str = field(default=DEFAULT_AGGREGATION, metadata={
        "choices": AGGREGATIONS, "help": "Step scores to a candidate's score in beam search, DVTS and the weighted "
                                         "vote (best-of-N reports min, prod, last)."})
    num_problems: int = field(default=0, metadata={"rule": NON_NEGATIVE, "help": "Held-out problems searched (the "
                                                    "first of data/problems/test.jsonl); 0: all."})
    scorer: str = field(default="", metadata={"help": "The PRM: empty for models/prm in process, or the URL of a "
                                              "served one (`mlflow models serve`; POSTs to <url>/invocations)."})
    batch_size: int = field(default=64, metadata={"rule": POSITIVE, "help": "Solutions per PRM forward or request."})
    request_timeout_s: float = field(default=120.0, metadata={"rule": POSITIVE, "help": "A served PRM (scorer): "
                                     "seconds a request may take before it fails."})
    bootstrap_samples: int = field(default=1000, metadata={"rule": NON_NEGATIVE, "help": "Bootstrap resamples of "
                                   "the problems for each accuracy's 95% interval and its paired difference from "
                                   "majority vote (base.seed); 0: none."})

    def check(self) -> list[str]:
        return unmet([(bool(self.sizes) and min(self.sizes) > 0, f"sizes: must be positive, got {self.sizes}")])


@dataclass
class RegisterParams:
    model_name: str = field(default="prm", metadata={"help": "Registered model name."})
    alias: str = field(
        default="champion", metadata={"help": "Alias that serving follows; moved only when the gate passes."}
    )
    challenger_alias: str = field(default="challenger", metadata={"help": "Alias set on every new version."})
    gate_metric: str = field(
        default="first_error_f1",
        metadata={"choices": GATE_METRICS,
                  "help": "Metric (higher is better) whose challenger - champion difference on the same held-out "
                          "problems decides promotion."},
    )
    promotion_margin: float = field(
        default=0.01, metadata={"rule": FRACTION,
                                "help": "The lower bound of the 95% interval of challenger - champion (gate "
                                        "metric) must exceed this."}
    )
    gate_bootstrap_samples: int = field(default=1000, metadata={"rule": NON_NEGATIVE, "help": (
        "Paired resamples of the held-out problems (seeded by base.seed) behind the interval of challenger - "
        "champion; promoted only when its lower bound exceeds promotion_margin. 0: the point difference decides.")})
    max_solutions_per_request: int = field(
        default=64, metadata={"rule": POSITIVE, "help": "Served model: more solutions in one request is a 400."}
    )
    max_steps_per_request: int = field(
        default=16384,
        metadata={"rule": POSITIVE, "help": "Served model: more steps in one request (all solutions together, `text` "
                                            "split) is a 400. One solution has no step limit: steps beyond the "
                                            "model context are left out and counted."},
    )
    max_request_bytes: int = field(
        default=4_000_000, metadata={"rule": POSITIVE, "help": "Served model: a larger request body is a 413."}
    )
    batch_tokens: int = field(
        default=16384, metadata={"rule": POSITIVE, "help": (
            "Served model: the most padded tokens (rows x longest row) in one forward of the scoring loop, which "
            "batches the candidates of all requests in flight together (serving/batcher.py).")}
    )
    scoring_threads: int = field(
        default=0, metadata={"rule": NON_NEGATIVE, "help": (
            "Served model: threads that run the scoring loop's forwards, each on its own batch. 0: one per CPU core "
            "the server may use on a CPU (a forward at one torch thread each beats one forward at several for a "
            "small model), 1 on a GPU.")}
    )
    model_kind: str = field(
        default="prm",
        metadata={"choices": ("prm", "combined"),
                  "help": "What is registered and served: prm (models/prm alone) or combined (models/prm and "
                          "models/orm, score = combine weights; the response adds outcome_score)."},
    )
    scorer: str = field(default="", metadata={"help": "An evaluate.scorers name: register that checkpoint instead "
                                                      "of models/prm, gated on its scorer_<name>_* metrics."})

    def check(self) -> list[str]:
        return unmet([(self.alias != self.challenger_alias, f"challenger_alias: must differ from alias {self.alias!r}"),
                      (not (self.scorer and self.model_kind == "combined"),
                       f"scorer: {self.scorer!r} is registered alone; model_kind must be prm")])
