"""TRL reward functions from a prmflow PRM: `f(prompts, completions, **kwargs) -> list[float]`.

    from prmflow.integrations.trl import prm_reward, async_prm_reward
    trainer = GRPOTrainer(model=..., reward_funcs=prm_reward(endpoint="http://127.0.0.1:5001"), ...)
    trainer = GRPOTrainer(model=..., reward_funcs=async_prm_reward(endpoint="http://127.0.0.1:5001"), ...)

Keyword arguments are `RewardConfig`'s (client.py): `endpoint` or `model`, `aggregation`, `no_answer_reward`,
`unscorable_reward`, `batch_size`, retries. TRL passes every prompt and completion of a generation batch in one
call, standard (strings) or conversational (message lists); text.py reads the problem and the completion out of
them. The async function (TRL >= 1.0 runs async reward functions concurrently on its event loop) sends its
requests concurrently.

Where the trainer offers them (TRL's GRPO/RLOO pass `log_metric` and `log_extra`), the function logs
`prm/score_mean` (the PRM's mean aggregated score of the scored completions), `prm/no_answer_rate`,
`prm/unscorable_rate` and `prm/retries`, and adds the columns `prm_step_scores`, `prm_first_error` and
`prm_reason` (why a reward is not the PRM's score) to the completions table. A completion the PRM cannot score
(empty, `Step 1:` alone, a lone surrogate, an empty prompt) gets `unscorable_reward` and its batch-mates their
own rewards; a failure of the PRM raises `RewardError` (client.py): TRL stops the step, no reward is made up.
"""

from __future__ import annotations

from prmflow.integrations.client import PRMClient, RewardConfig, SolutionReward
from prmflow.integrations.text import completion_text, problem_from_prompt

REWARD_NAME = "prm_reward"  # TRL names a function's reward column by its __name__ (`rewards/prm_reward/mean`)


def texts(prompts: list, completions: list, client: PRMClient) -> tuple[list[str], list[str]]:
    """(problems, completion texts) of a TRL batch, standard or conversational, the end tokens of the client's
    `policy_tokenizer` cut off."""
    return [problem_from_prompt(p) for p in prompts], [completion_text(c, client.end_tokens) for c in completions]


def log_rewards(rewards: list[SolutionReward], client: PRMClient, log_metric=None, log_extra=None) -> None:
    """Report the PRM's view of the batch through TRL's `log_metric` / `log_extra`, where given."""
    if log_metric is not None:
        scored = [r.score for r in rewards if r.score is not None]
        if scored:
            log_metric("prm/score_mean", sum(scored) / len(scored))
        log_metric("prm/no_answer_rate", sum(r.reason == "no final answer" for r in rewards) / len(rewards))
        log_metric("prm/unscorable_rate", sum(r.score is None for r in rewards) / len(rewards))
        log_metric("prm/retries", float(client.retries))
    if log_extra is not None:
        log_extra("prm_step_scores", [[round(s, 4) for s in r.step_scores] for r in rewards])
        log_extra("prm_first_error", [r.first_error for r in rewards])
        log_extra("prm_reason", [r.reason for r in rewards])


def prm_reward(name: str = REWARD_NAME, **options):
    """A synchronous TRL reward function scoring with the PRM given by `options` (RewardConfig's fields);
    `name` is its reward column in TRL's logs (`rewards/<name>/mean`)."""
    client = PRMClient(RewardConfig.from_kwargs(**options))

    def reward(prompts, completions, log_metric=None, log_extra=None, **kwargs) -> list[float]:
        rewards = client.score(*texts(prompts, completions, client))
        log_rewards(rewards, client, log_metric, log_extra)
        return [r.reward for r in rewards]

    reward.__name__ = name
    reward.client = client
    return reward


def async_prm_reward(name: str = REWARD_NAME, **options):
    """As `prm_reward`, an `async def` (TRL awaits it beside its other async reward functions)."""
    client = PRMClient(RewardConfig.from_kwargs(**options))

    async def reward(prompts, completions, log_metric=None, log_extra=None, **kwargs) -> list[float]:
        rewards = await client.ascore(*texts(prompts, completions, client))
        log_rewards(rewards, client, log_metric, log_extra)
        return [r.reward for r in rewards]

    reward.__name__ = name
    reward.client = client
    return reward
