import dataclasses
import re

import pytest
import yaml

from prmflow.config import ConfigError, Params, load_params, params_from_dict

from conftest import REPO


def test_params_yaml_matches_the_dataclasses_exactly():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    sections = {f.name: f.type for f in dataclasses.fields(Params)}
    assert set(raw) == set(sections)
    params = load_params(REPO / "params.yaml")
    for name in sections:
        fields = {f.name for f in dataclasses.fields(getattr(params, name))}
        assert set(raw[name]) == fields, f"params.yaml section {name!r} differs from its dataclass"


def test_params_yaml_values_are_the_dataclass_defaults():
    """One definition per knob: params.yaml writes out the sections' defaults, value for value."""
    written, defaults = dataclasses.asdict(load_params(REPO / "params.yaml")), dataclasses.asdict(Params())
    differ = [f"{section}.{key}: params.yaml {value!r}, default {defaults[section][key]!r}"
              for section, values in written.items() for key, value in values.items()
              if value != defaults[section][key]]
    assert not differ, "\n".join(differ)


# What is built from a section, and the sections whose knobs it takes.
BUILT_FROM_SECTIONS = [
    ("prmflow.serving.scorer", "ServingConfig", ("register", "evaluate", "combine", "model")),
    ("prmflow.labeling.simulated", "SimulatedPolicy", ("label", "base")),
    ("prmflow.labeling.openai_policy", "OpenAIPolicy", ("label",)),
    ("prmflow.labeling.hf_policy", "TransformersPolicy", ("label", "model")),
    ("prmflow.labeling.policies", "make_policy", ("label", "base")),
    ("prmflow.scoring.rewards", "CombinedRewardModel", ("combine",)),
    ("prmflow.devices", "Placement", ("model",)),
]


@pytest.mark.parametrize("module, name, sections", BUILT_FROM_SECTIONS)
def test_nothing_built_from_a_section_keeps_a_default_of_its_own(module, name, sections):
    """A parameter named as a knob of its sections has no default, or the section's own default object (the
    public reward API's keyword defaults); a copy (the simulated policy's misconception_rate 0.0 against 0.25)
    fails."""
    import importlib
    import inspect

    built = getattr(importlib.import_module(module), name)
    knobs = {f.name: getattr(type(getattr(Params(), section)), f.name, dataclasses.MISSING)
             for section in sections for f in dataclasses.fields(getattr(Params(), section))}
    own = [f"{p.name}={p.default!r}" for p in inspect.signature(built).parameters.values()
           if p.name in knobs and p.default is not inspect.Parameter.empty and p.default is not knobs[p.name]]
    assert not own, f"{name} keeps defaults of its own for knobs of {sections}: {own}"


def test_every_field_has_help_text():
    for section in dataclasses.fields(Params):
        for f in dataclasses.fields(section.default_factory()):
            assert f.metadata.get("help"), f"{section.name}.{f.name} has no help text"


def test_all_problems_are_reported_at_once():
    raw = {
        "train": {"learning_rate": "fast", "epochz": 3},
        "ingest": {"num_train": -1},
        "label": {"policy": "gpt"},
        "serving": {},
    }
    with pytest.raises(ConfigError) as err:
        params_from_dict(raw, source="p.yaml")
    message = str(err.value)
    assert "p.yaml: 5 problem(s)" in message
    assert "train.learning_rate: expected float, got str 'fast'" in message
    assert "ingest.num_train: must be > 0, got -1" in message  # a range problem beside the type errors
    assert "train.epochz: unknown key" in message
    assert "label.policy: 'gpt' is not one of ['openai', 'simulated', 'transformers']" in message
    assert "serving: unknown section" in message


def test_range_problems_are_listed_together():
    with pytest.raises(ConfigError) as err:
        params_from_dict({"ingest": {"num_train": 0, "min_steps": 4, "max_steps": 2},
                          "label": {"slip_rate": 1.5}, "model": {"hidden_size": 30, "num_heads": 4}})
    message = str(err.value)
    for expected in ("ingest.num_train: must be > 0", "ingest.max_steps: 2 is below min_steps 4",
                     "label.slip_rate: must be in [0, 1]", "model.hidden_size: 30 is not divisible"):
        assert expected in message


