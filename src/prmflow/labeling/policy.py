"""The rollout-policy interface: what a labeling method asks of a policy and what one call returns.

Policies: `simulated.py` (offline default, knows its true first error), `hf_policy.py` (a local
causal LM), `openai_policy.py` (an OpenAI-compatible server); `policies.make_policy` builds one
from the `label` params.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

NO_ANSWER = "undefined"


@dataclass(frozen=True)
class Continuation:
    steps: list[str]  # the new steps only
    final_answer: str
    first_slip: int | None  # index among the new steps of the first slip, -1 when none, None when unknown
    finished: bool = True  # False: a `next_steps` step after which the solution goes on (final_answer "")
    tokens: int = 0  # tokens the policy generated for it, where it knows (model policies)


class Policy(Protocol):
    """What a labeling method needs from a policy; each returned Continuation is one policy call.

    `complete` continues every prefix of the list once (repeat a prefix for N completions), so
    a batched policy can sample them together. `final_answer` is the extracted final answer, ""
    (or NO_ANSWER) when there is none; the labeling method judges it.

    `next_steps` proposes one more step for every prefix of the list, all in one batch, stopping at
    the step boundary (what step-level search expands, as in search-and-learn's beam search): each
    Continuation holds that one step (none when the policy had nothing more to write) and is
    `finished` when the step ends the solution, with its final answer; otherwise `finished` is False
    and `final_answer` is "".

    A policy may have `parallel_problems` (default 1): how many problems may be labeled through it at
    once, from as many threads (engine.label_many).
    """

    name: str

    def sample_trajectory(self, problem: dict, rng: random.Random) -> Continuation: ...

    def complete(self, problem: dict, prefixes: list[list[str]], rng: random.Random) -> list[Continuation]: ...

    def next_steps(self, problem: dict, prefixes: list[list[str]], rng: random.Random) -> list[Continuation]: ...
