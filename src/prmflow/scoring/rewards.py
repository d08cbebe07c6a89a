"""The reward-model family: process, outcome, combined and ensemble scorers, usable without the pipeline.

    from prmflow import ProcessRewardModel, OutcomeRewardModel, CombinedRewardModel, Placement, load_reward_model
    prm = ProcessRewardModel("models/prm")                        # trained tag mode: P(+) per step
    prm = ProcessRewardModel("models/prm", placement=Placement("cuda", "bfloat16"))  # every class and load
    prm.get_reward_for_text("3 + 2 = 5\\n5 * 2 = 10", problem="...")
    zs = ZeroShotProcessRewardModel("any/causal-lm")              # verification prompt: log-odds per step
    orm = OutcomeRewardModel("any/causal-lm")                     # one log-odds for the whole solution
    orm = OutcomeRewardModel.load("models/orm")                   # trained (train_orm): P(correct) at the last tag
    both = CombinedRewardModel(prm, orm)                          # combine's weights: 0.7 * aggregate + 0.3 * outcome
    both.save("models/combined"); load_reward_model("models/combined").get_reward(problem, text)

Every model answers `get_reward(problem, solution_text) -> float`, which is what the ensemble and
the TRL reward function (`reward_function`) use, and saves a `reward_config.json` that
`load_reward_model` dispatches on. Every constructor and `load` takes its options by keyword, among them
`placement` (prmflow.devices.Placement: device and dtype, "auto" by default), handed down whole to
whatever the model is made of. Scales differ by mode: the trained PRM and the trained ORM give
probabilities in [0, 1], the verification prompt gives log p(Yes) - log p(No); combine or ensemble
models of one scale, or choose the weights with that in mind.

A solution is scored on what fits the model context (a step too long for any context is cut inside,
trailing steps are left out: tokenization.py); one of which nothing fits raises UnscorableError, and
`reward_function` gives it None, TRL's "no reward for this sample", so one degenerate completion never
fails the batch.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

from prmflow.config import DEFAULT_AGGREGATION, DEFAULT_STEP_TEMPLATE, EvaluateParams
from prmflow.devices import Placement, load_causal_lm
from prmflow.scoring import modeling
from prmflow.scoring.aggregation import AGGREGATIONS, aggregate, combine
from prmflow.scoring.load import UnscorableError, load, split_steps
from prmflow.scoring.reward_config import (
    DEFAULT_DELIMITER, REWARD_CONFIG, read_config, trained_outcome_config, write_config,
)
from prmflow.scoring.tokenization import PRM_CONFIG, save_prompt_format
from prmflow.scoring.zero_shot import VERIFICATION_PROMPT
from prmflow.sections_evaluation import CombineParams

OUTCOME_PROMPT = "Is this solution correct? Yes or No: "


def legacy_placement(method):
    """Accept the last release's `device=` / `dtype=` keywords (prmflow 0.1.0) for one more release: they become
    `placement=Placement(device, dtype)`, with a DeprecationWarning that names the new form. Both at once is a
    TypeError."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        legacy = {k: kwargs.pop(k) for k in ("device", "dtype") if k in kwargs}
        if legacy:
            if "placement" in kwargs:
                raise TypeError(f"{method.__qualname__}: give placement= or the deprecated device=/dtype=, not both")
            new = Placement(**legacy)
            name = method.__qualname__.removesuffix(".__init__")
            warnings.warn(f"{name}(..., {', '.join(f'{k}={v!r}' for k, v in legacy.items())}) is deprecated and "
                          f"will be removed in the next release: use {name}(..., placement=Placement("
                          f"device={new.device!r}, dtype={new.dtype!r})) (from prmflow import Placement)",
                          DeprecationWarning, stacklevel=2)
            kwargs["placement"] = new
        return method(*args, **kwargs)
    return wrapper


