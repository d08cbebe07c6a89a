"""Where the openai policy sends requests and how it authenticates: one or several servers, a Bearer key from
the environment, never a credential in the URL.

    urls, headers = endpoint_auth("http://127.0.0.1:8000/v1,http://127.0.0.1:8001/v1", "VLLM_API_KEY")
    # -> (["http://127.0.0.1:8000/v1/completions", "http://127.0.0.1:8001/v1/completions"],
    #     {"Authorization": "Bearer <the variable's value>"})

The key lives only in the process environment: the params name the variable (`label.api_key_env`), so
nothing the pipeline writes (params in git and dvc.lock, MLflow params and tags, reports) can hold it.
"""

from __future__ import annotations

import os

from prmflow.param_rules import URL_USERINFO, redact_url


def endpoint_urls(endpoint: str) -> list[str]:
    """The `/completions` URLs of `label.endpoint`: one base URL, or several separated by commas."""
    urls = [part.strip().rstrip("/") + "/completions" for part in endpoint.split(",") if part.strip()]
    if not urls:
        raise ValueError("label.endpoint: the openai policy needs the server's base URL (http://host:port/v1)")
    return urls


def endpoint_auth(endpoint: str, api_key_env: str) -> tuple[list[str], dict[str, str]]:
    """(the completions URLs, the request headers) for the OpenAI-compatible servers of `endpoint` (endpoint_urls).

    Raises ValueError when `endpoint` holds a credential (`user:password@host`: an HTTP client would send it as
    Basic auth in place of the Bearer key, and it would be published with the params), or when the variable
    `api_key_env` names is not set. An empty `api_key_env` sends no Authorization header.
    """
    if URL_USERINFO.search(endpoint):
        raise ValueError(f"label.endpoint: {redact_url(endpoint)!r} holds a credential (user:password@); put the "
                         f"key in an environment variable and name it in label.api_key_env")
    headers = {}
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise ValueError(f"label.api_key_env: environment variable {api_key_env} is not set")
        headers["Authorization"] = f"Bearer {key}"
    return endpoint_urls(endpoint), headers
