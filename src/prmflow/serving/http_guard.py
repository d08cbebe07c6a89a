"""The HTTP side of the request rules, for `mlflow models serve`: the body's size, that it is JSON of the
right shape, unknown `params`, short error bodies, and a fast path for `POST /invocations`.

MLflow's scoring server gives a model no hook before it parses the body: a body that is not JSON is
answered with the whole body echoed back, a predict error with the whole request before the message
(`Failed to predict data '...'`), unknown `params` are dropped with a log line, and the pyfunc's
pydantic types answer with a validation dump; and its parsing of a valid body into its input schema
costs more than scoring a small model's candidate. So `install`, called from the pyfunc's `load_context`
in the server process (MLflow 3.17, pinned in the model's requirements; tests/test_serving.py checks it
against a real server), makes the app that `scoring_server.init` builds answer `POST /invocations` with
the scorer's own `answer` (scorer.Scorer.answer): the body is read once, by the same rules as
`prmflow score` (requests.py), a broken rule is answered 400 (413 for the size) with
`{"error_code": ..., "message": "<field path>: <rule>"}` under 1 kB, and a valid body is answered
`{"predictions": [...]}` exactly as MLflow writes a pyfunc's predictions.

The fast path is plain ASGI in front of the app (`_Front`): a request to `/invocations` does not go
through MLflow's timeout middleware (Starlette's `BaseHTTPMiddleware`, which runs every request in a task
group with memory streams), FastAPI's routing and `Request` object, or `asyncio.to_thread`; that per-request
overhead, not the model, was what bounded one-solution throughput (bench/serve_load.py). The same timeout
applies (`MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT`, answered 504 with MLflow's message as a JSON error body); a
request answered 504, or whose client disconnects while it waits, has its jobs still queued dropped from the
scoring loop (batcher.abandoned), not scored for nobody; everything else
(`/ping`, `/health`, `/version`) is MLflow's app.

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

import asyncio
import json
import logging
import sys
import threading

from collections.abc import Callable

from prmflow.serving.batcher import Abandoned, abandoned
from prmflow.serving.requests import RequestError

SERVER_MODULE = "mlflow.pyfunc.scoring_server"
REQUEST_THREADS = 128  # requests in flight at once; they wait on the scoring loop, so threads cost little
# After a body this large, freed memory is handed back to the system (glibc keeps it in its per-thread arenas).
TRIM_AFTER_BYTES = 1_000_000
ERROR_CODES = {400: "INVALID_PARAMETER_VALUE", 413: "REQUEST_LIMIT_EXCEEDED", 415: "INVALID_PARAMETER_VALUE",
               504: "DEADLINE_EXCEEDED"}
TIMEOUT_MESSAGE = "Request processing time exceeded limit"  # MLflow's own 504 body
log = logging.getLogger(__name__)


def error_body(message: str, status: int) -> str:
    return json.dumps({"error_code": ERROR_CODES.get(status, "BAD_REQUEST"), "message": message})


def install(answer: Callable[[bytes, str | None], str]) -> bool:
    """Answer the scoring server's `POST /invocations` in this process with `answer(data, content_type)` (the
    JSON predictions; raises RequestError for a bad request); False where no MLflow scoring server is loaded
    (`prmflow score`, `mlflow.pyfunc.load_model` in a notebook)."""
    if sys.modules.get(SERVER_MODULE) is None:
        return False
    _guard_app_class(answer)
    return True


def answered(answer: Callable[[bytes, str | None], str], data: bytes, content_type: str | None,
             gone: threading.Event | None = None) -> tuple[int, bytes]:
    """(status, JSON body) of one request: 200 with `answer`'s predictions, the RequestError's status with a
    short error body, or 500 with a short body (the traceback goes to the server log, never to the client).
    `gone`, once set, drops the request's jobs still waiting in the scoring loop (batcher.abandoned)."""
    token = abandoned.set(gone)  # this pool thread serves other requests later: reset below
    try:
        return 200, answer(data, content_type).encode()
    except RequestError as err:
        return err.status, error_body(str(err), err.status).encode()
    except Abandoned:
        return 504, error_body(TIMEOUT_MESSAGE, 504).encode()  # nobody reads it: the front answered already
    except Exception:
        log.exception("scoring failed")
        return 500, error_body("the server failed to score this request; its log has the error", 500).encode()
    finally:
        abandoned.reset(token)
        if len(data) > TRIM_AFTER_BYTES:
            _return_free_memory()


def _return_free_memory() -> None:
    """glibc's malloc_trim(0): free heap memory of every arena back to the system, so the server's resident
    memory goes back down after large requests; a no-op off glibc."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


async def _send(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _Front:
    """ASGI, in front of MLflow's app: refuses an ambiguous length, answers `POST /invocations` (module docstring),
    hands everything else to the app."""

    def __init__(self, app, answer: Callable[[bytes, str | None], str], timeout: float):
        self.app, self.answer, self.timeout = app, answer, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict((name.lower(), value) for name, value in scope.get("headers", ()))
        if b"transfer-encoding" in headers and b"content-length" in headers:
            message = "request headers: both Transfer-Encoding and Content-Length; send one"
            return await _send(send, 400, error_body(message, 400).encode())
        if scope["path"] != "/invocations" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        content_type = headers.get(b"content-type")
        gone = threading.Event()
        work = asyncio.get_running_loop().run_in_executor(
            None, answered, self.answer, b"".join(chunks), content_type.decode("latin-1") if content_type else None,
            gone)
        # With the whole body read, the next message is the client's disconnect, if it comes.
        left = asyncio.ensure_future(receive())
        done, _ = await asyncio.wait({work, left}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
        if work not in done:
            gone.set()  # its jobs still queued are dropped, not scored
            if left not in done:
                left.cancel()
                await _send(send, 504, error_body(TIMEOUT_MESSAGE, 504).encode())
            return
        left.cancel()
        status, body = work.result()
        await _send(send, status, body)


def _guard_app_class(answer: Callable[[bytes, str | None], str]) -> None:
    """Make the FastAPI app that `scoring_server.init` is about to build a guarded one (module docstring)."""
    import fastapi
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

    if getattr(fastapi.FastAPI, "prmflow_guarded", False):
        return
    timeout = MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get()

    class GuardedFastAPI(fastapi.FastAPI):
        prmflow_guarded = True

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{"docs_url": None, "redoc_url": None, "openapi_url": None, **kwargs})
            self.router.on_startup.append(_more_request_threads)

        def build_middleware_stack(self):
            # Outside every middleware MLflow adds (its timeout middleware is added after __init__).
            return _Front(super().build_middleware_stack(), answer, timeout)

    fastapi.FastAPI = GuardedFastAPI


async def _more_request_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(REQUEST_THREADS, "prmflow-request"))
