"""The served reward model: an MLflow pyfunc that answers the DESIGN.md serving contract.

    POST /invocations
    {"inputs": [{"problem": "...", "steps": ["...", "..."]}], "params": {"aggregation": "min"}}
    -> {"predictions": [{"step_scores": [...], "score": ..., "first_error": ..., "scored_steps": ...}]}

A combined model (`register.model_kind: combined`) carries the trained ORM beside the PRM: each
prediction adds `outcome_score` (the ORM's P(correct) at the last scored step) and `score` becomes
process_weight * aggregate(step_scores) + outcome_weight * outcome_score; `step_scores` and
`first_error` stay the PRM's.

Logged from code (`pyfunc_entry.py`), never pickled. `Scorer.score` is the one function
behind both the server and `prmflow score`, so the two can never answer differently. A bad
request is answered 400 with a message that names the field; solutions longer than the model
context lose whole trailing steps and `scored_steps` says how many were scored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import mlflow.pyfunc
from pydantic import BaseModel

from prmflow.model.aggregation import (
    AGGREGATIONS,
    aggregate,
    combine,
    predicted_first_error,
)

DEFAULT_AGGREGATION = "min"
OUTCOME_ARTIFACT = "outcome_model_dir"  # the pyfunc artifact of a combined model's ORM (register.log_prm)


class Solution(BaseModel):
    problem: str
    steps: list[str]


class Prediction(BaseModel):
    step_scores: list[float]
    score: float
    first_error: int
    scored_steps: int


class CombinedPrediction(Prediction):
    """A combined model's answer: `score` is the weighted combination, `outcome_score` the ORM's."""

    outcome_score: float


@dataclass(frozen=True)
class ServingConfig:
    """What the served model needs besides its weights; stored as the pyfunc's `model_config`."""

    threshold: float = 0.5
    max_solutions_per_request: int = 64
    max_steps_per_solution: int = 64
    batch_size: int = 32
    process_weight: float = 0.7  # a combined model only: score = process_weight * aggregate + outcome_weight * ORM
    outcome_weight: float = 0.3
    device: str = "auto"  # where the model loads (prmflow.devices); PRMFLOW_DEVICE overrides it at load time
    dtype: str = "auto"   # its precision; PRMFLOW_DTYPE overrides it

    @classmethod
    def from_model_config(cls, config: dict | None) -> ServingConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in (config or {}).items() if k in known})


def check_request(solutions: list[Solution], aggregation: str, config: ServingConfig) -> None:
    """Reject, naming the field, anything the model would score wrongly, silently or too slowly."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"params.aggregation: {aggregation!r} is not one of {list(AGGREGATIONS)}")
    if not solutions:
        raise ValueError("inputs: must be a non-empty list of solutions")
    if len(solutions) > config.max_solutions_per_request:
        raise ValueError(f"inputs: {len(solutions)} solutions, more than the limit of "
                         f"{config.max_solutions_per_request} per request")
    for index, solution in enumerate(solutions):
        if not solution.problem.strip():
            raise ValueError(f"inputs[{index}].problem: must be a non-empty string")
        if not solution.steps:
            raise ValueError(f"inputs[{index}].steps: must be a non-empty list of strings")
        if len(solution.steps) > config.max_steps_per_solution:
            raise ValueError(f"inputs[{index}].steps: {len(solution.steps)} steps, more than the limit of "
                             f"{config.max_steps_per_solution} per solution")
        for step_index, step in enumerate(solution.steps):
            if not step.strip():
                raise ValueError(f"inputs[{index}].steps[{step_index}]: empty step")


class Scorer:
    """A loaded PRM (and, for a combined model, the trained ORM) plus its serving config: validates a
    request and scores it in padded batches."""

    def __init__(self, prm, config: ServingConfig, outcome=None):
        self.prm = prm
        self.config = config
        self.outcome = outcome  # a rewards.TrainedOutcomeRewardModel, or None for the PRM alone

    def score(self, solutions: list[Solution], aggregation: str = DEFAULT_AGGREGATION) -> list[Prediction]:
        check_request(solutions, aggregation, self.config)
        pairs = [(s.problem, s.steps) for s in solutions]
        all_scores = self.prm.score_batch(pairs, self.config.batch_size)
        outcomes = self.outcome.outcome_batch(pairs, self.config.batch_size) if self.outcome else None
        predictions = []
        for index, scores in enumerate(all_scores):
            if not scores or (outcomes is not None and outcomes[index] is None):
                raise ValueError(f"inputs[{index}]: the problem and first step do not fit the model context")
            fields = {"step_scores": scores, "score": aggregate(scores, aggregation),
                      "first_error": predicted_first_error(scores, self.config.threshold), "scored_steps": len(scores)}
            if outcomes is None:
                predictions.append(Prediction(**fields))
                continue
            fields["score"] = combine(fields["score"], outcomes[index], self.config.process_weight,
                                      self.config.outcome_weight)
            predictions.append(CombinedPrediction(**fields, outcome_score=outcomes[index]))
        return predictions


class PRMPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        """Load the PRM (and ORM) on the device and dtype of the stored config, or of PRMFLOW_DEVICE /
        PRMFLOW_DTYPE when set, so one registered model serves on a GPU or a CPU unchanged."""
        from prmflow.devices import placement_from_env
        from prmflow.model.modeling import ProcessRewardModel
        from prmflow.model.rewards import TrainedOutcomeRewardModel

        config = ServingConfig.from_model_config(context.model_config)
        device, dtype = placement_from_env(config.device, config.dtype)
        config = dataclasses.replace(config, device=device, dtype=dtype)
        outcome_dir = context.artifacts.get(OUTCOME_ARTIFACT)
        self.scorer = Scorer(ProcessRewardModel(context.artifacts["model_dir"], device, dtype), config,
                             TrainedOutcomeRewardModel(outcome_dir, device, dtype=dtype) if outcome_dir else None)

    def predict(self, context, model_input: list[Solution], params: dict | None = None) -> list[Prediction]:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        aggregation = (params or {}).get("aggregation", DEFAULT_AGGREGATION)
        try:
            return self.scorer.score(model_input, aggregation)
        except ValueError as err:  # answered 400 with the message up front, not buried in a stack trace
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None


def load_scorer(model: str, threshold: float | None = None, placement: tuple[str, str] | None = None) -> Scorer:
    """The scorer of a registered model (`models:/prm@champion`, `runs:/...`) or of a model directory.

    A model URI is loaded through MLflow exactly as the server loads it, with the serving config
    stored beside it; `threshold` only applies to a bare directory, which has none. `placement`
    (device, dtype) replaces the stored ones; PRMFLOW_DEVICE / PRMFLOW_DTYPE override both.
    """
    if ":/" in model:
        override = dict(zip(("device", "dtype"), placement)) if placement else None
        return mlflow.pyfunc.load_model(model, model_config=override).unwrap_python_model().scorer
    from prmflow.devices import placement_from_env
    from prmflow.model.modeling import ProcessRewardModel

    device, dtype = placement_from_env(*(placement or ("auto", "auto")))
    return Scorer(ProcessRewardModel(model, device, dtype),
                  ServingConfig(threshold=0.5 if threshold is None else threshold, device=device, dtype=dtype))
