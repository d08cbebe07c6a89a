"""One client for every trainer adapter: (problem, completion text) pairs in, one reward per completion out.

    client = PRMClient(RewardConfig(endpoint="http://127.0.0.1:5001"))   # `mlflow models serve` of the PRM
    client = PRMClient(RewardConfig(model="models/prm"))                  # or a model directory / models:/prm@champion
    [r.reward for r in client.score(problems, completions)]              # sync; `await client.ascore(...)` async

Each completion is sent as the serving contract's `text` field (serving/requests.py), so the server splits it
into steps by its own rules (blank lines, else `Step k:` markers, else line breaks) and the split is returned
(`SolutionReward.steps`). The reward is the aggregated solution score (`aggregation`, as the server computes it),
except where the contract says the score must not be used as it is:

- a completion that states no final answer (`has_final_answer` false) gets `no_answer_reward` (default 0.0):
  with `min` or `prod` a completion that stops after one safe step would otherwise out-score every finished
  solution, and a policy trained on that reward learns to stop early (the rule of best-of-N, README);
- a completion the PRM cannot score gets `unscorable_reward` (default 0.0), its `reason` saying why, and a
  warning naming its index goes to the `prmflow.rewards` logger (the trainer's log): one rule
  (scoring.candidates.content_fault, the server's own) for an empty, whitespace-only or marker-only completion
  (`Step 1:`), one that is not valid Unicode (a lone surrogate) and an empty problem, applied here before
  anything is sent, and `score: null` from the server (nothing fits the PRM's context). Its batch-mates get
  the rewards they get alone.

Every such case is named in `SolutionReward.reason`; a failure is never a reward. Requests go through
scoring.load.ServedPRM (the one client of the serving contract) and its retry policy (http_retry.Retrying):
connection errors, timeouts, 429 and 5xx are retried `max_retries` times with exponential backoff and jitter,
then raise `RewardError` naming the endpoint and the last failure; a 4xx (a request the server refuses) raises
at once with the server's message. Messages never hold a credential: the endpoint's `user:password@` and
anything in a server's text that looks like a key are shown as `***` (http_retry.scrubbed). Requests carry at
most `batch_size` completions (the server's cap is `register.max_solutions_per_request`, 64 by default).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import warnings
from dataclasses import dataclass, field, fields

from prmflow.config import AGGREGATIONS, DEFAULT_AGGREGATION
from prmflow.devices import transformers_classes
from prmflow.http_retry import RequestFailed, Retrying
from prmflow.integrations.text import DEFAULT_END_TOKENS, end_tokens
from prmflow.param_rules import redact_url
from prmflow.scoring.candidates import Solution, content_fault
from prmflow.scoring.load import ServedPRM, invocations_url

RENAMED = {"timeout_s": "request_timeout_s"}  # RewardConfig keywords of the last release (prmflow 0.1.0) -> now
log = logging.getLogger("prmflow.rewards")
_LOAD = threading.Lock()  # one model or tokenizer loads at a time in the process: clients built in many threads


class RewardError(RequestFailed):
    """The PRM could not score a batch: the message names the endpoint (or model) and the failure."""


def renamed_keywords(cls):
    """Accept the last release's keyword names (RENAMED) for one more release: each becomes its new name, with a
    DeprecationWarning that names the new form (as scoring.rewards.legacy_placement does for device=/dtype=).
    Both names at once is a TypeError."""
    init = cls.__init__

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        for old, new in RENAMED.items():
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{cls.__name__}: give {new}= or the deprecated {old}=, not both")
                warnings.warn(f"{cls.__name__}(..., {old}=...) is deprecated and will be removed in the next "
                              f"release: use {cls.__name__}(..., {new}=...)", DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
        init(self, *args, **kwargs)

    cls.__init__ = wrapper
    return cls


@renamed_keywords
@dataclass(frozen=True)
class RewardConfig:
    """Where the PRM is and how its answer becomes a reward (help text beside each knob)."""

    endpoint: str = field(default="", metadata={
        "help": "Base URL of the served PRM (`mlflow models serve`), e.g. http://127.0.0.1:5001; "
                "`/invocations` is added. Exactly one of endpoint or model."})
    model: str = field(default="", metadata={
        "help": "A PRM loaded in this process instead: a model directory or a registered model URI "
                "(models:/prm@champion), through prmflow.load."})
    aggregation: str = field(default=DEFAULT_AGGREGATION, metadata={
        "help": f"How step scores become the solution score: one of {', '.join(AGGREGATIONS)}."})
    no_answer_reward: float | None = field(default=0.0, metadata={
        "help": "Reward of a completion that states no final answer; null: its PRM score as it is."})
    unscorable_reward: float = field(default=0.0, metadata={
        "help": "Reward of a completion with no step the PRM can score (empty, or nothing fits its context)."})
    policy_tokenizer: str = field(default="", metadata={
        "help": "The policy's tokenizer (a directory or hub id): its special tokens (eos, pad, end of turn) are cut "
                "off a completion's end beside the fallback list integrations.text.END_OF_TURN; empty: that list."})
    batch_size: int = field(default=32, metadata={
        "help": "Completions per request (the server refuses more than register.max_solutions_per_request)."})
    request_timeout_s: float = field(default=120.0, metadata={
        "help": "Seconds to wait for one answer (was `timeout_s`, still accepted with a DeprecationWarning)."})
    max_retries: int = field(default=5, metadata={
        "help": "Retries of a request after a connection error, timeout, 429 or 5xx, with exponential backoff."})
    retry_backoff_s: float = field(default=1.0, metadata={
        "help": "First retry's delay in seconds; it doubles each retry (capped at 30 s), times a jitter in "
                "[0.5, 1.5)."})

    def __post_init__(self):
        if bool(self.endpoint) == bool(self.model):
            raise ValueError("RewardConfig: give exactly one of endpoint (a served PRM's URL) or model "
                             f"(a model directory or URI); got endpoint={redact_url(self.endpoint)!r}, "
                             f"model={redact_url(self.model)!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"RewardConfig.aggregation: {self.aggregation!r} is not one of {list(AGGREGATIONS)}")
        for name in ("batch_size", "request_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"RewardConfig.{name}: must be positive, got {getattr(self, name)}")
        for name in ("max_retries", "retry_backoff_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"RewardConfig.{name}: must be non-negative, got {getattr(self, name)}")

    @classmethod
    def from_kwargs(cls, **kwargs) -> RewardConfig:
        """A config from keyword arguments (a trainer's reward kwargs); an unknown name is an error."""
        known = {f.name for f in fields(cls)} | set(RENAMED)
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown reward option(s) {unknown} (known: {sorted(known)})")
        return cls(**kwargs)

    @property
    def source(self) -> str:
        """What errors and logs name: the endpoint's URL (its credential shown as `***`) or the model."""
        return redact_url(invocations_url(self.endpoint)) if self.endpoint else f"model {redact_url(self.model)}"


@dataclass(frozen=True)
class SolutionReward:
    """One completion's reward and what the PRM said about it (step scores for the trainer's logs)."""

    reward: float
    score: float | None  # the PRM's aggregated score; None when nothing was scored
    step_scores: list[float]
    steps: list[str]  # the completion as the server split it
    first_error: int | None  # the first step scored below the model's threshold, -1 for none
    has_final_answer: bool
    dropped_steps: int = 0  # trailing steps beyond the PRM's context, not scored
    reason: str | None = None  # why `reward` is not `score`: "no final answer", "empty completion", the server's


def reward_from_prediction(prediction: dict, config: RewardConfig) -> SolutionReward:
    """The reward of one contract prediction (`score`, `has_final_answer`, `reason`, ...) under `config`."""
    base = {"score": prediction["score"], "step_scores": prediction["step_scores"],
            "steps": prediction.get("steps") or [], "first_error": prediction["first_error"],
            "has_final_answer": prediction["has_final_answer"], "dropped_steps": prediction.get("dropped_steps", 0)}
    if prediction["score"] is None:
        return SolutionReward(reward=config.unscorable_reward, **base,
                              reason=prediction.get("reason") or "nothing of it was scored")
    if not prediction["has_final_answer"] and config.no_answer_reward is not None:
        return SolutionReward(reward=config.no_answer_reward, **base, reason="no final answer")
    return SolutionReward(reward=float(prediction["score"]), **base)


def unscorable(config: RewardConfig, reason: str) -> SolutionReward:
    return SolutionReward(reward=config.unscorable_reward, score=None, step_scores=[], steps=[], first_error=None,
                          has_final_answer=False, reason=reason)


class PRMClient:
    """Scores (problem, completion) pairs with the served PRM or one loaded in process (see module doc)."""

    def __init__(self, config: RewardConfig):
        self.config = config
        retrying = Retrying(config.max_retries, config.retry_backoff_s)
        self._served = ServedPRM(config.endpoint, batch_size=config.batch_size,
                                 request_timeout_s=config.request_timeout_s, retrying=retrying,
                                 error=RewardError) if config.endpoint else None
        self._prm = None  # the PRM of `model` (prmflow.load), loaded on first use
        self._end_tokens = None if config.policy_tokenizer else DEFAULT_END_TOKENS

    @property
    def retries(self) -> int:
        """Retried requests so far (ascore's threads' together), for the trainer's logs."""
        return self._served.retrying.retries if self._served else 0

    @property
    def end_tokens(self) -> tuple[str, ...]:
        """The token texts cut off a completion's end (text.end_tokens of `policy_tokenizer`), loaded once."""
        if self._end_tokens is None:
            with _LOAD:
                if self._end_tokens is None:
                    (auto,) = transformers_classes("AutoTokenizer")
                    self._end_tokens = end_tokens(auto.from_pretrained(self.config.policy_tokenizer))
        return self._end_tokens

    def score(self, problems: list[str], completions: list[str]) -> list[SolutionReward]:
        """One reward per completion, in order."""
        return self._assemble(problems, completions, [self._predict(chunk) for chunk in self._chunks(problems,
                                                                                                      completions)])

    async def ascore(self, problems: list[str], completions: list[str]) -> list[SolutionReward]:
        """As `score`, without blocking the event loop: requests go out concurrently from worker threads (one
        thread-safe connection pool); a model loaded in process scores the chunks in one worker thread."""
        chunks = self._chunks(problems, completions)
        if self.config.model:
            answers = await asyncio.to_thread(lambda: [self._predict(chunk) for chunk in chunks])
        else:
            answers = await asyncio.gather(*(asyncio.to_thread(self._predict, chunk) for chunk in chunks))
        return self._assemble(problems, completions, answers)

    def _chunks(self, problems: list[str], completions: list[str]) -> list[list[dict]]:
        """The contract's inputs for the completions the PRM can score (faults: `_faults`), `batch_size` per
        request."""
        faults = self._faults(problems, completions)
        inputs = [{"problem": p, "text": c} for p, c, fault in zip(problems, completions, faults) if fault is None]
        size = self.config.batch_size
        return [inputs[i:i + size] for i in range(0, len(inputs), size)]

    def _faults(self, problems: list[str], completions: list[str]) -> list[str | None]:
        if len(problems) != len(completions):
            raise ValueError(f"{len(problems)} problems for {len(completions)} completions")
        return [content_fault(Solution(problem=p, text=c), "")[1] for p, c in zip(problems, completions)]

    def _assemble(self, problems: list[str], completions: list[str], answers: list[list[dict]]) -> list[SolutionReward]:
        predictions = iter(p for answer in answers for p in answer)
        rewards = [reward_from_prediction(next(predictions), self.config) if fault is None
                   else unscorable(self.config, fault) for fault in self._faults(problems, completions)]
        for index, reward in enumerate(rewards):
            if reward.score is None:
                log.warning("completion %d of %d: unscorable (%s); reward %s, from %s", index, len(rewards),
                            reward.reason, reward.reward, self.config.source)
        return rewards

    def _predict(self, inputs: list[dict]) -> list[dict]:
        if self.config.model:
            return self._predict_local(inputs)
        return self._served.invoke(inputs, self.config.aggregation)

    def _predict_local(self, inputs: list[dict]) -> list[dict]:
        """The served contract's answer, from the PRM in this process (prmflow.load): scored as the server scores
        its requests (serving.scorer.score_solutions), without a server's request-size limits."""
        from prmflow.scoring.load import load
        from prmflow.serving.scorer import score_solutions

        if self._prm is None:
            with _LOAD:
                if self._prm is None:
                    self._prm = load(self.config.model)
        predictions = score_solutions(self._prm, [Solution(**i) for i in inputs], self.config.aggregation)
        return [p.model_dump() for p in predictions]
