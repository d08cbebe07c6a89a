"""Real server processes on loopback (`mlflow models serve`, `prefect server`), for tests and benchmarks.

Kept in tests/, not in the package, so registered models (which carry the package as code) do not carry it;
bench scripts put tests/ on sys.path.

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


def stop_process_group(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM to the process group started with `start_new_session=True` (the process and its children)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


@contextlib.contextmanager
def loopback_process(cmd: list[str], health_url: str, env: dict[str, str], cwd: str | Path | None,
                     log_path: str | Path, ready_timeout: float = 120.0) -> Iterator[subprocess.Popen]:
    """Start `cmd` in its own session, wait until `health_url` answers 200, stop it by process group on exit."""
    import requests

    name = " ".join(cmd[:3])
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + ready_timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited {proc.returncode}: {Path(log_path).read_text()[-3000:]}")
                try:
                    if requests.get(health_url, timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} did not answer {health_url} in {ready_timeout} s")
                time.sleep(0.5)
            yield proc
        finally:
            stop_process_group(proc)


@contextlib.contextmanager
def model_server(model_uri: str, env: dict[str, str], cwd: str | Path, log_path: str | Path,
                 ready_timeout: float = 120.0) -> Iterator[str]:
    """Serve `model_uri` (`env` needs MLFLOW_TRACKING_URI and the venv on PATH); yield its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = ["mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    with loopback_process(cmd, f"{url}/ping", env, cwd, log_path, ready_timeout):
        yield url
