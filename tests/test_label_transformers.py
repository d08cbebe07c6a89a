"""The transformers policy with a tiny random GPT-2 built here: the mechanics, not the quality.

Its samples are garbage; what is checked is batching (one `generate` per batch), left padding
(a batched greedy decode equals one prompt at a time), the stop at the final-answer line,
answer extraction, and the labeling counts that flow from them.
"""

import random

import pytest

from prmflow.labeling.completion_text import FINAL_ANSWER_LINE, STEP_LINE, finish, finish_step, prompt_text
from prmflow.config import LabelParams
from prmflow.devices import Placement
from prmflow.labeling.hf_policy import TransformersPolicy, _StopAt
from prmflow.labeling.engine import sample_and_label
from prmflow.labeling.policy import Continuation
from prmflow.labeling.step_labels import AnswerChecker, binary_search_labels, mc_labels
from tiny_models import POLICY_PROBLEM as PROBLEM
from tiny_models import build_tiny_policy_lm


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_policy_lm(tmp_path_factory.mktemp("tiny-gpt2"))


def local_policy(model_dir, **knobs) -> TransformersPolicy:
    """The tiny model as the transformers policy, with these `label` knobs, on the default placement."""
    return TransformersPolicy(LabelParams(model_dir=str(model_dir), **knobs), Placement())


def test_finish_keeps_the_steps_up_to_the_final_answer_line():
    assert finish("She has 3 + 4 = 7.\n\n#### 7\nrambling on\n") == (["She has 3 + 4 = 7.", "#### 7"], "7")
    assert finish("So \\boxed{\\frac{1}{2}} it is.\nmore") == (["So \\boxed{\\frac{1}{2}} it is."], "\\frac{1}{2}")
    assert finish("no answer\nat all") == (["no answer", "at all"], "")


def test_stop_criterion_fires_per_row_once_the_answer_line_is_complete(model_dir):
    policy = local_policy(model_dir, max_new_tokens=4)
    prompts = policy.tokenizer(["Q", "Q", "Q"], return_tensors="pt", padding=True)["input_ids"]
    width = prompts.shape[1]
    rows = policy.tokenizer(["x\n#### 5\n", "x\n#### 5", "The answer is 6\n"], return_tensors="pt", padding=True)
    import torch

    ids = torch.cat([prompts, rows["input_ids"]], dim=1)
    assert _StopAt(policy.tokenizer, width, FINAL_ANSWER_LINE)(ids, None).tolist() == [True, False, True]
    # next_steps stops each row at the end of its first written line (a leading blank line is not a step).
    rows = policy.tokenizer(["x\n", "\n", "The answer is 6"], return_tensors="pt", padding=True)
    ids = torch.cat([prompts, rows["input_ids"]], dim=1)
    assert _StopAt(policy.tokenizer, width, STEP_LINE)(ids, None).tolist() == [True, False, False]


def test_finish_step_takes_one_line_and_ends_the_solution_at_its_answer():
    assert finish_step("She has 3 + 4 = 7.\n#### 7\n") == (["She has 3 + 4 = 7."], "", False)
    assert finish_step("\n#### 7\nmore") == (["#### 7"], "7", True)
    assert finish_step("The answer is \\boxed{8}") == (["The answer is \\boxed{8}"], "8", True)
    assert finish_step("  \n") == ([], "", True)  # the model stopped: the solution ends with no answer


def test_next_steps_proposes_one_step_per_prefix_in_one_generate_call(model_dir):
    prefixes = [[], ["She has 3 apples."], ["one", "two"]]
    policy = local_policy(model_dir, max_new_tokens=12, temperature=0.0, batch_size=4)
    steps = policy.next_steps(PROBLEM, prefixes, random.Random(0))
    assert (len(steps), policy.generate_calls) == (3, 1)
    full = local_policy(model_dir, max_new_tokens=12, temperature=0.0, batch_size=4).complete(
        PROBLEM, prefixes, random.Random(0))
    for step, completion in zip(steps, full):
        assert len(step.steps) <= 1 and step.first_slip is None
        assert step.steps == completion.steps[:1]  # greedy: the first step of the full completion
        assert step.finished == (not step.steps or bool(FINAL_ANSWER_LINE.search(step.steps[0] + "\n")))