def test_ints_are_accepted_as_floats_but_bools_are_not_ints():
    params = params_from_dict({"train": {"epochs": 2}})
    assert params.train.epochs == 2.0 and isinstance(params.train.epochs, float)
    with pytest.raises(ConfigError, match="ingest.num_train: expected int, got bool"):
        params_from_dict({"ingest": {"num_train": True}})


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: not found"):
        load_params(tmp_path / "nope.yaml")


def test_combine_weights_and_model_kind_are_checked():
    with pytest.raises(ConfigError) as err:
        params_from_dict({"combine": {"process_weight": -0.5, "outcome_weight": 0.0}, "train_orm": {"epochs": 0}})
    message = str(err.value)
    for expected in ("combine.process_weight: must be >= 0, got -0.5", "combine.outcome_weight: process_weight + "
                     "outcome_weight must be > 0", "train_orm.epochs: must be > 0"):
        assert expected in message
    with pytest.raises(ConfigError, match=r"register.model_kind: 'orm' is not one of \['combined', 'prm'\]"):
        params_from_dict({"register": {"model_kind": "orm"}})


def test_type_errors_and_unknown_keys_do_not_hide_range_problems():
    """One type error or unknown key used to hide every rule problem of the file."""
    with pytest.raises(ConfigError) as err:
        params_from_dict({"train": {"learning_rate": -1, "batch_size": "16", "epochz": 1},
                          "ingest": {"num_train": -5, "max_operand": "x"}, "label": {"slip_rate": 2.0},
                          "bogus": {}}, source="p.yaml")
    message = str(err.value)
    expected = ("train.learning_rate: must be > 0, got -1.0", "train.batch_size: expected int, got str '16'",
                "train.epochz: unknown key", "ingest.num_train: must be > 0, got -5",
                "ingest.max_operand: expected int, got str 'x'", "label.slip_rate: must be in [0, 1], got 2.0",
                "bogus: unknown section")
    assert "p.yaml: 7 problem(s)" in message
    for line in expected:
        assert line in message


@pytest.mark.parametrize("key, value", [("epochs", float("inf")), ("learning_rate", float("inf")),
                                        ("warmup_ratio", float("nan")), ("weight_decay", float("-inf"))])
def test_infinity_and_nan_are_refused(key, value):
    with pytest.raises(ConfigError, match=rf"train.{key}: must be a finite number, got {value!r}"):
        params_from_dict({"train": {key: value}})


def test_yaml_infinity_is_a_config_error_not_a_traceback(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: .inf\n  learning_rate: .nan\ningest:\n  num_train: .inf\n")
    with pytest.raises(ConfigError) as err:
        load_params(path)
    message = str(err.value)
    assert "3 problem(s)" in message
    assert "train.epochs: must be a finite number, got inf" in message
    assert "train.learning_rate: must be a finite number, got nan" in message
    assert "ingest.num_train: expected int, got float inf" in message


@pytest.mark.parametrize("tag", ["", "  ", "+", "-"])
def test_step_tag_must_be_a_token_other_than_the_labels(tag):
    with pytest.raises(ConfigError, match=re.escape(f"model.step_tag: {tag!r} must be a non-blank token other "
                                                    f"than the label tokens '+' and '-'")):
        params_from_dict({"model": {"step_tag": tag}})


def test_a_bad_source_entry_is_named_by_its_index():
    with pytest.raises(ConfigError) as err:
        params_from_dict({"ingest": {"sources": [{"format": "generator"}, "gsm8k", ["x"]]},
                          "evaluate": {"external": [{"name": "a", "path": "p", "format": "outcome"}, 3]}})
    message = str(err.value)
    assert "ingest.sources[1]: expected dict, got str 'gsm8k'" in message
    assert "ingest.sources[2]: expected dict, got list ['x']" in message
    assert "evaluate.external[1]: expected dict, got int 3" in message
    assert "got list [" not in message.split("ingest.sources[2]")[0]


def test_a_misspelled_or_repeated_section_in_the_file_is_refused_by_name(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: 2\nserach:\n  sizes: [1]\n")
    with pytest.raises(ConfigError, match="serach: unknown section"):
        load_params(path)
    # Plain YAML keeps the last of two `train:` sections: epochs 2 would vanish without a word.
    path.write_text("train:\n  epochs: 2\nevaluate:\n  threshold: 0.5\ntrain:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"'train' given twice \(lines 1 and 5\)"):
        load_params(path)
    path.write_text("train:\n  epochs: 2\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"'epochs' given twice \(lines 2 and 3\)"):
        load_params(path)
