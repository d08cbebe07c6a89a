"""One door to a PRM: `load(source)` reads any supported source and returns a PRM with one method, `score`.

    import prmflow
    prm = prmflow.load("models/prm")                         # a model folder of any format (public_prms)
    prm = prmflow.load("checkpoints/rlhflow-prm", format="chat")
    prm = prmflow.load("models:/prm@champion")               # a registered model, exactly as the server loads it
    prm = prmflow.load("http://127.0.0.1:5001")              # a served PRM (the serving contract, /invocations)
    prm = prmflow.load("http://127.0.0.1:8000/pooling", checkpoint="models/prm")   # vLLM's pooling server of it
    prm.score([("Ava has 3 apples and buys 2. How many?", ["3 + 2 = 5", "The answer is 5."])])
    -> [Prediction(step_scores=[0.93, 0.91], score=0.91, first_error=None, scored_steps=2, truncated_steps=[],
                   dropped_steps=0, has_final_answer=True, reason=None, ...)]

`score(pairs, aggregation)` takes (problem, steps) pairs and gives one predictions.Prediction each: the fields
the server answers, computed by the same function (predictions.predictions), so a folder, a registered model,
the served one and vLLM's server of the same weights give the same step scores; a candidate the scoring server
answers on its own (an empty problem, no step, an empty step, a lone surrogate: candidates.content_fault) gets
that answer from each of them (`score` None, its `reason`). Every PRM also answers
`get_rewards_for_steps(problem, steps)` and `get_reward(problem, text)`, the public reward API's methods.

A folder's `first_error` threshold is `threshold`, else evaluate's choice in `metrics_path` when that file
measured it (directory_threshold), else evaluate.threshold's default; a registered model carries its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from prmflow.config import DEFAULT_AGGREGATION, EvaluateParams, SearchParams
from prmflow.devices import Placement
from prmflow.http_retry import RequestFailed, Retrying
from prmflow.param_rules import redact_url
from prmflow.scoring.candidates import Solution, content_fault
from prmflow.scoring.modeling import Job, score_jobs
from prmflow.scoring.predictions import (
    CombinedPrediction, Pair, Prediction, counted_details, encoded_details, predictions, unscorable,
)
from prmflow.scoring.reward_config import DEFAULT_DELIMITER
from prmflow.sections_evaluation import CombineParams

SERVED_NAME = "prm"  # the model name vLLM's server of a registered PRM answers to (serving/vllm_server.py)


class UnscorableError(ValueError):
    """Nothing of the solution fits the model's context (the problem alone fills it)."""


def split_steps(text: str, delimiter: str, max_steps: int | None = None) -> list[str]:
    """Non-empty, stripped steps of `text`; the first `max_steps` when given."""
    steps = [s.strip() for s in text.split(delimiter) if s.strip()]
    return steps[:max_steps] if max_steps is not None else steps


class PRM:
    """What every loaded PRM answers: `score`, and the reward API's methods built on it."""

    description = ""  # where the PRM runs, for reports
    forward_tokens = 0  # tokens run through the model so far (0 where a server does not say)

    def score(self, pairs: list[Pair], aggregation: str = DEFAULT_AGGREGATION) -> list[Prediction]:
        raise NotImplementedError

    def get_rewards_for_steps(self, problem: str, steps: list[str]) -> list[float]:
        """P(correct) of each scored step (steps past the context are left out)."""
        return self.score([(problem, steps)])[0].step_scores

    def get_reward(self, problem: str, solution: str, aggregation: str = DEFAULT_AGGREGATION) -> float:
        """The solution's score (steps split on newlines); UnscorableError when nothing of it fits."""
        (prediction,) = self.score([(problem, split_steps(solution, DEFAULT_DELIMITER))], aggregation)
        if prediction.score is None:
            raise UnscorableError(f"solution: {prediction.reason or 'nothing of it could be scored'}")
        return prediction.score


