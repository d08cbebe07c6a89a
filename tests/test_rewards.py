"""The reward-model family on tiny untrained models: log-odds by hand, weights, aggregation, save/load."""

import math
import subprocess
import sys

import pytest
import torch
from tiny_models import build_tiny_prm, sharpen_label_rows

from prmflow.devices import Placement

from prmflow.scoring.rewards import (
    OUTCOME_PROMPT, CombinedRewardModel, EnsembleRewardModel, OutcomeRewardModel, ProcessRewardModel,
    UnscorableError, ZeroShotProcessRewardModel, load_reward_model, reward_function, shaped_reward,
)
from prmflow.scoring.zero_shot import VERIFICATION_PROMPT

PROBLEM = "Ava has 3 apples and finds 2 more. Tom gives her 4. How many apples?"
STEPS = ["3 + 2 = <<3+2=5>>5", "5 + 4 = <<5+4=9>>9", "Ava has 9 apples."]
TEXT = "\n".join(STEPS)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("rewards")
    return {"prm": build_tiny_prm(root / "prm", seed=1), "other": build_tiny_prm(root / "other", seed=2),
            "root": root}


def hand_log_odds(directory, problem, steps, prompt):
    """log p(Yes) - log p(No) after problem, steps and prompt, each piece encoded alone, answers teacher-forced."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    pieces = [problem + "\n"] + [("\n" if i else "") + f"Step {i + 1}: {s}" for i, s in enumerate(steps)]
    pieces.append("\n" + prompt)
    context = [tok.bos_token_id] + [t for p in pieces for t in tok.encode(p, add_special_tokens=False)]

    def log_p(answer):
        ids = tok.encode(answer, add_special_tokens=False)
        with torch.no_grad():
            log_probs = torch.log_softmax(model(torch.tensor([context + ids])).logits[0].float(), -1)
        return sum(log_probs[len(context) + k - 1, t].item() for k, t in enumerate(ids))

    return log_p("Yes") - log_p("No")


def test_zero_shot_step_reward_is_the_hand_computed_log_odds(tiny):
    zero_shot = ZeroShotProcessRewardModel(tiny["prm"])
    rewards = zero_shot.get_rewards_for_steps(PROBLEM, STEPS[:2])
    expected = [hand_log_odds(tiny["prm"], PROBLEM, STEPS[: t + 1], VERIFICATION_PROMPT) for t in range(2)]
    assert rewards == pytest.approx(expected, abs=1e-4)
    # The pipeline's zero-shot baseline reports the same reward on the probability scale.
    assert zero_shot.verifier.score_batch([(PROBLEM, STEPS[:2])])[0] == pytest.approx(
        [1 / (1 + math.exp(-r)) for r in expected], abs=1e-5)


def test_outcome_reward_is_the_log_odds_of_the_whole_solution_and_its_prompt_is_saved(tiny, tmp_path):
    orm = OutcomeRewardModel(tiny["prm"])
    reward = orm.get_reward_for_problem_solution(PROBLEM, TEXT)
    assert reward == pytest.approx(hand_log_odds(tiny["prm"], PROBLEM, STEPS, OUTCOME_PROMPT), abs=1e-4)
    assert orm.get_reward_for_problem_solution(PROBLEM, STEPS) == pytest.approx(reward)
    custom = OutcomeRewardModel(tiny["prm"], prompt="Right? Yes or No: ")
    custom.save(tmp_path / "orm")
    loaded = load_reward_model(tmp_path / "orm")
    assert isinstance(loaded, OutcomeRewardModel) and loaded.prompt == "Right? Yes or No: "
    assert loaded.get_reward(PROBLEM, TEXT) == pytest.approx(
        hand_log_odds(tiny["prm"], PROBLEM, STEPS, "Right? Yes or No: "), abs=1e-4)


def test_bfloat16_on_the_cpu_scores_within_0_05_of_float32(tmp_path):
    directory = sharpen_label_rows(build_tiny_prm(tmp_path / "prm", seed=3))
    solutions = [(PROBLEM, STEPS), ("Tom has 7 pens and gives away 4.", ["7 - 4 = <<7-4=3>>3", "Tom has 3 pens."]),
                 (PROBLEM, ["3 + 2 = <<3+2=6>>6", "6 + 4 = <<6+4=10>>10", "Ava has 10 apples."])]
    scores = {}
    for dtype in ("float32", "bfloat16"):
        prm = ProcessRewardModel(directory, placement=Placement("cpu", dtype))
        assert prm.model.dtype == getattr(torch, dtype) and prm.device.type == "cpu"
        scores[dtype] = [s for steps in prm.score_batch(solutions) for s in steps]
    full, half = scores["float32"], scores["bfloat16"]
    assert max(full) - min(full) > 0.3  # spread scores: 0.05 is not met by scores that all sit near 0.5
    assert half != full  # the bfloat16 weights really were used
    assert max(abs(a - b) for a, b in zip(full, half)) <= 0.05


def test_process_reward_model_scores_text_and_round_trips(tiny, tmp_path):
    prm = ProcessRewardModel(tiny["prm"], delimiter="\n\n", aggregation="prod")
    by_steps = prm.get_rewards_for_steps(PROBLEM, STEPS)
    assert len(by_steps) == 3 and all(0 < r < 1 for r in by_steps)
    assert prm.get_reward_for_text("\n\n".join(STEPS) + "\n\n", problem=PROBLEM) == by_steps
    assert prm.get_reward_for_text(TEXT, problem=PROBLEM, delimiter="\n") == by_steps
    prm.save(tmp_path / "saved")
    loaded = ProcessRewardModel.load(tmp_path / "saved")
    assert (loaded.delimiter, loaded.aggregation) == ("\n\n", "prod")
    assert loaded.get_rewards_for_steps(PROBLEM, STEPS) == pytest.approx(by_steps, abs=1e-6)
    assert loaded.get_reward(PROBLEM, "\n\n".join(STEPS)) == pytest.approx(math.prod(by_steps), abs=1e-6)
    # A pipeline model directory (never .save()d) loads in tag mode; a saved zero-shot model keeps its mode.
    assert isinstance(load_reward_model(tiny["prm"]), ProcessRewardModel)
    ZeroShotProcessRewardModel(tiny["prm"], prompt="Ok? Yes or No: ").save(tmp_path / "zs")
    zero_shot = ProcessRewardModel.load(tmp_path / "zs")
    assert isinstance(zero_shot, ZeroShotProcessRewardModel) and zero_shot.prompt == "Ok? Yes or No: "
    with pytest.raises(ValueError, match="aggregation"):
        ProcessRewardModel(tiny["prm"], aggregation="median")


def test_combined_weights_aggregation_max_steps_and_round_trip(tiny, tmp_path):
    prm, orm = ProcessRewardModel(tiny["prm"]), OutcomeRewardModel(tiny["prm"])
    combined = CombinedRewardModel(prm, orm, max_steps=2, aggregation="mean")
    steps, rewards, mean = combined.extract_and_aggregate_steps(TEXT + "\n", problem=PROBLEM)
    assert steps == STEPS[:2] and rewards == pytest.approx(prm.get_rewards_for_steps(PROBLEM, STEPS[:2]))
    assert mean == pytest.approx((rewards[0] + rewards[1]) / 2)
    expected = {"min": min(rewards), "prod": rewards[0] * rewards[1], "last": rewards[1]}
    for how, value in expected.items():
        combined.aggregation = how
        assert combined.extract_and_aggregate_steps(TEXT, problem=PROBLEM)[2] == pytest.approx(value)
    combined.aggregation = "mean"
    outcome = orm.get_reward_for_problem_solution(PROBLEM, TEXT)
    assert combined.get_reward(PROBLEM, TEXT) == pytest.approx(0.7 * mean + 0.3 * outcome)
    combined.save(tmp_path / "combined")
    loaded = CombinedRewardModel.load(tmp_path / "combined")
    assert (loaded.process_weight, loaded.outcome_weight, loaded.max_steps) == (0.7, 0.3, 2)
    assert load_reward_model(tmp_path / "combined").get_reward(PROBLEM, TEXT) == pytest.approx(
        combined.get_reward(PROBLEM, TEXT), abs=1e-6)


def test_ensemble_is_the_weighted_mean_of_its_members_and_round_trips(tiny, tmp_path):
    first, second = ProcessRewardModel(tiny["prm"]), ProcessRewardModel(tiny["other"])
    ensemble = EnsembleRewardModel([tiny["prm"], tiny["other"]], weights=[3.0, 1.0])
    expected = (3 * first.get_reward(PROBLEM, TEXT) + second.get_reward(PROBLEM, TEXT)) / 4
    assert first.get_reward(PROBLEM, TEXT) != pytest.approx(second.get_reward(PROBLEM, TEXT))
    assert ensemble.get_reward(PROBLEM, TEXT) == pytest.approx(expected)
    ensemble.save(tmp_path / "ensemble")
    assert load_reward_model(tmp_path / "ensemble").get_reward(PROBLEM, TEXT) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="weights"):
        EnsembleRewardModel([tiny["prm"]], weights=[1.0, 2.0])


def test_shaped_reward_formula():
    assert shaped_reward(0.8) == pytest.approx(0.8)
    assert shaped_reward(0.8, confidence=0.5, complexity=4) == pytest.approx(0.8 * 0.5 - 0.01 * 4)
    assert shaped_reward(-2.0, confidence=0.25, complexity=3, complexity_penalty=0.1) == pytest.approx(-0.5 - 0.3)
    with pytest.raises(ValueError, match="confidence"):
        shaped_reward(1.0, confidence=1.5)
    with pytest.raises(ValueError, match="complexity"):
        shaped_reward(1.0, complexity=-1)


def test_reward_function_takes_plain_and_conversational_completions(tiny):
    prm = ProcessRewardModel(tiny["prm"])
    reward_fn = reward_function(prm)
    other = "\n".join(STEPS[:1])
    plain = reward_fn([PROBLEM, PROBLEM], [TEXT, other], completion_ids=None)
    assert plain == pytest.approx([prm.get_reward(PROBLEM, TEXT), prm.get_reward(PROBLEM, other)])
    chat = reward_fn([[{"role": "user", "content": PROBLEM}]], [[{"role": "assistant", "content": TEXT}]])
    assert chat == pytest.approx(plain[:1])
    shaped = reward_function(prm, shaping=lambda r, text: shaped_reward(r, complexity=text.count("\n") + 1))
    assert shaped([PROBLEM], [TEXT]) == pytest.approx([plain[0] - 0.03])
    assert reward_fn.__name__ == "prmflow_ProcessRewardModel"


def test_one_degenerate_completion_never_fails_the_batch(tiny):
    prm = ProcessRewardModel(tiny["prm"])
    loop = TEXT + "\nThe total is " + "9" * 6000  # a step longer than the context: its start is scored
    unscorable = "p " * 200  # a problem that alone fills the 192-token context
    with pytest.raises(UnscorableError, match="nothing of it fits"):
        prm.get_reward(unscorable, TEXT)
    rewards = reward_function(prm)([PROBLEM, unscorable, PROBLEM], [TEXT, TEXT, loop])
    assert rewards[0] == pytest.approx(prm.get_reward(PROBLEM, TEXT)) and rewards[1] is None
    assert rewards[2] == pytest.approx(min(prm.get_rewards_for_steps(PROBLEM, loop.split("\n"))))
    assert len(prm.get_rewards_for_steps(PROBLEM, loop.split("\n"))) == 4


def test_the_public_api_is_exported_lazily():
    code = ("import sys, prmflow; assert 'torch' not in sys.modules; "
            "from prmflow import ProcessRewardModel, CombinedRewardModel, shaped_reward; "
            "from prmflow.scoring import rewards; assert ProcessRewardModel is rewards.ProcessRewardModel")
    subprocess.run([sys.executable, "-c", code], check=True)
