"""OpenRLHF rewards from a prmflow PRM: a `reward_func` file or a remote reward endpoint.

OpenRLHF (`--reward.remote_url`, 0.9+; `--remote_rm_url` before) takes either a Python file that defines
`reward_func(queries, prompts, labels, **kwargs)`, or the URL of a server it POSTs
`{"query": [...], "prompts": [...], "labels": [...]}` to, reading `rewards` (advantages), `scores` (dynamic
filtering, in [0, 1]) and `extra_logs` (logged means) from the answer. A query is the prompt and the response
decoded together (special tokens kept); `labels` (`--label_key`, usually the reference answer) are not needed by
a PRM and are ignored.

    # prm_reward.py, passed as --reward.remote_url prm_reward.py
    from prmflow.integrations.openrlhf import make_reward_func
    reward_func = make_reward_func(endpoint="http://127.0.0.1:5001")

    # or a remote reward endpoint, passed as --reward.remote_url http://127.0.0.1:5002/get_reward
    prmflow reward-server --endpoint http://127.0.0.1:5001 --port 5002

Both answer the same fields (`reward_payload`): `rewards` and `scores` are the PRM reward (client.py: the
aggregated score; `no_answer_reward` / `unscorable_reward` where that applies), `extra_logs` holds per query
`prm_scored_steps`, `prm_first_error` (-1: none predicted or nothing scored), `prm_has_final_answer` and
`prm_unscorable` (1 where nothing was scored: an empty, marker-only or not-Unicode response, an empty prompt;
the others of the batch get their own rewards). The remote endpoint is reward_server.py; there a bad payload is
answered 400 naming the field, and a PRM that keeps failing 502 naming its endpoint (OpenRLHF retries, then
stops): never a made-up reward.
"""

from __future__ import annotations

from prmflow.integrations.client import PRMClient, RewardConfig
from prmflow.integrations.text import problem_from_prompt, response_from_query


def check_payload(body) -> tuple[list[str], list[str]]:
    """(queries, prompts) of an OpenRLHF payload; raises ValueError naming the field that breaks the format."""
    if not isinstance(body, dict):
        raise ValueError(f"request body: must be an object {{\"query\": [...], \"prompts\": [...], \"labels\": "
                         f"[...]}}, got {type(body).__name__}")
    queries, prompts = body.get("query"), body.get("prompts")
    for name, value in (("query", queries), ("prompts", prompts)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{name}: must be a list of strings, got {type(value).__name__}")
    if len(queries) != len(prompts):
        raise ValueError(f"prompts: {len(prompts)} prompts for {len(queries)} queries")
    return queries, prompts


def reward_payload(client: PRMClient, queries: list[str], prompts: list[str]) -> dict:
    """OpenRLHF's answer for one batch: `rewards`, `scores` and `extra_logs`, lists in query order."""
    problems = [problem_from_prompt(p) for p in prompts]
    responses = [response_from_query(q, p, i, client.end_tokens) for i, (q, p) in enumerate(zip(queries, prompts))]
    rewards = client.score(problems, responses)
    values = [r.reward for r in rewards]
    return {"rewards": values, "scores": values,
            "extra_logs": {"prm_scored_steps": [len(r.step_scores) for r in rewards],
                           "prm_first_error": [-1 if r.first_error is None else r.first_error for r in rewards],
                           "prm_has_final_answer": [int(r.has_final_answer) for r in rewards],
                           "prm_unscorable": [int(r.score is None) for r in rewards]}}


def make_reward_func(**options):
    """OpenRLHF's `reward_func(queries, prompts, labels, **kwargs)` scoring with the PRM given by `options`
    (RewardConfig's fields); it returns torch tensors, as OpenRLHF's own reward functions do."""
    import torch

    client = PRMClient(RewardConfig.from_kwargs(**options))

    def reward_func(queries, prompts, labels=None, **kwargs) -> dict:
        payload = reward_payload(client, *check_payload({"query": list(queries), "prompts": list(prompts)}))
        return {"rewards": torch.tensor(payload["rewards"]), "scores": torch.tensor(payload["scores"]),
                "extra_logs": {k: torch.tensor(v, dtype=torch.float32) for k, v in payload["extra_logs"].items()}}

    reward_func.client = client
    return reward_func
