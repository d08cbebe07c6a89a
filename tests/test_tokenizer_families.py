"""Tags == labels for every tokenizer family, through the real loading path of a local base model.

Each family's tokenizer is trained here on the labeled corpus (tests/tiny_tokenizers.py), saved
with a tiny model config into a directory, and loaded by `prepare_tokenizer` from
`model.base_model: <dir>`; the corpus-trained default (`builtin`) goes through the same checks.
"""

import pytest

from prmflow.config import ModelParams
from prmflow.scoring.tokenization import prepare_tokenizer, prompt_format
from prmflow.scoring.tokenization import corpus_texts, tokenize_row
from tiny_tokenizers import build_family

FAMILIES = ["builtin", "llama", "mistral", "qwen2", "gpt2"]

# Steps ending the ways that make a step merge with its tag or its neighbour in careless trainers.
TRICKY = {"id": "tricky", "problem": "Ann has 3 + 4 - 1 apples.  ",
          "steps": ["ends with a space ", "ends with a newline\n", "ends with digits 42", "ends with +",
                    "ends with -", "3 + 4 = <<3+4=7>>7", "  ", "7 - 1 = 6-", "+"],
          "labels": ["+", "-", "+", "-", "+", "-", "+", "-", "+"],
          "values": [1.0, 0.0, 0.75, 0.0, 1.0, 0.25, 1.0, 0.0, 0.5], "correct": False}


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, labeled_rows, tmp_path_factory):
    corpus = corpus_texts(labeled_rows, ModelParams())
    if request.param == "builtin":
        params = ModelParams(vocab_size=300)
    else:
        directory = build_family(request.param, corpus, tmp_path_factory.mktemp(request.param))
        params = ModelParams(base_model=str(directory))
    tokenizer = prepare_tokenizer(params, corpus)
    return request.param, params, tokenizer, prompt_format(tokenizer, params)


def test_step_tags_equal_labels_for_every_example(family, labeled_rows):
    name, params, tokenizer, fmt = family
    assert tokenizer.encode(params.step_tag, add_special_tokens=False) == [fmt.step_tag_id], name
    for row in labeled_rows + [TRICKY]:
        out = tokenize_row(tokenizer, fmt, row)
        assert out["input_ids"].count(fmt.step_tag_id) == len(out["hard_targets"]) == len(row["labels"]), row["id"]
        assert out["hard_targets"] == [1.0 if x == "+" else 0.0 for x in row["labels"]]
        assert out["soft_targets"] == row["values"]


def test_each_step_decodes_back_between_its_tags(family):
    """No step text leaks into the tag or across it: the ids between tags decode to that step."""
    name, _, tokenizer, fmt = family
    ids = tokenize_row(tokenizer, fmt, TRICKY)["input_ids"]
    tags = [i for i, token in enumerate(ids) if token == fmt.step_tag_id]
    assert len(tags) == len(TRICKY["steps"])
    for index in range(1, len(tags)):  # the first segment also holds the problem
        segment = tokenizer.decode(ids[tags[index - 1] + 1: tags[index]])
        assert segment.strip() == fmt.render_step(index, TRICKY["steps"][index]).strip(), (name, index, segment)


def test_label_tokens_are_single_distinct_tokens(family):
    name, params, tokenizer, fmt = family
    assert fmt.positive_id != fmt.negative_id != fmt.step_tag_id
    assert tokenizer.convert_ids_to_tokens(fmt.positive_id).endswith("+"), name
    assert tokenizer.convert_ids_to_tokens(fmt.negative_id).endswith("-"), name
    with pytest.raises(ValueError, match=r"model.negative_token: 'wrong answer' must be exactly one token"):
        prompt_format(tokenizer, ModelParams(base_model=params.base_model, negative_token="wrong answer"))
