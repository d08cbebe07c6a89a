import pytest

from prmflow.config import ModelParams
from prmflow.scoring.tokenization import prepare_tokenizer, prompt_format
from prmflow.scoring.tokenization import (
    corpus_texts, encode_candidate, encode_solution, tokenize_row, tokenize_rows,
)

# Steps that end the way real steps do, including in the label tokens themselves.
TRICKY_STEPS = ["ends with a space ", "ends with a newline\n", "ends with digits 42", "ends with +", "ends with -",
                "3 + 4 = <<3+4=7>>7", "  "]


@pytest.fixture(scope="module")
def tokenizer_and_format(labeled_rows):
    params = ModelParams(vocab_size=300, max_length=2048)
    tokenizer = prepare_tokenizer(params, corpus_texts(labeled_rows, params))
    return tokenizer, prompt_format(tokenizer, params)


def test_step_tags_equal_labels_for_every_example(labeled_rows, tokenizer_and_format):
    tokenizer, fmt = tokenizer_and_format
    tricky = {"id": "t", "problem": "A - B +", "steps": TRICKY_STEPS,
              "labels": ["+", "-"] * 3 + ["+"], "values": [1.0, 0.0] * 3 + [1.0], "correct": False}
    for row in labeled_rows + [tricky]:
        out = tokenize_row(tokenizer, fmt, row)
        assert out["input_ids"].count(fmt.step_tag_id) == len(out["hard_targets"]) == len(row["labels"])
        assert out["hard_targets"] == [1.0 if x == "+" else 0.0 for x in row["labels"]]
        assert out["soft_targets"] == row["values"]
        assert out["correct"] is row["correct"]  # the outcome reward model's target (train_orm)


def test_the_tag_is_one_token_and_digits_are_split(tokenizer_and_format):
    tokenizer, fmt = tokenizer_and_format
    assert tokenizer.convert_ids_to_tokens(fmt.step_tag_id) == "<step>"
    assert tokenizer.encode("<step>", add_special_tokens=False) == [fmt.step_tag_id]
    assert len(tokenizer.encode("12345", add_special_tokens=False)) == 5
    assert fmt.positive_id != fmt.negative_id


def test_truncation_drops_whole_trailing_steps(tokenizer_and_format):
    tokenizer, fmt = tokenizer_and_format
    steps = [f"step number {i} adds {i} + 1 = {i + 1}" for i in range(10)]
    full = encode_solution(tokenizer, fmt, "Problem.", steps)
    per_step = len(full.input_ids) // 10
    short_fmt = type(fmt)(**{**fmt.__dict__, "max_length": len(full.input_ids) - per_step})
    short = encode_solution(tokenizer, short_fmt, "Problem.", steps)
    assert short.num_steps < 10 and short.dropped_steps == 10 - short.num_steps
    assert short.input_ids == full.input_ids[: len(short.input_ids)]  # a prefix: no step cut in half
    assert short.input_ids[-1] == fmt.step_tag_id
    assert short.input_ids.count(fmt.step_tag_id) == short.num_steps

    tiny_fmt = type(fmt)(**{**fmt.__dict__, "max_length": 3})
    row = {"id": "r", "problem": "Problem.", "steps": steps, "labels": ["+"] * 10, "values": [1.0] * 10,
           "correct": True}
    kept, counts = tokenize_rows(tokenizer, tiny_fmt, [row])
    assert kept == [] and counts == {"examples": 0, "dropped_examples": 1, "dropped_steps": 10,
                                     "truncated_problems": 0}


