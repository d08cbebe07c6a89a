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
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from prmflow.param_rules import (  # noqa: F401 (re-exported: prmflow.config is where params come from)
    AGGREGATIONS, DEFAULT_AGGREGATION, EXTERNAL_FORMATS, GENERATOR_MAX_STEPS, NEUTRAL_LABELS, PRM_FORMATS, RULES, SOURCE_FORMATS,
    SOURCE_SPLITS, credential_problems, redact_url,
)
from prmflow.sections import (  # noqa: F401 (re-exported)
    DEFAULT_STEP_TEMPLATE, BaseParams, IngestParams, LabelParams, ModelParams, TrainOrmParams, TrainParams, ValidateParams,
)
from prmflow.sections_evaluation import (  # noqa: F401 (re-exported)
    CombineParams, EvaluateParams, RegisterParams, SearchParams,
)


class ConfigError(ValueError):
    """Raised with every problem found in a params file, one per line."""


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
    search: SearchParams = field(default_factory=SearchParams)
    register: RegisterParams = field(default_factory=RegisterParams)


def _type_ok(value: object, annotation: object) -> bool:
    if annotation is float:  # YAML writes 3 for 3.0; an int is a fine float; .inf and .nan are not numbers to train on
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
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


def _type_name(annotation: object) -> str:
    """`list[dict]`, `float`, `int | None`: how a params type reads in a message."""
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def _type_problems(where: str, value: object, annotation: object) -> list[str]:
    """Why `value` is not of `annotation`: a list names each entry that is not of the item type."""
    if typing.get_origin(annotation) is list and isinstance(value, list):
        (item,) = typing.get_args(annotation)
        return [problem for i, v in enumerate(value) if not _type_ok(v, item)
                for problem in _type_problems(f"{where}[{i}]", v, item)]
    if annotation is float and isinstance(value, float):  # the one way a float fails: .inf, -.inf or .nan
        return [f"{where}: must be a finite number, got {value!r}"]
    return [f"{where}: expected {_type_name(annotation)}, got {type(value).__name__} {value!r}"]


def _build_section(name: str, cls: type, raw: object, problems: list[str]) -> tuple[object, bool]:
    """(the section, whether every given value had its type and choice); a bad value keeps its default."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{name}: expected a mapping, got {type(raw).__name__}")
        return cls(), False
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    known = set(fields)
    for key in sorted(set(raw) - known):
        problems.append(f"{name}.{key}: unknown key (known: {', '.join(sorted(known))})")
    values, typed = {}, True
    for key in sorted(known & set(raw)):
        value, annotation = raw[key], hints[key]
        if not _type_ok(value, annotation):
            problems += _type_problems(f"{name}.{key}", value, annotation)
            typed = False
            continue
        if annotation is float:
            value = float(value)
        allowed = fields[key].metadata.get("choices")
        if allowed is not None and value not in allowed:
            problems.append(f"{name}.{key}: {value!r} is not one of {sorted(allowed)}")
            typed = False
            continue
        values[key] = value
    return cls(**values), typed


def _section_problems(name: str, section: object, typed: bool) -> list[str]:
    """Each field's rule, then, when every value had its type, the section's own `check` (relations between its
    fields, which a default standing in for a mistyped value would make misleading)."""
    problems = [f"{name}.{f.name}: must be {f.metadata['rule']}, got {getattr(section, f.name)!r}"
                for f in dataclasses.fields(section)
                if "rule" in f.metadata and not RULES[f.metadata["rule"]](getattr(section, f.name))]
    check = getattr(section, "check", None) if typed else None
    return problems + [f"{name}.{problem}" for problem in (check() if check else [])]


def params_from_dict(raw: object, source: str = "params") -> Params:
    """Build and validate `Params` from a parsed YAML mapping; raise one ConfigError listing all problems."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    sections = {f.name: f for f in dataclasses.fields(Params)}
    for name in sorted(set(raw) - set(sections)):
        problems.append(f"{name}: unknown section (known: {', '.join(sections)})")
    problems += [p for name in sections for p in credential_problems(name, raw.get(name))]
    built = {
        name: _build_section(name, typing.get_type_hints(Params)[name], raw.get(name), problems)
        for name in sections
    }
    params = Params(**{name: section for name, (section, _) in built.items()})
    # Every problem at once: a mistyped value keeps its (legal) default, so the rules of the others still run.
    problems += [p for name, (section, typed) in built.items() for p in _section_problems(name, section, typed)]
    if problems:
        message = f"{source}: {len(problems)} problem(s):\n  " + "\n  ".join(problems)
        raise ConfigError(redact_url(message))  # a value echoed by any message keeps its credential to itself
    return params


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (plain YAML keeps the last one silently, so a second
    `train:` section would replace the first without a word)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} given twice (lines {seen[key]} and {key_node.start_mark.line + 1}): "
                    f"YAML would keep only the last", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping)


def load_params(path: str | Path = "params.yaml") -> Params:
    """The params file at `path`, checked: raises ConfigError listing every problem (unknown or duplicated
    sections and keys, types, choices, rules)."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the project root or pass --params)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return params_from_dict(raw, source=str(path))


def main(params: Params) -> None:
    """`prmflow check`, the first dvc.yaml stage: the CLI has loaded `params` (every problem raised as one
    ConfigError, exit 1) before any stage runs. DVC deletes a stage's outputs before its command starts, so a
    stage checking its own section would find a typo only after its previous outputs are gone; every stage
    follows this one, which `dvc repro` / `dvc exp run` run first and stop at. The report's text depends
    only on which sections exist, so a passing check leaves the stages after it up to date."""
    reports = Path(params.base.reports_dir)
    reports.mkdir(parents=True, exist_ok=True)
    sections = [f.name for f in dataclasses.fields(params)]
    (reports / "params_check.json").write_text(json.dumps({"sections": sections, "problems": 0}, indent=2) + "\n")
    print(f"check: params valid ({len(sections)} sections)")