def _solution_reward(rewards: list[float], aggregation: str) -> float:
    if not rewards:
        raise UnscorableError("solution: nothing of it fits the model's context (the problem alone fills it)")
    return aggregate(rewards, aggregation)


def _check_aggregation(aggregation: str) -> str:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation: {aggregation!r} is not one of {list(AGGREGATIONS)}")
    return aggregation


class _StepScorer:
    """What the two process modes share: text splitting and one solution reward from the step rewards."""

    delimiter: str
    aggregation: str

    def get_rewards_for_steps(self, problem: str, steps: list[str]) -> list[float]:
        raise NotImplementedError

    def get_reward_for_text(self, text: str, problem: str = "", delimiter: str | None = None) -> list[float]:
        """Step rewards of a solution written as one text, steps split on `delimiter` (default: the model's)."""
        return self.get_rewards_for_steps(problem, split_steps(text, delimiter or self.delimiter))

    def get_reward(self, problem: str, solution: str) -> float:
        return _solution_reward(self.get_reward_for_text(solution, problem), self.aggregation)


def _save_tag_model(scorer: modeling.StepTagScorer, path: Path, config: dict) -> None:
    """A trained tag-mode model as the train stages write it (weights, tokenizer, prm_config.json) plus `config`."""
    scorer.model.save_pretrained(path)
    scorer.tokenizer.save_pretrained(path)
    save_prompt_format(scorer.format, path)
    write_config(path, config)


class ProcessRewardModel(modeling.StepTagScorer, _StepScorer):
    """Trained tag mode: P(+) at each step tag, all steps in one forward pass (the pipeline's PRM)."""

    @legacy_placement
    def __init__(self, model_name_or_path: str | Path, *, placement: Placement = Placement(),
                 delimiter: str = DEFAULT_DELIMITER, aggregation: str = DEFAULT_AGGREGATION):
        super().__init__(model_name_or_path, placement)
        self.delimiter = delimiter
        self.aggregation = _check_aggregation(aggregation)

    def save(self, path: str | Path) -> None:
        _save_tag_model(self, Path(path), {"kind": "process", "mode": "tag", "delimiter": self.delimiter,
                                           "aggregation": self.aggregation})

    @classmethod
    @legacy_placement
    def load(cls, path: str | Path, *, placement: Placement = Placement()):
        """A saved process model in the mode it was saved in (tag, or verification prompt)."""
        config = read_config(path, "process")
        if config["mode"] == "verification":
            return ZeroShotProcessRewardModel.load(path, placement=placement)
        return cls(path, placement=placement, delimiter=config["delimiter"], aggregation=config["aggregation"])


class _VerificationPrompt:
    """Any causal LM asked a Yes/No question after the problem and steps (zero_shot.ZeroShotVerifier)."""

    kind = ""
    default_prompt = ""

    @legacy_placement
    def __init__(self, model_name_or_path: str | Path, *, placement: Placement = Placement(),
                 prompt: str | None = None, delimiter: str = DEFAULT_DELIMITER,
                 step_template: str = DEFAULT_STEP_TEMPLATE,
                 max_length: int | None = None, aggregation: str = DEFAULT_AGGREGATION):
        from transformers import AutoTokenizer

        from prmflow.scoring.formats import refuse_remote_code
        from prmflow.scoring.zero_shot import ZeroShotVerifier

        refuse_remote_code(model_name_or_path)  # a hub id has no local files to check: transformers refuses it
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        model = load_causal_lm(model_name_or_path, placement)
        # Without a stated length the model's own context is the limit.
        max_length = max_length or getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
        self.verifier = ZeroShotVerifier(model, tokenizer, max_length, tokenizer.bos_token_id, step_template,
                                         prompt or self.default_prompt)
        self.delimiter = delimiter
        self.aggregation = _check_aggregation(aggregation)

    @property
    def prompt(self) -> str:
        return self.verifier.prompt

    def config(self) -> dict:
        v = self.verifier
        return {"kind": self.kind, "mode": "verification", "prompt": v.prompt, "delimiter": self.delimiter,
                "step_template": v.step_template, "max_length": v.max_length, "aggregation": self.aggregation}

    def save(self, path: str | Path) -> None:
        path = Path(path)
        self.verifier.model.save_pretrained(path)
        self.verifier.tokenizer.save_pretrained(path)
        write_config(path, self.config())

    @classmethod
    @legacy_placement
    def load(cls, path: str | Path, *, placement: Placement = Placement()):
        config = read_config(path, cls.kind)
        return cls(path, placement=placement, prompt=config["prompt"], delimiter=config["delimiter"],
                   step_template=config["step_template"], max_length=config["max_length"],
                   aggregation=config["aggregation"])