class LocalPRM(PRM):
    """A PRM in this process: a format's scorer (public_prms.load_prm), with a trained ORM for a combined model.

    `run_jobs(jobs, count)`: how a format's jobs run; padded batches of `batch_size` by default, the server's
    scoring loop there (serving/batcher.py). `batch_size` also batches a zero-shot judge and the ORM.
    """

    def __init__(self, scorer, *, threshold: float = EvaluateParams.threshold, threshold_source: str = "",
                 outcome=None, process_weight: float = CombineParams.process_weight,
                 outcome_weight: float = CombineParams.outcome_weight, batch_size: int = EvaluateParams.batch_size,
                 run_jobs: Callable[[list[Job], int], list[list[float]]] | None = None, description: str = "",
                 answer_reading: str = EvaluateParams.answer_reading):
        self.scorer, self.outcome, self.answer_reading = scorer, outcome, answer_reading
        self.threshold, self.threshold_source = threshold, threshold_source
        self.process_weight, self.outcome_weight, self.batch_size = process_weight, outcome_weight, batch_size
        self.run_jobs = run_jobs or (lambda jobs, count: score_jobs(self.scorer, jobs, count, self.batch_size))
        self.description = description
        self.forward_tokens = 0

    def score(self, pairs: list[Pair], aggregation: str = DEFAULT_AGGREGATION) -> list[Prediction]:
        """One prediction per pair (a CombinedPrediction with an ORM); a candidate the scoring server answers on
        its own (scored_apart) gets that answer."""
        return scored_apart(pairs, lambda scorable: self._score(scorable, aggregation),
                            CombinedPrediction if self.outcome else Prediction)

    def _score(self, pairs: list[Pair], aggregation: str) -> list[Prediction]:
        scores, details = self.step_scores(pairs)
        outcomes = self.outcome.outcome_batch(pairs, self.batch_size) if self.outcome else None
        return predictions(pairs, scores, details, threshold=self.threshold, aggregation=aggregation,
                           answer_reading=self.answer_reading,
                           outcomes=outcomes, process_weight=self.process_weight, outcome_weight=self.outcome_weight)

    def step_scores(self, pairs: list[Pair]) -> tuple[list[list[float]], list[dict]]:
        """Step scores and, per solution, what was cut, dropped, unscorable or neutralised. prmflow's own PRM
        encodes candidates itself and says exactly; a public format gives scores only, so what it left out is
        counted from them."""
        from prmflow.scoring.tokenization import unicode_fault

        if hasattr(self.scorer, "encode"):
            encoded = self.scorer.encode(pairs)
            jobs = self.scorer.jobs(encoded)
            self.forward_tokens += sum(len(job.input_ids) for job in jobs)
            return self.run_jobs(jobs, len(pairs)), encoded_details(encoded)
        faults = [unicode_fault(problem, steps) for problem, steps in pairs]
        if hasattr(self.scorer, "jobs"):
            jobs = [job for i, (problem, steps) in enumerate(pairs) if not faults[i]
                    for job in self.scorer.jobs(i, problem, steps)]
            self.forward_tokens += sum(len(job.input_ids) for job in jobs)
            scores = self.run_jobs(jobs, len(pairs))
        else:  # a zero-shot judge: its own batching, re-entrant
            scorable = [i for i, fault in enumerate(faults) if not fault]
            scores = [[] for _ in pairs]
            for i, step_scores in zip(scorable, self.scorer.score_batch([pairs[i] for i in scorable],
                                                                        self.batch_size)):
                scores[i] = step_scores
        return scores, counted_details(pairs, scores, faults)

    def score_extensions(self, problem: str, prefix: list[str], last_steps: list[str]) -> list[list[float]] | None:
        """Step scores of `prefix + [step]` for each of `last_steps`, the prefix read once (KV cache:
        modeling.StepTagScorer.score_extensions); None for a format without it or when one does not fit."""
        if not hasattr(self.scorer, "score_extensions"):
            return None
        done = self.scorer.score_extensions(problem, prefix, last_steps)
        if done is None:
            return None
        self.forward_tokens += done[1]
        return done[0]


def scored_apart(pairs: list[Pair], score: Callable[[list[Pair]], list[Prediction]],
                 kind: type[Prediction] = Prediction) -> list[Prediction]:
    """One prediction per pair, in order: `score`'s for the pairs that candidates.content_fault (the scoring
    server's rule) lets through, `unscorable` (of `kind`) with its reason for the others (an empty problem, no
    step, an empty or whitespace-only step, a lone surrogate), so one such candidate never costs its batch-mates
    theirs. Every PRM of `load` answers through it, as the scoring server does."""
    faults = [content_fault(Solution(problem=problem, steps=steps), "")[1] for problem, steps in pairs]
    scorable = [i for i, fault in enumerate(faults) if fault is None]
    out = [unscorable(fault, kind) if fault is not None else None for fault in faults]
    for i, prediction in zip(scorable, score([pairs[i] for i in scorable]) if scorable else []):
        out[i] = prediction
    return out


