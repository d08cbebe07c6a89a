"""The served reward model: an MLflow pyfunc that answers the serving contract (docs/serving.md).

    POST /invocations
    {"inputs": [{"problem": "...", "steps": ["...", "..."]}], "params": {"aggregation": "min"}}
    -> {"predictions": [{"step_scores": [...], "score": ..., "first_error": ..., "scored_steps": ...,
                         "truncated_steps": [...], "dropped_steps": ..., "has_final_answer": ..., "reason": null,
                         "steps": null, "split": null}]}

Every candidate is scored on its own: one that does not fit the model context as sent is scored on
what fits and says so (`truncated_steps`: steps cut inside, `dropped_steps`: whole trailing steps
left out), or, when nothing fits, gets `score: null`, `first_error: null`, `step_scores: []` and a
`reason`; it never changes the status or the scores of the others. A solution sent as `text` is
split (candidates.split_text) and the prediction says how (`steps`, `split`). `has_final_answer` says
whether the steps state a final answer (data.answers.states_final_answer, under the `answer_reading`
the model was registered with: evaluate.answer_reading); `score` does not depend on it: the rule for
best-of-N, here and in evaluate's external sets (the same function and reading), is to rank by
(has_final_answer, score).

The model directory is any format prmflow.scoring.public_prms reads (its own trained PRM, or a public
checkpoint registered with `register.scorer`); the contract is the same. A combined model
(`register.model_kind: combined`) carries the trained ORM beside the PRM: each
prediction adds `outcome_score` (the ORM's P(correct) at the last scored step) and `score` becomes
process_weight * aggregate(step_scores) + outcome_weight * outcome_score; `step_scores` and
`first_error` stay the PRM's.

Logged from code (`pyfunc_entry.py`), never pickled. `Scorer.score` is the one function
behind both the server and `prmflow score`, so the two can never answer differently. A bad
request is answered 400 with a message that names the field (requests.py); requests are capped by
size (solutions, total steps, bytes: `ServingConfig`), not by the length of one solution. A candidate whose
content cannot be scored (an empty problem, an empty or marker-only text, an empty step, a lone surrogate:
candidates.content_fault) is no bad request: it is answered on its own, `score: null` with its `reason`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import mlflow.pyfunc

from prmflow.config import DEFAULT_AGGREGATION, Params
from prmflow.devices import Placement
from prmflow.scoring.aggregation import AGGREGATIONS
from prmflow.scoring.load import PRM, LocalPRM, load
from prmflow.scoring.modeling import Job
from prmflow.scoring.predictions import CombinedPrediction, Prediction, unscorable
from prmflow.serving.batcher import ScoringLoop
from prmflow.scoring.candidates import Solution, content_fault, split_text
from prmflow.serving.requests import (
    SHAPE, RequestError, body_text, clip, described, params_from_json, parse_json, solution_from_json, unknown_keys,
)

REGISTERED_THRESHOLD = "the registered model's config (evaluate's choice, stored by register)"
OUTCOME_ARTIFACT = "outcome_model_dir"  # the pyfunc artifact of a combined model's ORM (register.log_prm)


@dataclass(frozen=True)
class ServingConfig:
    """What the served model needs besides its weights; stored as the pyfunc's `model_config`.

    Every field but `prm_format` is a params.yaml knob, with its help and default there: `threshold` and
    `batch_size` (solutions per forward where no scoring loop runs: a zero-shot judge, the ORM) and
    `answer_reading` are evaluate's,
    the request limits, `batch_tokens` and `scoring_threads` register's, the weights combine's (a combined model only), `device` and
    `dtype` model's (PRMFLOW_DEVICE / PRMFLOW_DTYPE override them at load time). Build it with `from_params`.
    """

    threshold: float
    max_solutions_per_request: int
    max_steps_per_request: int
    max_request_bytes: int
    batch_size: int
    batch_tokens: int
    scoring_threads: int
    process_weight: float
    outcome_weight: float
    prm_format: str  # the model directory's public_prms format; "" = detected from the directory
    device: str
    dtype: str
    answer_reading: str  # how `has_final_answer` reads the final answer: strict | flexible

    @classmethod
    def from_params(cls, params: Params, *, threshold: float | None = None, prm_format: str = "",
                    placement: Placement | None = None) -> ServingConfig:
        """The config of `params` (register, evaluate, combine, model); `threshold` (the one evaluate chose)
        and `placement` replace evaluate.threshold and model.device / model.dtype when given."""
        register, placement = params.register, placement or Placement.of(params.model)
        return cls(threshold=params.evaluate.threshold if threshold is None else threshold,
                   max_solutions_per_request=register.max_solutions_per_request,
                   max_steps_per_request=register.max_steps_per_request,
                   max_request_bytes=register.max_request_bytes, batch_size=params.evaluate.batch_size,
                   batch_tokens=register.batch_tokens,
                   scoring_threads=register.scoring_threads, process_weight=params.combine.process_weight,
                   outcome_weight=params.combine.outcome_weight, prm_format=prm_format, device=placement.device,
                   dtype=placement.dtype, answer_reading=params.evaluate.answer_reading)

    @classmethod
    def from_model_config(cls, config: dict | None) -> ServingConfig:
        """A stored config; a key it lacks (a model registered before that knob existed) takes the default."""
        known = set(cls.__dataclass_fields__)
        stored = {key: value for key, value in (config or {}).items() if key in known}
        return dataclasses.replace(cls.from_params(Params()), **stored)

    @property
    def placement(self) -> Placement:
        """Where the model loads (before PRMFLOW_DEVICE / PRMFLOW_DTYPE)."""
        return Placement(self.device, self.dtype)


def check_count(count: int, config: ServingConfig) -> None:
    if not count:
        raise RequestError("inputs: must be a non-empty list of solutions")
    if count > config.max_solutions_per_request:
        raise RequestError(f"inputs: {count} solutions, more than the limit of "
                           f"{config.max_solutions_per_request} per request (register.max_solutions_per_request)")


def check_request(solutions: list[Solution], aggregation: str,
                  config: ServingConfig) -> list[tuple[list[str], str | None]]:
    """Each solution's (steps, fault) (candidates.content_fault: a fault is that candidate's own `reason`); raises
    RequestError for a rule the whole request breaks (aggregation, count, total steps)."""
    if aggregation not in AGGREGATIONS:
        raise RequestError(f"params.aggregation: {aggregation!r} is not one of {list(AGGREGATIONS)}")
    check_count(len(solutions), config)
    checked = [content_fault(solution, "") for solution in solutions]
    total = sum(len(steps) for steps, _ in checked)
    if total > config.max_steps_per_request:
        raise RequestError(f"inputs: {total} steps in all, more than the limit of {config.max_steps_per_request} "
                           f"per request (register.max_steps_per_request)")
    return checked


def score_solutions(prm: PRM, solutions: list[Solution], aggregation: str = DEFAULT_AGGREGATION,
                    checked: list[tuple[list[str], str | None]] | None = None) -> list[Prediction]:
    """The contract's prediction of each solution by `prm` (prmflow.load's), in order: a solution that cannot be
    scored (candidates.content_fault; `checked`: its (steps, fault) per solution, when already computed) gets
    `score: null` and its `reason`, its batch-mates their own scores, with how a `text` was split."""
    checked = checked if checked is not None else [content_fault(solution, "") for solution in solutions]
    scorable = [index for index, (_, fault) in enumerate(checked) if fault is None]
    scored = prm.score([(solutions[i].problem, checked[i][0]) for i in scorable], aggregation) if scorable else []
    kind = CombinedPrediction if getattr(prm, "outcome", None) is not None else Prediction
    predictions: list[Prediction] = [None if fault is None else unscorable(fault, kind) for _, fault in checked]
    for index, prediction in zip(scorable, scored):
        solution, steps = solutions[index], checked[index][0]
        predictions[index] = prediction if solution.text is None else prediction.model_copy(
            update={"steps": steps, "split": split_text(solution.text)[1]})
    return predictions


def read_body(data: bytes, content_type: str | None, config: ServingConfig) -> tuple[list[Solution], str]:
    """(the solutions, the aggregation) of a raw request; RequestError (with its HTTP status) for the first rule
    the body breaks. The rules on each solution's content are Scorer.score's (check_request)."""
    if len(data) > config.max_request_bytes:
        raise RequestError(f"request body: {len(data)} bytes, more than the limit of {config.max_request_bytes} "
                           f"(register.max_request_bytes); send fewer solutions per request", status=413)
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        raise RequestError(f"Content-Type: must be application/json, got {clip(str(content_type))}; send {SHAPE}",
                           status=415)
    body = parse_json(body_text(data), "request body", f"; send {SHAPE}")
    if not isinstance(body, dict) or "inputs" not in body:
        got = f"an object with keys {[clip(str(k)) for k in list(body)[:5]]}" if isinstance(body, dict) else \
            described(body)
        raise RequestError(f"request body: must be an object of the form {SHAPE}; got {got}")
    unknown_keys("request body", body, ("inputs", "params"))
    aggregation = params_from_json(body.get("params"), AGGREGATIONS, DEFAULT_AGGREGATION)
    if not isinstance(body["inputs"], list):
        raise RequestError(f"inputs: must be a list of solutions, got {described(body['inputs'])}; send {SHAPE}")
    check_count(len(body["inputs"]), config)  # before checking each of too many
    return [solution_from_json(value, f"inputs[{i}]") for i, value in enumerate(body["inputs"])], aggregation


class Scorer:
    """A loaded PRM (and, for a combined model, the trained ORM) plus its serving config: validates a
    request and scores it through `local` (scoring.load.LocalPRM), its jobs in the process's scoring loop."""

    def __init__(self, prm, config: ServingConfig, *, outcome=None, threshold_source: str = REGISTERED_THRESHOLD):
        self.prm = prm  # the format's scorer (public_prms.load_prm)
        self.config = config
        self.outcome = outcome  # a rewards.TrainedOutcomeRewardModel, or None for the PRM alone
        self.threshold_source = threshold_source  # where config.threshold came from, for `prmflow score`
        # The process's one scoring loop, for formats that run as jobs (all but a zero-shot judge).
        self.loop = ScoringLoop(prm, config.batch_tokens, config.scoring_threads) if hasattr(prm, "jobs") else None
        self.local = LocalPRM(prm, threshold=config.threshold, threshold_source=threshold_source, outcome=outcome,
                              process_weight=config.process_weight, outcome_weight=config.outcome_weight,
                              batch_size=config.batch_size, run_jobs=self._run_jobs, answer_reading=config.answer_reading,
                              description=f"in process, on {config.device}")

    def answer(self, data: bytes, content_type: str | None) -> str:
        """The JSON answer to a raw /invocations request, as MLflow writes a pyfunc's predictions; RequestError
        for a bad request."""
        predictions = self.score(*read_body(data, content_type, self.config))
        return json.dumps({"predictions": [prediction.model_dump() for prediction in predictions]})

    def score(self, solutions: list[Solution], aggregation: str = DEFAULT_AGGREGATION) -> list[Prediction]:
        """One prediction per solution, in order (score_solutions); RequestError for a rule the whole request
        breaks (check_request)."""
        return score_solutions(self.local, solutions, aggregation, check_request(solutions, aggregation, self.config))

    def _run_jobs(self, jobs: list[Job], count: int) -> list[list[float]]:
        """Scores per solution (its jobs' in order) from the scoring loop."""
        scores: list[list[float]] = [[] for _ in range(count)]
        for job, job_scores in zip(jobs, self.loop.score(jobs)):
            scores[job.solution] += job_scores
        return scores


class PRMPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        """Load the PRM (and ORM) on the device and dtype of the stored config, or of PRMFLOW_DEVICE /
        PRMFLOW_DTYPE when set, so one registered model serves on a GPU or a CPU unchanged."""
        from prmflow.scoring.rewards import TrainedOutcomeRewardModel
        from prmflow.serving.http_guard import install

        config = ServingConfig.from_model_config(context.model_config)
        placement = config.placement.with_env()
        config = dataclasses.replace(config, device=placement.device, dtype=placement.dtype)
        outcome_dir = context.artifacts.get(OUTCOME_ARTIFACT)
        outcome = TrainedOutcomeRewardModel(outcome_dir, placement=placement) if outcome_dir else None
        prm = load(context.artifacts["model_dir"], placement=placement, format=config.prm_format or None,
                   threshold=config.threshold)
        self.scorer = Scorer(prm.scorer, config, outcome=outcome)
        install(self.scorer.answer)  # in a scoring server only

    def predict(self, context, model_input: list[Solution], params: dict | None = None) -> list[Prediction]:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        aggregation = (params or {}).get("aggregation", DEFAULT_AGGREGATION)
        try:
            return self.scorer.score(model_input, aggregation)
        except RequestError as err:  # answered 400 with the message alone (http_guard), not a stack trace
            error = MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE)
            error.prmflow_message = str(err)
            raise error from None