class ZeroShotProcessRewardModel(_VerificationPrompt, _StepScorer):
    """Verification-prompt mode of the process model: reward of step t = log p(Yes) - log p(No)."""

    kind = "process"
    default_prompt = VERIFICATION_PROMPT

    def get_rewards_for_steps(self, problem: str, steps: list[str]) -> list[float]:
        return self.verifier.log_odds_batch([(problem, steps)])[0]


class OutcomeRewardModel(_VerificationPrompt):
    """One reward for a whole solution: log p(Yes) - log p(No) after `Is this solution correct? Yes or No: `.

    `OutcomeRewardModel.load(path)` also reads a trained ORM (models/orm): a TrainedOutcomeRewardModel.
    """

    kind = "outcome"
    default_prompt = OUTCOME_PROMPT

    def get_reward_for_problem_solution(self, problem: str, solution: str | list[str]) -> float:
        steps = split_steps(solution, self.delimiter) if isinstance(solution, str) else solution
        return _solution_reward(self.verifier.log_odds_batch([(problem, steps)], final_only=True)[0], "last")

    def get_reward(self, problem: str, solution: str) -> float:
        return self.get_reward_for_problem_solution(problem, solution)

    @classmethod
    @legacy_placement
    def load(cls, path: str | Path, *, placement: Placement = Placement()):
        """A saved outcome model in the mode it was saved in: trained (tag, e.g. models/orm) or verification prompt."""
        if read_config(path, cls.kind)["mode"] == "tag":
            return TrainedOutcomeRewardModel.load(path, placement=placement)
        return super().load(path, placement=placement)


class TrainedOutcomeRewardModel(modeling.StepTagScorer):
    """Trained tag mode of the outcome model (stage train_orm): the PRM's architecture, trained with every
    step tag's target = the rollout's final-answer correctness (Cobbe et al. 2021 verifier style).

    The solution's reward is P(+) at its last tag, a probability like the trained PRM's. The earlier
    tags' P(+) (`get_rewards_for_steps`, `score_batch`) are value estimates, P(ends correct | prefix),
    not step-correctness judgements.
    """

    @legacy_placement
    def __init__(self, model_name_or_path: str | Path, *, placement: Placement = Placement(),
                 delimiter: str = DEFAULT_DELIMITER):
        super().__init__(model_name_or_path, placement)
        self.delimiter = delimiter

    def outcome_batch(self, solutions: list[tuple[str, list[str]]],
                      batch_size: int = EvaluateParams.batch_size) -> list[float | None]:
        """P(correct) of each (problem, steps) at its last scored tag; None where not even the first step fits."""
        return [values[-1] if values else None for values in self.score_batch(solutions, batch_size)]

    def get_reward_for_problem_solution(self, problem: str, solution: str | list[str]) -> float:
        steps = split_steps(solution, self.delimiter) if isinstance(solution, str) else solution
        (reward,) = self.outcome_batch([(problem, steps)])
        return _solution_reward([] if reward is None else [reward], "last")

    def get_reward(self, problem: str, solution: str) -> float:
        return self.get_reward_for_problem_solution(problem, solution)

    def save(self, path: str | Path) -> None:
        _save_tag_model(self, Path(path), trained_outcome_config(self.delimiter))

    @classmethod
    @legacy_placement
    def load(cls, path: str | Path, *, placement: Placement = Placement()) -> TrainedOutcomeRewardModel:
        config = read_config(path, "outcome")
        if config["mode"] != "tag":
            raise ValueError(f"{Path(path, REWARD_CONFIG)}: mode: expected 'tag', got {config['mode']!r}")
        return cls(path, placement=placement, delimiter=config["delimiter"])