def invocations_url(url: str) -> str:
    """The serving contract's scoring URL of a served PRM's base URL (`/invocations` added once)."""
    return url.rstrip("/").removesuffix("/invocations") + "/invocations"


class ServedPRM(PRM):
    """A served PRM (`mlflow models serve`, `prmflow reward-server`'s upstream): POST <url>/invocations,
    `batch_size` solutions a request, each request retried by `retrying` (http_retry.Retrying: connection
    errors, timeouts, 429 and 5xx, with exponential backoff and jitter). The one client of the serving contract:
    the reward client (integrations.client.PRMClient) sends its requests through `invoke`. A solution the server
    would answer as unscorable (scored_apart) gets that answer here, without a request."""

    def __init__(self, url: str, *, batch_size: int = SearchParams.batch_size,
                 request_timeout_s: float = SearchParams.request_timeout_s, retrying: Retrying | None = None,
                 error: type[Exception] = RequestFailed):
        import httpx

        self.url = invocations_url(url)
        self.batch_size, self.description = batch_size, f"served at {self.url.removesuffix('/invocations')}"
        self.client = httpx.Client(timeout=request_timeout_s)  # thread-safe: callers' threads share its pool
        self.retrying, self.error = retrying or Retrying(), error

    def score(self, pairs: list[Pair], aggregation: str = DEFAULT_AGGREGATION) -> list[Prediction]:
        return scored_apart(pairs, lambda scorable: [
            Prediction(**prediction) for start in range(0, len(scorable), self.batch_size)
            for prediction in self.invoke([{"problem": problem, "steps": steps}
                                           for problem, steps in scorable[start:start + self.batch_size]],
                                          aggregation)])

    def invoke(self, inputs: list[dict], aggregation: str = DEFAULT_AGGREGATION) -> list[dict]:
        """The contract's predictions (dicts, in order) for one request of `inputs` (each {"problem", "steps"}
        or {"problem", "text"}: serving/requests.py). Raises `error` for a refusal (4xx, at once), no answer
        after the retries, or an answer that is not one prediction per input."""
        _, response = self.retrying.post(self.client, self.url, {"inputs": inputs, "params": {
            "aggregation": aggregation}}, name="PRM endpoint", error=self.error)
        where = f"PRM endpoint {redact_url(self.url)}"
        try:
            predictions = response.json()["predictions"]
        except (ValueError, KeyError, TypeError) as caught:
            raise self.error(f"{where}: not a scoring response ({type(caught).__name__}: {caught}): "
                             f"{self.retrying.shown(response)}") from caught
        if not isinstance(predictions, list) or len(predictions) != len(inputs):
            raise self.error(f"{where}: {len(inputs)} solutions sent, answer holds "
                             f"{len(predictions) if isinstance(predictions, list) else predictions!r:.40}")
        return predictions


class PooledPRM(PRM):
    """vLLM's pooling server of a prmflow PRM (`prmflow serve-vllm`): candidates encoded here exactly as the
    MLflow server encodes them (tokenization.encode_candidate), P(+) at each step tag read there. Each request
    is retried by `retrying` (http_retry.Retrying, as ServedPRM's); a candidate the scoring server answers as
    unscorable (scored_apart) gets that answer here, its batch-mates their scores."""

    def __init__(self, url: str, checkpoint: str | Path, *, threshold: float = EvaluateParams.threshold,
                 request_timeout_s: float = SearchParams.request_timeout_s, retrying: Retrying | None = None):
        import httpx

        from prmflow.devices import transformers_classes
        from prmflow.scoring.tokenization import load_prompt_format

        (auto_tokenizer,) = transformers_classes("AutoTokenizer")  # threads may build scorers at once
        self.url = url.rstrip("/").removesuffix("/pooling") + "/pooling"
        self.format, self.tokenizer = load_prompt_format(checkpoint), auto_tokenizer.from_pretrained(checkpoint)
        self.threshold, self.description = threshold, f"vLLM pooling at {self.url}"
        self.client = httpx.Client(timeout=request_timeout_s)
        self.retrying = retrying or Retrying()

    def score(self, pairs: list[Pair], aggregation: str = DEFAULT_AGGREGATION) -> list[Prediction]:
        """One prediction per pair; raises http_retry.RequestFailed (naming the endpoint) for a refusal, or no
        answer after the retries."""
        return scored_apart(pairs, lambda scorable: self._score(scorable, aggregation))

    def _score(self, pairs: list[Pair], aggregation: str) -> list[Prediction]:
        from prmflow.scoring.tokenization import encode_candidate

        encoded = [encode_candidate(self.tokenizer, self.format, problem, steps) for problem, steps in pairs]
        asked = [i for i, e in enumerate(encoded) if e.num_steps]
        scores: list[list[float]] = [[] for _ in pairs]
        if asked:
            _, response = self.retrying.post(self.client, self.url, {
                "model": SERVED_NAME, "task": "token_classify", "input": [encoded[i].input_ids for i in asked]},
                name="vLLM pooling endpoint", error=RequestFailed)
            for i, item in zip(asked, response.json()["data"]):
                scores[i] = [value for (value,) in item["data"]]
        return predictions(pairs, scores, encoded_details(encoded), threshold=self.threshold, aggregation=aggregation,
                           answer_reading=EvaluateParams.answer_reading)


