"""Source formats, answer normalization and the generator: each read from a small hand-made fixture."""

import json
import random
from fractions import Fraction

import pytest

from prmflow.data.answers import answers_equivalent, extract_boxed, normalize_answer
from prmflow.data.calc import format_number, parse_step, to_number
from prmflow.config import ConfigError, IngestParams, LabelParams, params_from_dict
from prmflow.data.generator import generate_problems
from prmflow.labeling.simulated import SimulatedPolicy
from prmflow.data.sources import content_id, read_source

from conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "ingest"


def read(fmt: str, filename: str, **spec):
    records, rejects = read_source({"format": fmt, "path": str(FIXTURES / filename), **spec}, seed=0)
    return records, rejects


def test_gsm8k_steps_on_lines_answer_after_hashes():
    (first, second), rejects = read("gsm8k", "gsm8k.jsonl", split="train")
    assert rejects == [] and (first.line, first.split) == (1, "train")
    assert first.row == {
        "problem": "Omar baked 36 muffins on Monday, and then he baked a third as many muffins on Tuesday. "
                   "How many muffins did Omar bake on Monday and Tuesday?",
        "answer": "48",
        "reference_steps": ["Omar baked 36/3 = <<36/3=12>>12 muffins on Tuesday.",
                            "Omar baked 36+12 = <<36+12=48>>48 muffins on Monday and Tuesday."],
    }
    assert second.row["answer"] == "600"  # `#### $600`: the currency sign is presentation
    assert parse_step(second.row["reference_steps"][0], []).compute([]) == 600  # `.5` and `1,200` read
    assert parse_step("<<+30+.5=30.5>>30.5", []).compute([]) == Fraction(61, 2)  # GSM8K's leading `+`


def test_math_boxed_answer_and_metadata_from_a_folder_of_json_files():
    records, rejects = read("math", "math")
    assert rejects == []
    assert [(r.file.rsplit("/", 1)[-1], r.line) for r in records] == [("algebra_1.json", 1), ("geometry_2.json", 1)]
    algebra, geometry = (r.row for r in records)
    assert algebra["answer"] == "\\frac{3}{4}" and algebra["metadata"] == {"level": "Level 1", "type": "Algebra"}
    assert algebra["reference_steps"][-1] == "So the sum is $\\boxed{\\frac{3}{4}}$."
    assert geometry["answer"] == "20"  # `\boxed{20\text{ cm}}`: the unit is stripped


def test_prm800k_ratings_chosen_and_human_completions():
    (solved, found_error), rejects = read("prm800k", "prm800k.jsonl")
    assert rejects == []
    assert solved.row["steps"][1] == "Let me write that down." and solved.row["labels"] == ["+", "+", "+"]
    assert (solved.row["answer"], solved.row["predicted_answer"]) == ("14", "14")  # `# Answer` heading
    # A human completion replaces the rejected ones (+); a step with no chosen completion ends the solution.
    assert found_error.row["steps"] == ["Divide both sides by 2.", "So $x = 4$."]
    assert found_error.row["labels"] == ["+", "-"] and found_error.row["values"] == [1.0, 0.0]
    (negative, _), _ = read("prm800k", "prm800k.jsonl", neutral="negative")
    assert negative.row["labels"] == ["+", "-", "+"]  # the rating-0 step


def test_math_shepherd_tags_become_labels():
    (right, wrong), rejects = read("math_shepherd", "math_shepherd.jsonl")
    assert rejects == []
    assert right.row == {
        "problem": "Janet has 3 apples and buys 2 more. How many apples does she have?", "answer": "5",
        "reference_steps": [],
        "steps": ["Janet starts with 3 apples.", "She buys 2 more, so 3 + 2 = 5.", "The answer is: 5"],
        "labels": ["+", "+", "+"], "values": [1.0, 1.0, 1.0], "predicted_answer": "5",
    }
    assert wrong.row["labels"] == ["-", "-"] and wrong.row["problem"] == right.row["problem"]


def test_trl_stepwise_and_input_value_label():
    ((trl,), trl_rejects), ((ivl,), ivl_rejects) = read("trl_stepwise", "trl_stepwise.jsonl"), \
        read("input_value_label", "input_value_label.jsonl")
    assert trl_rejects == ivl_rejects == []
    assert trl.row["labels"] == ["+", "+", "-"] and trl.row["predicted_answer"] == "9.11"
    assert ivl.row["steps"] == ["Each box has 6 eggs.", "4 * 6 = 24, so the answer is 24."]
    assert ivl.row["labels"] == ["+", "+"] and ivl.row["predicted_answer"] == "24"