class CombinedRewardModel:
    """process_weight * aggregate(step rewards) + outcome_weight * outcome reward.

    `outcome` is an OutcomeRewardModel (verification prompt) or a TrainedOutcomeRewardModel; the weights
    default to the `combine` section's.
    """

    def __init__(self, process, outcome, *, process_weight: float = CombineParams.process_weight,
                 outcome_weight: float = CombineParams.outcome_weight, delimiter: str = DEFAULT_DELIMITER,
                 max_steps: int | None = None, aggregation: str = DEFAULT_AGGREGATION):
        self.process, self.outcome = process, outcome
        self.process_weight, self.outcome_weight = process_weight, outcome_weight
        self.delimiter, self.max_steps = delimiter, max_steps
        self.aggregation = _check_aggregation(aggregation)

    def extract_and_aggregate_steps(self, text: str, problem: str = "") -> tuple[list[str], list[float], float]:
        """(steps, their rewards, the aggregate); steps past `max_steps` or the model's context are not scored."""
        steps = split_steps(text, self.delimiter, self.max_steps)
        rewards = self.process.get_rewards_for_steps(problem, steps)
        return steps, rewards, _solution_reward(rewards, self.aggregation)

    def get_reward(self, problem: str, solution: str) -> float:
        _, _, process_reward = self.extract_and_aggregate_steps(solution, problem)
        outcome_reward = self.outcome.get_reward_for_problem_solution(problem, solution)
        return combine(process_reward, outcome_reward, self.process_weight, self.outcome_weight)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        self.process.save(path / "process")
        self.outcome.save(path / "outcome")
        write_config(path, {"kind": "combined", "process_weight": self.process_weight,
                             "outcome_weight": self.outcome_weight, "delimiter": self.delimiter,
                             "max_steps": self.max_steps, "aggregation": self.aggregation})

    @classmethod
    @legacy_placement
    def load(cls, path: str | Path, *, placement: Placement = Placement()) -> CombinedRewardModel:
        config = read_config(path, "combined")
        return cls(ProcessRewardModel.load(Path(path, "process"), placement=placement),
                   OutcomeRewardModel.load(Path(path, "outcome"), placement=placement),
                   process_weight=config["process_weight"], outcome_weight=config["outcome_weight"],
                   delimiter=config["delimiter"], max_steps=config["max_steps"], aggregation=config["aggregation"])


class EnsembleRewardModel:
    """The weighted mean of the `get_reward` of saved reward models of any kind (weights need not sum to 1)."""

    @legacy_placement
    def __init__(self, paths: list[str | Path], weights: list[float] | None = None, *,
                 placement: Placement = Placement()):
        weights = [1.0] * len(paths) if weights is None else list(weights)
        if not paths or len(weights) != len(paths):
            raise ValueError(f"weights: {len(weights)} weights for {len(paths)} models (need one per model, >= 1)")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"weights: must be >= 0 with a positive sum, got {weights}")
        self.members = [load_reward_model(p, placement=placement) for p in paths]
        self.weights = weights

    def get_reward(self, problem: str, solution: str) -> float:
        total = sum(w * m.get_reward(problem, solution) for m, w in zip(self.members, self.weights))
        return total / sum(self.weights)

    def save(self, path: str | Path) -> None:
        """Each member in its own folder `member_<i>`, so the saved ensemble stands alone."""
        path = Path(path)
        for index, member in enumerate(self.members):
            member.save(path / f"member_{index}")
        write_config(path, {"kind": "ensemble", "weights": self.weights})

    @classmethod
    @legacy_placement
    def load(cls, path: str | Path, *, placement: Placement = Placement()) -> EnsembleRewardModel:
        config = read_config(path, "ensemble")
        return cls([Path(path, f"member_{i}") for i in range(len(config["weights"]))], config["weights"],
                   placement=placement)


