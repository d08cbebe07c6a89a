"""What a params value may be: the names a params file may use, the rules of numeric fields, and the
checks of list entries (ingest sources, evaluate's external files and scorers).

Shared by sections.py (which declares the knobs) and the layers that read those names (sources.py,
evaluate.py, public_prms.py), so that the one module that validates params depends on no stage.
"""

from __future__ import annotations

import re

SOURCE_FORMATS = ("generator", "gsm8k", "math", "prm800k", "math_shepherd", "trl_stepwise", "input_value_label",
                  "candidates")
SOURCE_SPLITS = ("train", "test", "auto")
SOURCE_KEYS = ("format", "path", "hub", "split", "limit", "name", "neutral")
NEUTRAL_LABELS = {"positive": "+", "negative": "-"}  # prm800k rating 0 becomes this label
GENERATOR_MAX_STEPS = 8  # the bundled generator's templates chain at most this many steps
EXTERNAL_FORMATS = {  # evaluate.external formats and the fields each record needs
    "outcome": ("problem", "steps", "predicted_answer", "correct"),  # final-answer correctness only
    "processbench": ("problem", "steps", "label"),                    # label: first error index or -1
}
EXTERNAL_KEYS = ("name", "path", "format", "problems")  # problems: the first n problems only
PRM_FORMATS = ("prmflow", "trl", "math_shepherd", "chat", "zero_shot")  # scoring/public_prms.py reads each
SCORER_KEYS = ("name", "path", "format")  # evaluate.scorers entries; format may be left out (detected)
TEACHER_COMBINES = ("mean", "min", "max")  # label.teacher_combine: several teachers' step scores to one
BUILTIN_SCORERS = ("prm", "orm", "zero_shot", "champion", "combined", "combined_validated", "majority",  # evaluate's
                   "pass_at_1", "oracle")
AGGREGATIONS = ("min", "prod", "last", "mean")  # step scores to a solution score: prmflow.scoring.aggregation
DEFAULT_AGGREGATION = "min"  # where none is named: evaluate, search, the served model, the CLI, RewardConfig
GATE_METRICS = ("first_error_f1", "step_auroc", "negative_f1", "step_accuracy",  # higher-is-better metrics.json keys
                *(f"best_of_n_prm_{how}" for how in AGGREGATIONS))
# The metrics.json keys a registered version carries as tags and the flow's summary shows, in that order.
HEADLINE_METRICS = ("step_auroc", "negative_f1", "first_error_f1", "step_accuracy", "best_of_n_prm_min")

DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"  # model.device; `auto`: CUDA when present (prmflow.devices)
DTYPES = ("auto", "float32", "bfloat16", "float16")  # model.dtype; `auto`: prmflow.devices

# The rule a numeric field's value must pass, named in its metadata ("rule"); "choices" lists legal values.
POSITIVE, NON_NEGATIVE, FRACTION = "> 0", ">= 0", "in [0, 1]"
RULES = {POSITIVE: lambda v: v > 0, NON_NEGATIVE: lambda v: v >= 0, FRACTION: lambda v: 0 <= v <= 1}


def unmet(requirements: list[tuple[bool, str]]) -> list[str]:
    """The messages of the requirements that do not hold: a section's `check` lists (holds, message) pairs."""
    return [message for holds, message in requirements if not holds]


def spec_problems(field_name: str, specs: list[dict], keys: tuple, required: tuple, formats) -> list[str]:
    """Problems of a list of {name, path, format, ...} entries: unknown keys, `required` keys that are not
    non-empty strings, a `format` not in `formats`, names listed twice."""
    problems = []
    for i, spec in enumerate(specs):
        where = f"{field_name}[{i}]"
        problems += [f"{where}.{key}: unknown key (known: {', '.join(keys)})" for key in sorted(set(spec) - set(keys))]
        problems += [f"{where}.{key}: expected a non-empty string, got {spec.get(key)!r}"
                     for key in required if not (isinstance(spec.get(key), str) and spec[key].strip())]
        if "format" in spec and spec["format"] not in formats:
            problems.append(f"{where}.format: {spec['format']!r} is not one of {list(formats)}")
    names = [spec.get("name") for spec in specs]
    return problems + [f"{field_name}: name {name!r} is listed twice"
                       for name in sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})]


def source_problems(where: str, spec: dict) -> list[str]:
    """One `ingest.sources` entry: a known format, one place to read it from, legal options."""
    problems = [f"{where}.{key}: unknown key (known: {', '.join(sorted(SOURCE_KEYS))})"
                for key in sorted(set(spec) - set(SOURCE_KEYS))]
    fmt = spec.get("format")
    if fmt not in SOURCE_FORMATS:
        problems.append(f"{where}.format: {fmt!r} is not one of {list(SOURCE_FORMATS)}")
    if fmt == "generator":
        problems += [f"{where}.{key}: the generator takes no {key} (num_train/num_test set its splits)"
                     for key in ("path", "hub", "split", "limit") if key in spec]
    elif fmt in SOURCE_FORMATS and len([key for key in ("path", "hub") if key in spec]) != 1:
        problems.append(f"{where}: give exactly one of path (a local file or folder) or hub (a dataset name)")
    problems += [f"{where}.{key}: expected a non-empty string, got {spec[key]!r}" for key in ("path", "hub", "name")
                 if key in spec and not (isinstance(spec[key], str) and spec[key].strip())]
    if "split" in spec and spec["split"] not in SOURCE_SPLITS:
        problems.append(f"{where}.split: {spec['split']!r} is not one of {list(SOURCE_SPLITS)}")
    limit = spec.get("limit", 1)
    if not (isinstance(limit, int) and not isinstance(limit, bool) and limit > 0):
        problems.append(f"{where}.limit: must be a positive integer, got {limit!r}")
    if "neutral" in spec and (fmt != "prm800k" or spec["neutral"] not in NEUTRAL_LABELS):
        problems.append(f"{where}.neutral: only for prm800k, one of {list(NEUTRAL_LABELS)}; got {spec['neutral']!r}")
    return problems


# `scheme://user:password@host`: the userinfo part of a URL (RFC 3986), which must never reach a params file.
URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#@\s'\"]*)@")


def redact_url(text: str) -> str:
    """`text` with the userinfo of a URL replaced by `***`: what a message may show of it."""
    return URL_USERINFO.sub(r"\g<scheme>***@", text)


def credential_problems(where: str, value: object) -> list[str]:
    """Every string under `value` (a params section, a list entry) that holds a URL credential.

    Refused rather than redacted: params.yaml is tracked by git, DVC copies a stage's params into dvc.lock and
    every stage logs its section to MLflow, so a credential in a params value is published wherever they go.
    """
    if isinstance(value, dict):
        return [p for key, v in value.items() for p in credential_problems(f"{where}.{key}", v)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in credential_problems(f"{where}[{i}]", v)]
    if isinstance(value, str) and URL_USERINFO.search(value):
        return [f"{where}: {redact_url(value)!r} holds a credential (user:password@); params are tracked by git "
                f"and DVC and logged to MLflow: put an API key in an environment variable and name it in "
                f"label.api_key_env (sent as a Bearer token)"]
    return []