def directory_threshold(model: str | Path, metrics_path: str | None) -> tuple[float, str]:
    """The first-error threshold for a bare model directory, and where it came from: evaluate's choice in
    `metrics_path` (reports/metrics.json) when that file measured this directory, else evaluate.threshold's
    default.

    The threshold is not written into the directory: it is the train stage's DVC output, and evaluate
    writing into it would make `dvc status` report train as changed.
    """
    if metrics_path and Path(metrics_path).is_file():
        chosen = json.loads(Path(metrics_path).read_text()).get("first_error_threshold")
        if chosen is not None:
            return float(chosen), f"{metrics_path} (chosen by evaluate)"
    default = EvaluateParams.threshold
    return default, f"the default {default} (no evaluate threshold for this directory)"


def load(source: str | Path, *, placement: Placement | None = None, format: str | None = None,
         threshold: float | None = None, metrics_path: str | None = None, checkpoint: str | Path | None = None,
         batch_size: int | None = None, request_timeout_s: float = SearchParams.request_timeout_s,
         retrying: Retrying | None = None) -> PRM:
    """The PRM at `source`: a model folder (its format detected, or `format`: one of config.PRM_FORMATS), a
    registered model URI (`models:/prm@champion`, `runs:/...`: loaded through MLflow as the server loads it,
    its stored threshold and serving config), a served PRM's URL (the serving contract), or vLLM's pooling
    endpoint (a URL ending in /pooling; `checkpoint`: the PRM's folder, whose tokenizer encodes the candidates).

    `placement` (device, dtype): where a folder loads (default: "auto", or PRMFLOW_DEVICE / PRMFLOW_DTYPE when
    set; a stage passes its `model` section's, which the environment does not change); for a registered model
    it replaces the stored one, and PRMFLOW_DEVICE / PRMFLOW_DTYPE override both, as in the server.
    `batch_size`: solutions per forward (a folder) or per request (a served PRM);
    `request_timeout_s`: seconds an endpoint's request may take; `retrying`: how a served PRM's or a pooling
    endpoint's requests are retried (http_retry.Retrying; default: its defaults).
    Raises FileNotFoundError for a folder without config.json, ValueError for an unknown or mismatched format
    or a checkpoint that needs remote code.
    """
    source = str(source)
    if source.startswith(("http://", "https://")):
        if source.rstrip("/").endswith("/pooling"):
            if checkpoint is None:
                raise ValueError(f"{source}: vLLM's pooling endpoint takes token ids: pass checkpoint=<the PRM's "
                                 f"folder> to encode candidates with")
            return PooledPRM(source, checkpoint, threshold=EvaluateParams.threshold if threshold is None else threshold,
                             request_timeout_s=request_timeout_s, retrying=retrying)
        return ServedPRM(source, batch_size=batch_size or SearchParams.batch_size, request_timeout_s=request_timeout_s,
                         retrying=retrying)
    if ":/" in source:
        import dataclasses

        import mlflow.pyfunc

        override = dataclasses.asdict(placement) if placement else None
        local = mlflow.pyfunc.load_model(source, model_config=override).unwrap_python_model().scorer.local
        local.description = f"{source} in process, on {local.scorer.model.device}"
        return local
    from prmflow.scoring.public_prms import load_prm

    placement = placement if placement is not None else Placement().with_env()
    chosen, where = (threshold, "threshold=") if threshold is not None else directory_threshold(source, metrics_path)
    scorer = load_prm(source, format, placement)
    model = scorer.model
    dtype = str(model.dtype).removeprefix("torch.")
    return LocalPRM(scorer, threshold=chosen, threshold_source=where,
                    batch_size=batch_size or EvaluateParams.batch_size,
                    description=f"{Path(source).as_posix()} in process, on {model.device} in {dtype}")