LOADERS = {"process": ProcessRewardModel, "outcome": OutcomeRewardModel, "combined": CombinedRewardModel,
           "ensemble": EnsembleRewardModel}


@legacy_placement
def load_reward_model(path: str | Path, *, placement: Placement = Placement()):
    """Any saved reward model, by the `kind` in its reward_config.json, on `placement` (prmflow.devices); or
    anything the server can score: a PRM folder of another format, a registered model URI, a served PRM's URL
    (scoring.load.load: a PRM answering `get_reward` and `get_rewards_for_steps` too).

    A pipeline PRM directory (prm_config.json only, never `.save`d) loads as a tag-mode ProcessRewardModel.
    """
    if ":/" in str(path):
        return load(path, placement=placement)
    if not Path(path, REWARD_CONFIG).exists():
        return ProcessRewardModel(path, placement=placement) if Path(path, PRM_CONFIG).exists() else \
            load(path, placement=placement)
    kind = read_config(path).get("kind")
    if kind not in LOADERS:
        raise ValueError(f"{Path(path, REWARD_CONFIG)}: kind: {kind!r} is not one of {list(LOADERS)}")
    return LOADERS[kind].load(path, placement=placement)


def shaped_reward(base_reward: float, *, confidence: float = 1.0, complexity: float = 0.0,
                  complexity_penalty: float = 0.01) -> float:
    """A shaping hook: `confidence * base_reward - complexity_penalty * complexity`.

    `confidence` in [0, 1] shrinks a reward the scorer is unsure of toward 0 (no signal either way);
    `complexity` >= 0 (e.g. the number of steps) costs `complexity_penalty` per unit, so a policy
    gains nothing by padding a solution with steps. Defaults leave the reward unchanged but for
    that small cost; replace this function to shape differently.
    """
    if not 0.0 <= confidence <= 1.0:
        raise ValueError(f"confidence: must be in [0, 1], got {confidence}")
    if complexity < 0:
        raise ValueError(f"complexity: must be >= 0, got {complexity}")
    return confidence * base_reward - complexity_penalty * complexity


def _text(message) -> str:
    """A plain completion, or the content of the last message of a conversational one (TRL passes both)."""
    if isinstance(message, str):
        return message
    return message[-1]["content"]


def reward_function(model, shaping=None):
    """`reward_fn(prompts, completions, **kwargs) -> list[float | None]`, the signature TRL's online trainers call.

    The prompt is the problem, the completion the solution; `shaping(reward, completion)` may adjust each.
    A completion the model cannot score at all (UnscorableError) gets None: TRL skips it (NaN) instead of
    failing the batch.
    """
    def reward_fn(prompts: list, completions: list, **kwargs) -> list[float | None]:
        rewards = []
        for prompt, completion in zip(prompts, completions):
            try:
                reward = model.get_reward(_text(prompt), _text(completion))
            except UnscorableError:
                rewards.append(None)
                continue
            rewards.append(shaping(reward, _text(completion)) if shaping else reward)
        return rewards

    reward_fn.__name__ = f"prmflow_{type(model).__name__}"  # TRL logs each reward function under its name
    return reward_fn


__all__ = ["load", "ProcessRewardModel", "ZeroShotProcessRewardModel",
           "OutcomeRewardModel", "TrainedOutcomeRewardModel",
           "CombinedRewardModel", "EnsembleRewardModel", "Placement", "UnscorableError", "load_reward_model",
           "reward_function", "shaped_reward", "split_steps"]
