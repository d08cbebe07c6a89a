"""The one retry policy of every HTTP client in prmflow (the served PRM's, the reward client's, the openai
policy's): exponential backoff with jitter, and error messages that never hold a credential.

    retrying = Retrying(max_retries=5, backoff_s=1.0)
    url, response = retrying.post(httpx.Client(), "http://127.0.0.1:5001/invocations", body,
                                  name="PRM endpoint", error=RequestFailed)
    # -> ("http://127.0.0.1:5001/invocations", <Response [200 OK]>); retrying.retries counts the retries

A connection error, a timeout, 429 or a 5xx is retried `max_retries` times, the k-th retry after
min(MAX_BACKOFF_S, backoff_s * 2**(k-1)) seconds times a jitter in [0.5, 1.5) that spreads out the retries of
concurrent requests; then `error` is raised naming the endpoint, the attempts and the last failure. Any other
refusal (a 4xx: the server will not take this request) raises `error` at once with the server's message.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from prmflow.param_rules import redact_url

MAX_BACKOFF_S = 30.0  # the longest wait between two attempts; also how long a failed endpoint is avoided

# What a remote server's error text may echo of a credential: a URL's userinfo, an Authorization header, a Bearer
# or Basic value, an `api_key` field, a key shaped like OpenAI's / Hugging Face's.
_SECRETS = (
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|token)\s+)?[^\s\"',}]+"), r"\1***"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 ***"),
    (re.compile(r"(?i)([\"']?(?:api[_-]?key|access[_-]?token|password|secret)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
     r"\1***"),
    (re.compile(r"\b(?:sk|hf|pk|rk)[-_][A-Za-z0-9_-]{12,}"), "***"),
)


def scrubbed(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` (an error a remote server or an HTTP library wrote) with anything that looks like a credential
    replaced by `***`: `secrets` (values this process holds, e.g. its API key) wherever they appear, URL userinfo
    (redact_url), Authorization headers, Bearer/Basic values, `api_key=` fields and `sk-...`-shaped keys."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = redact_url(text)
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RequestFailed(RuntimeError):
    """A server refused a request, answered nonsense, or kept failing past the retries: the message names the
    endpoint and the failure, credentials cut out."""


def retryable(status: int) -> bool:
    """Whether an HTTP status may pass on a later attempt: 429 (too many requests) and any 5xx."""
    return status == 429 or status >= 500


@dataclass
class Retrying:
    """How one client retries (module doc). `knob`: the setting an error names for `max_retries`
    (e.g. label.max_retries); `secrets`: values cut out of every message (scrubbed). Thread-safe: one instance
    serves all of a client's request threads, and `retries` counts theirs together."""

    max_retries: int = 5
    backoff_s: float = 1.0
    knob: str = "max_retries"
    secrets: tuple[str, ...] = ()
    retries: int = 0  # retried requests so far, failed ones' too
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _jitter: random.Random = field(default_factory=random.Random, repr=False)  # retry timing only

    def backoff(self, retry: int) -> float:
        """Seconds before the `retry`-th retry (1, 2, ...): doubling from backoff_s, capped, times the jitter."""
        return min(MAX_BACKOFF_S, self.backoff_s * 2 ** (retry - 1)) * (0.5 + self._jitter.random())

    def shown(self, response: httpx.Response) -> str:
        """What an error may quote of a server's answer: 500 characters, credentials cut out."""
        return scrubbed(response.text, self.secrets)[:500].strip()

    def post(self, client: httpx.Client, url: str | Callable[[], str], body: dict, *, name: str,
             error: type[Exception], wanted: str = "answer",
             answered: Callable[[str, bool], None] | None = None) -> tuple[str, httpx.Response]:
        """(the URL that answered, its successful response) for POST `body`. `url`: one URL, or a function that
        picks one for each attempt (then `answered(url, failed)` is told how each attempt ended). Raises `error`
        ("<name> <url> refused the request: HTTP 4xx: ..." or "<name> <url>: no <wanted> after N attempts ...")."""
        failure, where = "", url if isinstance(url, str) else ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                with self._lock:
                    self.retries += 1
                time.sleep(self.backoff(attempt))
            where = url if isinstance(url, str) else url()
            try:
                response = client.post(where, json=body)
            except httpx.TransportError as caught:  # refused, reset, timed out
                failure = f"{type(caught).__name__}: {scrubbed(str(caught), self.secrets)}"
                if answered:
                    answered(where, True)
                continue
            if answered:
                answered(where, retryable(response.status_code))
            if response.is_success:
                return where, response
            failure = f"HTTP {response.status_code}: {self.shown(response)}"
            if not retryable(response.status_code):
                raise error(f"{name} {redact_url(where)} refused the request: {failure}")
        raise error(f"{name} {redact_url(where)}: no {wanted} after {self.max_retries + 1} attempts "
                    f"({self.knob} = {self.max_retries}); last failure: {failure}")
