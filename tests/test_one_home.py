"""One home per constant and per text layout: each is defined in one place in src/ and imported elsewhere,
so two copies can never drift apart (issue 26)."""

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
