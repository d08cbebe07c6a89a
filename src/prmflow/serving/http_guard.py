"""The HTTP side of the request rules, for `mlflow models serve`: the body's size, that it is JSON of the
right shape, unknown `params`, and short error bodies.

MLflow's scoring server gives a model no hook before it parses the body: a body that is not JSON is
answered with the whole body echoed back, a predict error with the whole request before the message
(`Failed to predict data '...'`), unknown `params` are dropped with a log line, and the pyfunc's
pydantic types answer with a validation dump. So `install`, called from the pyfunc's `load_context`
in the server process, wraps the server module's `invocations` function (MLflow 3.17, pinned in the
model's requirements; tests/test_serving.py checks it against a real server): every body is checked
here first (scorer.check_body), by the same rules as `prmflow score` (requests.py), and a broken
rule is answered 400 (413 for the size) with `{"error_code": ..., "message": "<field path>: <rule>"}`,
under 1 kB. A valid body then goes to MLflow's own `invocations` unchanged.

The size limit is checked on the body uvicorn has already read: it bounds the parsing and scoring a
request can cause, not the memory it takes to receive it; a proxy in front (e.g. nginx
`client_max_body_size`) bounds that.
"""

from __future__ import annotations

import functools
import json
import sys

from collections.abc import Callable

from prmflow.serving.requests import MAX_MESSAGE_CHARS, RequestError, clip

SERVER_MODULE = "mlflow.pyfunc.scoring_server"
ERROR_CODES = {400: "INVALID_PARAMETER_VALUE", 413: "REQUEST_LIMIT_EXCEEDED", 415: "INVALID_PARAMETER_VALUE"}


def error_body(message: str, status: int) -> str:
    return json.dumps({"error_code": ERROR_CODES.get(status, "BAD_REQUEST"), "message": message})


def install(check_body: Callable[[bytes, str | None], None]) -> bool:
    """Put `check_body(data, content_type)` (raises RequestError) in front of the scoring server's
    `invocations` in this process, once; False where no MLflow scoring server is loaded (`prmflow score`,
    `mlflow.pyfunc.load_model` in a notebook)."""
    server = sys.modules.get(SERVER_MODULE)
    if server is None:
        return False
    from mlflow.exceptions import MlflowException

    original = getattr(server.invocations, "__wrapped__", server.invocations)

    @functools.wraps(original)
    def invocations(data, content_type, model, input_schema):
        try:
            check_body(data, content_type)
        except RequestError as err:
            return server.InvocationsResponse(error_body(str(err), err.status), err.status, "application/json")
        try:
            return original(data, content_type, model, input_schema)
        except MlflowException as err:  # MLflow puts the whole request before the message: keep the message
            err.message = getattr(err, "prmflow_message", None) or clip(err.message, MAX_MESSAGE_CHARS)
            raise

    server.invocations = invocations
    return True
