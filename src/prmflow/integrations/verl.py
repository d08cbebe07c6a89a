"""verl rewards from a prmflow PRM: `compute_score` for verl's custom reward function.

verl's reward managers call `compute_score(data_source=, solution_str=, ground_truth=, extra_info=)` per
response (`naive`, `prime`, `dapo`), or `compute_score(data_sources=, solution_strs=, ground_truths=,
extra_infos=)` once per batch (`batch`), with `custom_reward_function.reward_kwargs` added as keyword
arguments. A dict answer's `score` is the reward and every key is logged (`reward_extra_info`).

    # verl config (Hydra overrides)
    custom_reward_function.path=prm_reward.py custom_reward_function.name=compute_score
    +custom_reward_function.reward_kwargs.endpoint=http://127.0.0.1:5001
    # prm_reward.py
    from prmflow.integrations.verl import compute_score, compute_score_batch

`solution_str` is the response alone, so the problem comes from the sample's `extra_info[problem_key]`
(`question`, as verl's GSM8K and MATH preprocessing write it). The reward kwargs are RewardConfig's fields
(client.py) and `problem_key`; one client per distinct set of kwargs is kept for the life of the process.
The answer is `{"score", "prm_score", "prm_first_error", "prm_scored_steps", "prm_has_final_answer",
"prm_unscorable"}`, the same keys for every response (verl stacks them); `prm_score` is -1.0 where nothing was
scored. A response the PRM cannot score (empty, `Step 1:` alone, a lone surrogate, an empty problem) gets
`unscorable_reward`, `prm_unscorable: 1` and a warning with its reason in the log (client.py); its batch-mates
their own rewards.
"""

from __future__ import annotations

import functools

from prmflow.integrations.client import PRMClient, RewardConfig, SolutionReward
from prmflow.integrations.text import completion_text

DEFAULT_PROBLEM_KEY = "question"


@functools.cache
def client_for(options: tuple[tuple[str, object], ...]) -> PRMClient:
    return PRMClient(RewardConfig.from_kwargs(**dict(options)))


def problem_of(extra_info, problem_key: str, index: int | None = None) -> str:
    """The problem in a sample's extra_info; raises ValueError naming the sample and the key."""
    where = "extra_info" if index is None else f"extra_infos[{index}]"
    if not isinstance(extra_info, dict) or not isinstance(extra_info.get(problem_key), str):
        keys = sorted(extra_info) if isinstance(extra_info, dict) else type(extra_info).__name__
        raise ValueError(f"{where}: no problem text under {problem_key!r} (has {keys}); write the problem there in "
                         f"preprocessing or pass problem_key in custom_reward_function.reward_kwargs")
    return extra_info[problem_key]


def answer(reward: SolutionReward) -> dict:
    return {"score": reward.reward, "prm_score": -1.0 if reward.score is None else reward.score,
            "prm_first_error": -1 if reward.first_error is None else reward.first_error,
            "prm_scored_steps": len(reward.step_scores), "prm_has_final_answer": int(reward.has_final_answer),
            "prm_unscorable": int(reward.score is None)}


def compute_score(data_source, solution_str, ground_truth, extra_info=None, problem_key=DEFAULT_PROBLEM_KEY,
                  **options) -> dict:
    """One response's reward (verl's per-sample signature); `options` are RewardConfig's fields."""
    client = client_for(tuple(sorted(options.items())))
    return answer(client.score([problem_of(extra_info, problem_key)],
                               [completion_text(solution_str, client.end_tokens)])[0])


def compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos, problem_key=DEFAULT_PROBLEM_KEY,
                        **options) -> list[dict]:
    """A batch's rewards in one pass (verl's `batch` reward manager), requests of `batch_size` responses."""
    client = client_for(tuple(sorted(options.items())))
    problems = [problem_of(info, problem_key, i) for i, info in enumerate(extra_infos)]
    return [answer(r) for r in client.score(problems, [completion_text(s, client.end_tokens) for s in solution_strs])]
