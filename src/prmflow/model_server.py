"""A real `mlflow models serve` process on loopback, for tests and the load benchmark.

    with model_server("models:/prm@champion", env, cwd, log_path) as url:
        requests.post(f"{url}/invocations", json=...)

The server is started in its own session and stopped by its process group, so its uvicorn
workers go with it and nothing else is touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def model_server(model_uri: str, env: dict[str, str], cwd: str | Path, log_path: str | Path,
                 ready_timeout: float = 120.0) -> Iterator[str]:
    """Serve `model_uri` (`env` needs MLFLOW_TRACKING_URI and the venv on PATH); yield its base URL."""
    import requests

    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            ["mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1",
             "-p", str(port)],
            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + ready_timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"mlflow models serve exited {proc.returncode}: "
                                       f"{Path(log_path).read_text()[-3000:]}")
                try:
                    if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"mlflow models serve did not answer /ping in {ready_timeout} s")
                time.sleep(0.5)
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn workers, by PID
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