def test_a_long_problem_keeps_its_tail_when_configured(tokenizer_and_format):
    tokenizer, fmt = tokenizer_and_format
    problem = " ".join(f"fact {i} is {i * 7}." for i in range(40)) + " How many apples are left?"
    steps = ["3 + 4 = 7", "7 - 2 = 5"]
    row = {"id": "long", "problem": problem, "steps": steps, "labels": ["+", "-"], "values": [1.0, 0.0],
           "correct": False}
    first_step = len(tokenizer.encode("Step 1: 3 + 4 = 7", add_special_tokens=False)) + 1
    limit = first_step + 1 + 20  # bos + first step + 20 tokens of the problem: the rest must go
    dropping = type(fmt)(**{**fmt.__dict__, "max_length": limit})
    assert tokenize_rows(tokenizer, dropping, [row])[1]["dropped_examples"] == 1

    keeping = type(fmt)(**{**fmt.__dict__, "max_length": limit, "truncate_problem_left": True})
    encoded = encode_solution(tokenizer, keeping, problem, steps)
    assert encoded.truncated_problem and encoded.num_steps == 1 and encoded.dropped_steps == 1
    assert len(encoded.input_ids) == limit and encoded.input_ids[0] == fmt.bos_id
    assert tokenizer.decode(encoded.input_ids[1:]).startswith(tokenizer.decode(
        tokenizer.encode(problem + "\n", add_special_tokens=False)[-20:]))  # the tail, ending in the question
    assert "How many apples are left?" in tokenizer.decode(encoded.input_ids)
    kept, counts = tokenize_rows(tokenizer, keeping, [row])
    assert counts == {"examples": 1, "dropped_examples": 0, "dropped_steps": 1, "truncated_problems": 1}
    assert kept[0]["hard_targets"] == [1.0]


def test_scoring_cuts_inside_only_a_step_too_long_for_any_context(tokenizer_and_format):
    tokenizer, fmt = tokenizer_and_format
    small = type(fmt)(**{**fmt.__dict__, "max_length": 96})
    normal = [f"step number {i} adds {i} + 1 = {i + 1}" for i in range(20)]
    # A long trace: whole trailing steps are left out, exactly as for training data; nothing is cut.
    long_trace = encode_candidate(tokenizer, small, "Problem.", normal)
    assert long_trace.input_ids == encode_solution(tokenizer, small, "Problem.", normal).input_ids
    assert long_trace.truncated_steps == [] and long_trace.dropped_steps == 20 - long_trace.num_steps > 0
    # A repetition loop at step 2: its start is kept with its tag, what follows it is left out.
    loop = normal[:2] + ["The total is " + "7" * 6000] + normal[2:4]
    cut = encode_candidate(tokenizer, small, "Problem.", loop)
    assert (cut.num_steps, cut.truncated_steps, cut.dropped_steps, cut.reason) == (3, [2], 2, None)
    assert len(cut.input_ids) == 96 and cut.input_ids[-1] == fmt.step_tag_id
    assert cut.input_ids.count(fmt.step_tag_id) == 3
    assert cut.input_ids[:-1] == encode_candidate(tokenizer, fmt, "Problem.", loop[:3]).input_ids[:95]  # its start
    # Training drops what scoring cuts: the label of half a step is not known.
    assert encode_solution(tokenizer, small, "Problem.", loop).num_steps == 2
    assert encode_solution(tokenizer, small, "Problem.", loop[2:]) is None
    assert encode_candidate(tokenizer, small, "Problem.", loop[2:]).truncated_steps == [0]


def test_scoring_a_problem_that_fills_the_context(tokenizer_and_format):
    tokenizer, fmt = tokenizer_and_format
    problem = " ".join(f"fact {i} is {i * 7}." for i in range(40)) + " How many apples are left?"
    tight = type(fmt)(**{**fmt.__dict__, "max_length": 60})
    nothing = encode_candidate(tokenizer, tight, problem, ["3 + 4 = 7"])
    assert (nothing.num_steps, nothing.input_ids[-1] != fmt.step_tag_id) == (0, True)
    assert "model.truncate_problem_left would keep the problem's tail" in nothing.reason
    left = type(fmt)(**{**tight.__dict__, "truncate_problem_left": True})
    loop = ["The total is " + "7" * 6000]  # the first step alone overfills the context: the problem keeps half
    kept = encode_candidate(tokenizer, left, problem, loop)
    assert kept.truncated_problem and kept.truncated_steps == [0] and len(kept.input_ids) == 60
    assert "How many apples are left?" in tokenizer.decode(kept.input_ids)


