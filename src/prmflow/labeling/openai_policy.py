"""The `openai` rollout policy: OpenAI-compatible `/v1/completions` servers (vLLM to scale out).

One request per completion. The policy owns one pool of `concurrency` request threads, shared by
every caller: the label stage labels `concurrency` problems at once through it (engine.label_many,
`parallel_problems`), so the servers see `concurrency` requests in flight until the work runs out,
not the few that one trajectory's prefixes make. `label.endpoint` may list several servers
(comma-separated); each request, and each retry, goes to the one with the fewest requests in
flight. One prompt per request because every such server takes that: `transformers serve` refuses a
list of prompts and ignores `n`, and vLLM batches concurrent requests itself (continuous batching),
so lists would gain nothing there. Prompts and completions use the text format of
completion_text.py, as the transformers policy does. Each request carries a seed drawn from the
caller's stream, in prompt order before anything is sent, so a run is reproducible where the server
honours `seed` (vLLM per request; `transformers serve` reseeds its one global generator, so only at
concurrency 1). `send_seed: false` sends none (vLLM's CPU build dies on a seeded request whose prefill
is chunked, unless started with --no-enable-chunked-prefill: docs/labeling-at-scale.md).

Connection errors, timeouts, 429 and 5xx are retried up to `max_retries` times with exponential
backoff and jitter (http_retry.Retrying, the one retry policy of prmflow's clients); any other answer
fails at once with the endpoint, status and the server's message. The true first error of a real model is unknown: `first_slip` is None.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from prmflow.config import LabelParams
from prmflow.http_retry import MAX_BACKOFF_S, Retrying
from prmflow.labeling.completion_text import finish, finish_step, prompt_text
from prmflow.labeling.credentials import endpoint_auth
from prmflow.labeling.policy import Continuation

# A model that follows the prompt format starts the next problem here, and nothing after it is
# part of the answer, so the server may stop. Servers differ on whether the stop string comes
# back in the text (vLLM drops it, `transformers serve` keeps it): it is cut off below.
STOP = "\nQuestion:"


class EndpointError(RuntimeError):
    """The server refused a request, answered nonsense, or kept failing past `label.max_retries`."""


class OpenAIPolicy:
    """The server(s) at `params.endpoint`, with the `label` section's openai-policy knobs (model_name,
    max_new_tokens, temperature, concurrency, request_timeout_s, max_retries, retry_backoff_s, api_key_env,
    send_seed). Raises ValueError (endpoint_auth) for a credential in the endpoint or an unset API key variable."""

    name = "openai"

    def __init__(self, params: LabelParams):
        self.urls, headers = endpoint_auth(params.endpoint, params.api_key_env)
        # The key's value, cut out of any error text a server sends back (one may echo the request's headers).
        self.retrying = Retrying(params.max_retries, params.retry_backoff_s, knob="label.max_retries",
                                 secrets=tuple(value.split(" ", 1)[-1] for value in headers.values()))
        concurrency = params.concurrency
        # One client (thread-safe, keeps connections alive) with as many connections as requests in flight.
        self.client = httpx.Client(headers=headers, timeout=params.request_timeout_s,
                                   limits=httpx.Limits(max_connections=concurrency))
        self.model_name, self.max_new_tokens, self.temperature = (params.model_name, params.max_new_tokens,
                                                                  params.temperature)
        self.concurrency = concurrency
        self.send_seed = params.send_seed
        self.answer_reading = params.answer_reading
        # Every request of every caller goes through this one pool: `concurrency` in flight in all.
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="openai-request")
        self.parallel_problems = concurrency  # each problem keeps >= 1 request waiting: the pool stays full
        self._lock = threading.Lock()  # the counters below are updated from the request threads
        self.in_flight = dict.fromkeys(self.urls, 0)
        self.failed_at = dict.fromkeys(self.urls, float("-inf"))  # time.monotonic() of its last retryable failure
        self.generate_calls = 0  # requests answered with a completion
        self.generated_tokens = 0  # from the responses' `usage`, where the server reports it

    @property
    def retries(self) -> int:
        """Retried requests so far, counted as they happen, failed requests' too."""
        return self.retrying.retries

    def sample_trajectory(self, problem: dict, rng: random.Random) -> Continuation:
        return self.complete(problem, [[]], rng)[0]

    def complete(self, problem: dict, prefixes: list[list[str]], rng: random.Random) -> list[Continuation]:
        out = []
        for text, tokens in self._complete_all(problem, prefixes, rng, [STOP]):
            steps, answer = finish(text.split(STOP)[0], self.answer_reading)
            out.append(Continuation(steps=steps, final_answer=answer, first_slip=None, tokens=tokens))
        return out

    def next_steps(self, problem: dict, prefixes: list[list[str]], rng: random.Random) -> list[Continuation]:
        """One step per prefix: the server stops at the line end (kept or not, the first line is the step)."""
        out = []
        for text, tokens in self._complete_all(problem, prefixes, rng, [STOP, "\n"]):
            step, answer, finished = finish_step(text.split(STOP)[0], self.answer_reading)
            out.append(Continuation(steps=step, final_answer=answer, first_slip=None, finished=finished,
                                    tokens=tokens))
        return out

    def _complete_all(self, problem: dict, prefixes: list[list[str]], rng: random.Random,
                      stop: list[str]) -> list[tuple[str, int]]:
        """(generated text, generated tokens) of every prefix through the shared pool; seeds drawn in prefix order."""
        jobs = [(prompt_text(problem, prefix), rng.getrandbits(31)) for prefix in prefixes]
        futures = [self._pool.submit(self._request, prompt, seed, stop) for prompt, seed in jobs]
        try:
            return [future.result() for future in futures]
        finally:  # after a failure send nothing more of this batch; requests in flight end on their own
            for future in futures:
                future.cancel()

    def _pick_url(self) -> str:
        """The endpoint with the fewest requests in flight (the first on a tie), among those whose last answer was
        not a failure in the last MAX_BACKOFF_S seconds if there are any; counted as one more in flight."""
        with self._lock:
            now = time.monotonic()
            url = min(self.urls, key=lambda u: (now - self.failed_at[u] < MAX_BACKOFF_S, self.in_flight[u]))
            self.in_flight[url] += 1
        return url

    def _answered(self, url: str, failed: bool) -> None:
        with self._lock:
            self.in_flight[url] -= 1
            self.failed_at[url] = time.monotonic() if failed else float("-inf")

    def _request(self, prompt: str, seed: int, stop: list[str]) -> tuple[str, int]:
        """(generated text, generated tokens) for one prompt."""
        body = {"prompt": prompt, "max_tokens": self.max_new_tokens, "temperature": self.temperature, "stop": stop}
        if self.send_seed:
            body["seed"] = seed
        if self.model_name:
            body["model"] = self.model_name
        url, response = self.retrying.post(self.client, self._pick_url, body, name="label.endpoint",
                                           error=EndpointError, wanted="completion", answered=self._answered)
        text, tokens = self._read(url, response)
        with self._lock:
            self.generate_calls += 1
            self.generated_tokens += tokens
        return text, tokens

    def _read(self, url: str, response: httpx.Response) -> tuple[str, int]:
        try:
            body = response.json()
            text = body["choices"][0]["text"]
            tokens = (body.get("usage") or {}).get("completion_tokens") or 0
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
            raise EndpointError(f"label.endpoint {url}: not a completions response "
                                f"({type(error).__name__}: {error}): {self.retrying.shown(response)}") from error
        if not isinstance(text, str):
            raise EndpointError(f"label.endpoint {url}: choices[0].text is not a string: {self.retrying.shown(response)}")
        return text, int(tokens)
