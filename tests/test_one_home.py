"""One home per constant and per text layout: each is defined in one place in src/ and imported elsewhere,
so two copies can never drift apart."""

import re

import pytest

from conftest import REPO

SOURCES = {path: path.read_text() for path in sorted((REPO / "src" / "prmflow").rglob("*.py"))}
ELSEWHERE = {path: path.read_text() for folder in ("flows", "bench", "scripts") for path in sorted((REPO / folder).rglob("*.py"))}

# name -> the value it holds: an assignment of the name, and the value written out, each once in src/.
CONSTANTS = {
    "MATH_SHEPHERD_TAG": '"ки"',
    "DEFAULT_STEP_TEMPLATE": '"Step {i}: {step}"',
    "VERIFICATION_PROMPT": '"Is this step correct? Yes or No: "',
    "HEADLINE_METRICS": None,
    "AGGREGATIONS": '("min", "prod", "last", "mean")',
    "DEFAULT_AGGREGATION": None,
    "BEST_OF_N_AGGREGATIONS": '("min", "prod", "last")',
}
# Text layouts written out once, as a function others call.
LAYOUTS = {"a step on its own line (prmflow.data.step_text.step_line)": '("\\n" if index else "")'}


def where(pattern: str, texts: dict) -> list[str]:
    return [f"{path.relative_to(REPO)}:{text[: m.start()].count(chr(10)) + 1}"
            for path, text in texts.items() for m in re.finditer(pattern, text, re.MULTILINE)]


@pytest.mark.parametrize("name", CONSTANTS)
def test_each_constant_is_defined_once(name):
    assigned = where(rf"^\s*{name}\s*(:[^=]+)?=", SOURCES | ELSEWHERE)
    assert len(assigned) == 1, f"{name} is assigned in {assigned}: keep one, import it elsewhere"
    if CONSTANTS[name]:
        written = where(re.escape(CONSTANTS[name]), SOURCES)
        assert len(written) == 1, f"{name}'s value {CONSTANTS[name]} is written out in {written}: use {name}"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_is_written_once(layout):
    written = where(re.escape(LAYOUTS[layout]), SOURCES | ELSEWHERE)
    assert len(written) == 1, f"{layout} is written out in {written}: call the one function"


def test_no_second_process_reward_model_class():
    defined = where(r"^class ProcessRewardModel\b", SOURCES)
    assert len(defined) == 1, f"two classes named ProcessRewardModel: {defined}"


def knob_defaults() -> dict[str, set]:
    """Each params.yaml knob's name -> the literal defaults it has in the sections (a name may be in several)."""
    import dataclasses

    from prmflow.config import Params

    found: dict[str, set] = {}
    params = Params()
    for section in dataclasses.fields(params):
        for knob in dataclasses.fields(getattr(params, section.name)):
            if type(knob.default) in (str, int, float):  # not bool: True == 1
                found.setdefault(knob.name, set()).add(knob.default)
    return found


def test_no_function_writes_a_knob_default_out():
    """A parameter named like a knob takes its default from the section (`batch_size: int =
    EvaluateParams.batch_size`), never the same value written out again: that copy would not follow params.yaml's
    documented default when it changes."""
    import ast

    knobs = knob_defaults()
    copies = []
    for path, text in SOURCES.items():
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            args = node.args
            positional = list(zip(args.args[len(args.args) - len(args.defaults):], args.defaults))
            for arg, default in positional + [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d]:
                if isinstance(default, ast.Constant) and type(default.value) in (str, int, float) and \
                        default.value in knobs.get(arg.arg, ()):
                    copies.append(f"{path.relative_to(REPO)}:{default.lineno}: {node.name}({arg.arg}="
                                  f"{default.value!r})")
    assert not copies, "knob defaults written out again (import them from the section):\n" + "\n".join(copies)