def test_batches_are_left_padded_and_sampled_in_one_generate_call_each(model_dir):
    prefixes = [[], ["She has 3 apples."], ["She has 3 apples.", "Then 3 + 5 = 8 apples, and she eats some of them."],
                ["x"], ["one", "two", "three"]]
    batched = local_policy(model_dir, max_new_tokens=12, temperature=0.0, batch_size=2)
    assert batched.tokenizer.padding_side == "left"
    together = batched.complete(PROBLEM, prefixes, random.Random(0))
    assert (len(together), batched.generate_calls) == (5, 3)  # 2 + 2 + 1
    single = local_policy(model_dir, max_new_tokens=12, temperature=0.0, batch_size=1)
    alone = single.complete(PROBLEM, prefixes, random.Random(0))
    assert single.generate_calls == 5
    assert [c.steps for c in together] == [c.steps for c in alone]  # padding changed no row's decode
    assert all(c.first_slip is None for c in together)  # a real model's first error is unknown
    assert 0 < batched.generated_tokens <= 5 * 12


def test_sampling_follows_the_per_problem_stream(model_dir):
    policy = local_policy(model_dir, max_new_tokens=10, temperature=1.0, batch_size=4)
    first = policy.complete(PROBLEM, [[]] * 4, random.Random(5))
    again = policy.complete(PROBLEM, [[]] * 4, random.Random(5))
    assert [c.steps for c in first] == [c.steps for c in again]
    assert prompt_text(PROBLEM, ["a", "b"]).endswith("Answer:\na\nb\n")


@pytest.mark.parametrize("method", ["mc", "binary_search"])
def test_labeling_with_the_transformers_policy_counts_calls_and_unparseable_answers(model_dir, method):
    params = LabelParams(policy="transformers", method=method, model_dir=str(model_dir), trajectories_per_problem=2,
                         completions_per_step=2, max_new_tokens=24, temperature=1.0, batch_size=8)
    policy = TransformersPolicy(params, Placement())
    result = sample_and_label(policy, PROBLEM, params, seed=0)
    assert len(result.rows) == 2
    for row in result.rows:
        assert len(row["steps"]) == len(row["labels"]) == len(row["values"])
        assert row["true_first_error"] is None and row["policy"] == "transformers"
    # Every sampled sequence is one call, and one generate call holds all completions of a probe or of a
    # trajectory's prefixes (mc) or of one probe (binary_search): never more calls than sequences.
    assert policy.generate_calls <= result.policy_calls
    assert 0 <= result.unparseable_answers <= result.answer_checks
    assert result.generated_tokens == policy.generated_tokens > 0  # the policy was fresh: all of its tokens
    if method == "mc":  # each completion, the trajectory's own answer, and the row's `correct` are checked
        assert result.answer_checks == result.policy_calls + 2


def test_methods_batch_their_prefixes_into_generate_calls(model_dir):
    trajectory = Continuation(steps=["She has 12 apples.", "She buys 5 more.", "12 + 5 = 17.", "#### 16"],
                              final_answer="16", first_slip=None)
    policy = local_policy(model_dir, max_new_tokens=8, temperature=1.0, batch_size=4)
    mc = mc_labels(policy, PROBLEM, trajectory, completions=3, rng=random.Random(0), check=AnswerChecker())
    assert (mc.policy_calls, policy.generate_calls) == (9, 3)  # 3 prefixes x 3 completions, 4 per generate
    assert len(mc.labels) == len(mc.values) == 4 and mc.labels[-1] == "-"  # 16 is not 17
    policy.generate_calls = 0
    # The random model never reaches 17: each probe draws its first round (2) and then the last one.
    search = binary_search_labels(policy, PROBLEM, trajectory, completions=3, rng=random.Random(0),
                                  check=AnswerChecker(), first_round=2)
    assert (search.policy_calls, policy.generate_calls) == (3 * len(search.probed), 2 * len(search.probed))
    assert len(search.probed) == 2 and search.labels[-1] == "-"
