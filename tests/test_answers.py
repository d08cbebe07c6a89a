"""Answer equivalence on a table of real answer styles (GSM8K, MATH): no wrong answer judged right.

The table is data, tests/fixtures/answers/equivalence.jsonl: `expected` true (same value), false
(different value) or null (unknown: a side does not parse whole; labels count it as wrong).
"""

import json
from pathlib import Path

import pytest

from prmflow.data.answers import answers_equivalent, extract_final_answer, normalize_answer, parse_answer

TABLE = [json.loads(line) for line in (Path(__file__).parent / "fixtures/answers/equivalence.jsonl").open()]


def test_the_table_holds_both_kinds_of_error():
    expected = [row["expected"] for row in TABLE]
    assert len(TABLE) >= 40 and expected.count(True) >= 20 and expected.count(False) >= 15 and None in expected


@pytest.mark.parametrize("row", TABLE, ids=lambda row: f"{row['predicted']} vs {row['reference']}")
def test_equivalence_table(row):
    assert answers_equivalent(row["predicted"], row["reference"]) is row["expected"], row["style"]


def test_a_fragment_never_matches():
    from math_verify import parse

    assert parse("$3 + \\frac{1}{$")[0] == 3  # math-verify alone falls back to the `3` it can read
    assert parse_answer("3 + \\frac{1}{") is None
    assert answers_equivalent("3 + \\frac{1}{", "3") is None
    assert parse_answer("18 apples and 3 pears") is None  # prose


@pytest.mark.parametrize("raw, normalized", [
    ("25%", "25\\%"), ("25\\%", "25\\%"), ("25 percent", "25\\%"), ("12,34", "12,34"), ("0,1", "0,1"),
    ("115,000", "115000"), ("1 1/2 hours", "1 1/2"), ("5 apples", "5"), ("2m", "2m"), ("5 m", "5"), ("45°", "45"),
])
def test_normalize_keeps_value_and_percent(raw, normalized):
    assert normalize_answer(raw) == normalized


@pytest.mark.parametrize("text, answer", [
    ("Ava pays 3 * 6 = 18.\nA: 18", "18"),
    ("Step 1: 9 + 9 = 18\nAnswer: 18", "18"),
    ("So she has 18 left.\n**Final Answer:** $18", "$18"),
    ("The answer is 18. So Ava keeps 18 apples.", "18"),
    ("Q: what is 2 + 2?\nA: 4\nQ: and 3 + 3?\nA: 6", "6"),
    ("All 3 cats: 6 legs", None),
])
def test_final_answer_lines(text, answer):
    assert extract_final_answer(text) == answer
