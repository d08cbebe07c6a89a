"""The HTTP side of the request rules, for `mlflow models serve`: the body's size, that it is JSON of the
right shape, unknown `params`, and short error bodies.

MLflow's scoring server gives a model no hook before it parses the body: a body that is not JSON is
answered with the whole body echoed back, a predict error with the whole request before the message
(`Failed to predict data '...'`), unknown `params` are dropped with a log line, and the pyfunc's
pydantic types answer with a validation dump; and its parsing of a valid body into its input schema
costs more than scoring a small model's candidate. So `install`, called from the pyfunc's `load_context`
in the server process, replaces the server module's `invocations` function (MLflow 3.17, pinned in the
model's requirements; tests/test_serving.py checks it against a real server) with the scorer's own
answer (scorer.Scorer.answer): the body is read once, by the same rules as `prmflow score`
(requests.py), a broken rule is answered 400 (413 for the size) with
`{"error_code": ..., "message": "<field path>: <rule>"}` under 1 kB, and a valid body is answered
`{"predictions": [...]}` exactly as MLflow writes a pyfunc's predictions.

The size limit is checked on the body uvicorn has already read: it bounds the parsing and scoring a
request can cause, not the memory it takes to receive it; a proxy in front (e.g. nginx
`client_max_body_size`) bounds that.

The FastAPI app MLflow builds is made after the model loads, inside `scoring_server.init`, which imports
`fastapi.FastAPI` when it runs: `install` puts a subclass there first, so the app is built without the
interactive docs (`/docs`, `/redoc`, `/openapi.json`: nothing a scoring client needs, and a map of the
server for anyone else), refuses a request that carries both `Transfer-Encoding` and `Content-Length`
(RFC 9112 6.3: a request-smuggling vector behind proxies that read the other header) with a short 400,
and runs `invocations` in a pool of `REQUEST_THREADS` threads instead of asyncio's default
min(32, cores + 4), so that many concurrent requests can wait together on the one scoring loop
(batcher.py) and share its batches. uvicorn has no timeout for a client that sends its headers slowly:
put a proxy with one (nginx `client_header_timeout`) in front of a server reachable by others.
"""

from __future__ import annotations

import functools
import json
import sys

from collections.abc import Callable

from prmflow.serving.requests import RequestError

SERVER_MODULE = "mlflow.pyfunc.scoring_server"
REQUEST_THREADS = 128  # requests in flight at once; they wait on the scoring loop, so threads cost little
# After a body this large, freed memory is handed back to the system (glibc keeps it in its per-thread arenas).
TRIM_AFTER_BYTES = 1_000_000
ERROR_CODES = {400: "INVALID_PARAMETER_VALUE", 413: "REQUEST_LIMIT_EXCEEDED", 415: "INVALID_PARAMETER_VALUE"}


def error_body(message: str, status: int) -> str:
    return json.dumps({"error_code": ERROR_CODES.get(status, "BAD_REQUEST"), "message": message})


def install(answer: Callable[[bytes, str | None], str]) -> bool:
    """Answer the scoring server's `invocations` in this process with `answer(data, content_type)` (the JSON
    predictions; raises RequestError for a bad request), once; False where no MLflow scoring server is loaded
    (`prmflow score`, `mlflow.pyfunc.load_model` in a notebook)."""
    server = sys.modules.get(SERVER_MODULE)
    if server is None:
        return False
    original = getattr(server.invocations, "__wrapped__", server.invocations)

    @functools.wraps(original)
    def invocations(data, content_type, model, input_schema):
        try:
            return server.InvocationsResponse(answer(data, content_type), 200, "application/json")
        except RequestError as err:
            return server.InvocationsResponse(error_body(str(err), err.status), err.status, "application/json")
        finally:
            if len(data) > TRIM_AFTER_BYTES:
                _return_free_memory()

    server.invocations = invocations
    _guard_app_class()
    return True


def _return_free_memory() -> None:
    """glibc's malloc_trim(0): free heap memory of every arena back to the system, so the server's resident
    memory goes back down after large requests; a no-op off glibc."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _RefuseAmbiguousLength:
    """ASGI middleware: a request with both Transfer-Encoding and Content-Length is answered 400."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        names = {name.lower() for name, _ in scope.get("headers", ())} if scope["type"] == "http" else set()
        if {b"transfer-encoding", b"content-length"} <= names:
            body = error_body("request headers: both Transfer-Encoding and Content-Length; send one", 400).encode()
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _guard_app_class() -> None:
    """Make the FastAPI app that `scoring_server.init` is about to build a guarded one (module docstring)."""
    import fastapi

    if getattr(fastapi.FastAPI, "prmflow_guarded", False):
        return

    class GuardedFastAPI(fastapi.FastAPI):
        prmflow_guarded = True

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{"docs_url": None, "redoc_url": None, "openapi_url": None, **kwargs})
            self.add_middleware(_RefuseAmbiguousLength)
            self.router.on_startup.append(_more_request_threads)

    fastapi.FastAPI = GuardedFastAPI


async def _more_request_threads() -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(REQUEST_THREADS, "prmflow-request"))
