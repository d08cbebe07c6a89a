"""The served reward model: an MLflow pyfunc that answers the DESIGN.md serving contract.

    POST /invocations
    {"inputs": [{"problem": "...", "steps": ["...", "..."]}], "params": {"aggregation": "min"}}
    -> {"predictions": [{"step_scores": [...], "score": ..., "first_error": ..., "scored_steps": ...}]}

Logged from code (`pyfunc_entry.py`), never pickled. A bad request is answered 400 with a
message that names the field.
"""

from __future__ import annotations

import mlflow.pyfunc
from pydantic import BaseModel

from prmflow.metrics import AGGREGATIONS, aggregate, predicted_first_error

DEFAULT_AGGREGATION = "min"


class Solution(BaseModel):
    problem: str
    steps: list[str]


class Prediction(BaseModel):
    step_scores: list[float]
    score: float
    first_error: int
    scored_steps: int


def check_solutions(solutions: list[Solution]) -> None:
    """Reject, naming the field, anything the model would score wrongly or silently."""
    for index, solution in enumerate(solutions):
        if not solution.problem.strip():
            raise ValueError(f"inputs[{index}].problem: must be a non-empty string")
        if not solution.steps:
            raise ValueError(f"inputs[{index}].steps: must be a non-empty list of strings")
        for step_index, step in enumerate(solution.steps):
            if not step.strip():
                raise ValueError(f"inputs[{index}].steps[{step_index}]: empty step")


def score_solutions(prm, solutions: list[Solution], aggregation: str, threshold: float) -> list[Prediction]:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"params.aggregation: {aggregation!r} is not one of {list(AGGREGATIONS)}")
    check_solutions(solutions)
    all_scores = prm.score_batch([(s.problem, s.steps) for s in solutions])
    predictions = []
    for index, scores in enumerate(all_scores):
        if not scores:
            raise ValueError(f"inputs[{index}]: the problem and first step do not fit the model context")
        predictions.append(Prediction(
            step_scores=scores,
            score=aggregate(scores, aggregation),
            first_error=predicted_first_error(scores, threshold),
            scored_steps=len(scores),
        ))
    return predictions


class PRMPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from prmflow.modeling import ProcessRewardModel

        self.prm = ProcessRewardModel(context.artifacts["model_dir"])
        self.threshold = float((context.model_config or {}).get("threshold", 0.5))

    def predict(self, context, model_input: list[Solution], params: dict | None = None) -> list[Prediction]:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        aggregation = (params or {}).get("aggregation", DEFAULT_AGGREGATION)
        try:
            return score_solutions(self.prm, model_input, aggregation, self.threshold)
        except ValueError as err:  # answered 400 with the message up front, not buried in a stack trace
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