def load_scorer(model: str, *, threshold: float | None = None, metrics_path: str | None = None,
                placement: Placement | None = None) -> Scorer:
    """The scorer of a registered model (`models:/prm@champion`, `runs:/...`) or of a model directory.

    A model URI is loaded through MLflow exactly as the server loads it, with the serving config
    stored beside it (its threshold: the one evaluate chose); a directory is loaded by `prmflow.load` (its
    format detected; `threshold`, else `scoring.load.directory_threshold(model, metrics_path)`), and
    `Scorer.local` scores as what `prmflow.load` gives for the same source.
    `Scorer.threshold_source` says which threshold applied. `placement` replaces the stored one (a directory's
    default: model.device / model.dtype's); PRMFLOW_DEVICE / PRMFLOW_DTYPE override both.
    """
    if ":/" in model:
        override = dataclasses.asdict(placement) if placement else None
        return mlflow.pyfunc.load_model(model, model_config=override).unwrap_python_model().scorer
    placement = (placement or Placement()).with_env()
    prm = load(model, placement=placement, threshold=threshold, metrics_path=metrics_path)
    return Scorer(prm.scorer, ServingConfig.from_params(Params(), threshold=prm.threshold, placement=placement),
                  threshold_source="--threshold" if threshold is not None else prm.threshold_source)