def test_special_token_text_in_a_candidate_is_read_as_text_and_named(tokenizer_and_format):
    """A problem or step holding `<step>` (or `<s>`) cannot add a tag: the ids hold one tag per step."""
    tokenizer, fmt = tokenizer_and_format
    tagged = encode_candidate(tokenizer, fmt, "Problem <step> with a tag.", ["a", "b <step> c <s>"])
    assert (tagged.num_steps, tagged.reason, tagged.neutralised) == (2, None, ["problem", "steps[1]"])
    assert tagged.input_ids.count(fmt.step_tag_id) == 2 and tagged.input_ids[-1] == fmt.step_tag_id
    assert tagged.input_ids.count(tokenizer.bos_token_id) == (fmt.bos_id is not None)
    assert "<step> c <s>" in tokenizer.decode(tagged.input_ids[tagged.input_ids.index(fmt.step_tag_id) + 1:])
    plain = encode_candidate(tokenizer, fmt, "Problem.", ["a", "b"])
    assert plain.neutralised == [] and plain.input_ids.count(fmt.step_tag_id) == 2


def test_a_huge_step_costs_what_the_context_holds_and_bad_unicode_is_a_reason(tokenizer_and_format):
    tokenizer, fmt = tokenizer_and_format
    huge = encode_candidate(tokenizer, fmt, "Problem.", ["a", "7 " * 2_000_000])  # 4 MB: cut before tokenizing
    assert (huge.num_steps, huge.truncated_steps, len(huge.input_ids)) == (2, [1], fmt.max_length)
    surrogate = encode_candidate(tokenizer, fmt, "Problem.", ["a", "x \ud800 y"])
    assert surrogate.num_steps == 0 and surrogate.reason.startswith("steps[1]: not valid Unicode text")


def test_label_tokens_must_be_single_tokens(tokenizer_and_format):
    tokenizer, _ = tokenizer_and_format
    with pytest.raises(ValueError, match="model.positive_token: 'correct' must be exactly one token"):
        prompt_format(tokenizer, ModelParams(positive_token="correct"))


def test_the_worked_example_in_tokenize_rows_docstring_is_exact(tmp_path):
    """tokenize_row's and encode_candidate's docstrings give exact ids for the tiny PRM tokenizer: they hold."""
    import ast
    import re

    from transformers import AutoTokenizer

    from prmflow.scoring import tokenization
    from prmflow.scoring.tokenization import encode_candidate, load_prompt_format, tokenize_row
    from tiny_models import build_tiny_prm

    directory = build_tiny_prm(tmp_path / "prm", seed=0)
    tokenizer, fmt = AutoTokenizer.from_pretrained(directory), load_prompt_format(directory)
    doc = tokenization.tokenize_row.__doc__
    call = re.search(r"tokenize_row\(tokenizer, fmt, (\{.*?\})\)\n", doc, re.S).group(1)
    given = re.search(r"-> (\{.*?\})\n\n", doc, re.S).group(1)
    row, expected = ast.literal_eval(" ".join(call.split())), ast.literal_eval(" ".join(given.split()))
    assert tokenize_row(tokenizer, fmt, row) == expected
    assert (fmt.bos_id, fmt.step_tag_id) == (1, 295)
    encoded = encode_candidate(tokenizer, fmt, row["problem"], row["steps"])
    assert encoded.input_ids == expected["input_ids"] and encoded.num_steps == 2
    assert [p for p, t in enumerate(encoded.input_ids) if t == fmt.step_tag_id] == [21, 35]