def test_every_bad_line_is_a_reject_with_file_line_and_reason():
    records, rejects = read("input_value_label", "bad_lines.jsonl", name="mine")
    assert [r.line for r in records] == [1]
    assert [(r["line"], r["kind"], r["reason"]) for r in rejects] == [
        (2, "malformed", "not valid JSON: Expecting ',' delimiter (char 69)"),
        (3, "malformed", "value: missing required field"),
        (4, "malformed", "value: empty steps"),
        (5, "malformed", "label: 1 labels for 2 steps"),
        (6, "malformed", "not UTF-8: byte 26"),
    ]
    assert {r["file"] for r in rejects} == {str(FIXTURES / "bad_lines.jsonl")}
    assert {r["source"] for r in rejects} == {"mine"}
    assert '"What is 6 + 6? \ufffd\ufffd"' in rejects[-1]["text"]  # the line is kept, bad bytes replaced


def test_limit_caps_the_records_read():
    records, rejects = read("input_value_label", "bad_lines.jsonl", limit=3)
    assert (len(records), [r["line"] for r in rejects]) == (1, [2, 3])


def test_ids_hash_normalized_text():
    assert content_id("Ava has 3 apples.") == content_id("  ava has 3 APPLES ") != content_id("Ava has 35 apples.")
    assert content_id("Ava has 3.5 apples.") != content_id("Ava has 35 apples.")
    assert content_id("What is 1 + 1?", "1 + 1 = 2.") == "00c33b86e803"


@pytest.mark.parametrize("raw, normalized", [
    ("$1,200.", "1200"), ("18 dollars", "18"), ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("5\\text{ cm}", "5"), ("90^\\circ", "90"), ("70{,}000", "70000"), ("\\$18.50", "18.50"),
    ("(1,2)", "(1,2)"),  # a MATH tuple, not a thousands separator
])
def test_normalize_answer(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_answers_compare_by_value_with_math_verify():
    assert answers_equivalent("0.5", "\\frac{1}{2}")
    assert answers_equivalent("$1,200", "1200")
    assert not answers_equivalent("25\\pi", "25")
    assert extract_boxed("so $\\boxed{x^{2}}$ and more") == "x^{2}"


def test_sources_are_validated_with_one_error_listing_all_problems():
    bad = [{"format": "csv", "path": "x"}, {"format": "gsm8k"}, {"format": "generator", "path": "y"},
           {"format": "gsm8k", "path": "z", "split": "dev", "limit": 0, "color": "red"},
           {"format": "math", "path": "m", "neutral": "positive"}]
    with pytest.raises(ConfigError) as err:
        params_from_dict({"ingest": {"sources": bad, "max_steps": 9}})
    message = str(err.value)
    for expected in ("ingest.sources[0].format: 'csv' is not one of", "ingest.sources[1]: give exactly one of path",
                     "ingest.sources[2].path: the generator takes no path", "ingest.sources[3].split: 'dev'",
                     "ingest.sources[3].limit: must be a positive integer", "ingest.sources[3].color: unknown key",
                     "ingest.sources[4].neutral: only for prm800k", "ingest.sources: 'gsm8k' is listed twice",
                     "ingest.max_steps: at most 8"):
        assert expected in message
    with pytest.raises(ConfigError, match="ingest.sources: expected list"):
        params_from_dict({"ingest": {"sources": {"format": "generator"}}})


def test_default_generator_stays_small_integer_problems():
    problems = generate_problems(200, seed=5)
    assert {len(p["reference_steps"]) for p in problems} == {2, 3, 4, 5}
    assert all(to_number(p["answer"]).denominator == 1 for p in problems)


def test_rich_generator_has_fractions_decimals_and_eight_steps_that_round_trip():
    settings = IngestParams(min_steps=2, max_steps=8, decimal_rate=0.5, fraction_rate=0.3)
    problems = generate_problems(200, seed=5, settings=settings)
    assert problems == generate_problems(200, seed=5, settings=settings)
    assert {len(p["reference_steps"]) for p in problems} == set(range(2, 9))
    assert any("." in p["answer"] for p in problems)
    assert any(" of the " in p["problem"] and "/" in p["problem"] for p in problems)  # "keeps 3/4 of the ..."
    policy = SimulatedPolicy(LabelParams(slip_rate=0.0, misconception_rate=0.0), seed=0)
    for index, problem in enumerate(problems):
        answer = to_number(problem["answer"])
        assert answer > 0 and format_number(answer) == problem["answer"]
        out = policy.sample_trajectory({**problem, "id": str(index)}, random.Random(0))
        assert out.steps == problem["reference_steps"] and out.final_answer == problem["answer"]
    assert all(Fraction(p["answer"]) * 100 % 1 == 0 for p in problems)


def test_a_record_of_an_unforeseen_shape_is_a_reject_not_a_crash(tmp_path):
    odd = {"question": {"problem": "p?"}, "label": {"steps": [{"completions": ["just text"], "chosen_completion": 0}]}}
    path = tmp_path / "prm.jsonl"
    path.write_text(json.dumps(odd) + "\n[1, 2]\n")
    records, rejects = read_source({"format": "prm800k", "path": str(path)}, seed=0)
    assert records == []
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (1, "unexpected structure: AttributeError: 'str' object has no attribute 'get'"),
        (2, "expected a JSON object, got list")]
