"""vLLM's pooling runner as a second server of a registered PRM: the same weights, the same step scores.

    make vllm-env                                             # vLLM's CPU build in .venv-vllm (GPU: pip install vllm)
    prmflow serve-vllm --model models:/prm@champion --port 8000
    POST /pooling {"model": "prm", "input": [[ids, ...], ...], "task": "token_classify"}
      -> {"data": [{"data": [[p_1], [p_2], ...]}, ...]}        # P(+) at each step tag, per candidate

vLLM turns the causal LM into a one-label classifier whose row is W[+] - W[-] from the LM head
(`method: from_2_way_softmax`; the sigmoid of that logit is the two-token softmax the PRM reads) and pools
it at every step tag (`pooling_type: STEP`). `register` stores that configuration in the MLmodel metadata
(`vllm_config`), and this module builds the server command from it. Measured on this machine's CPU build:
equal to the MLflow-served scores to 1e-5 (tests/test_vllm_serving.py).

Clients send token ids, not text: `prmflow.load(".../pooling", checkpoint=...)` (scoring.load.PooledPRM)
encodes candidates exactly as the MLflow server does
(tokenization.encode_candidate: the step layout, the tag, truncation, special-token text read as text), so
nothing depends on vLLM's own tokenizer or chat handling.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from prmflow.scoring.load import SERVED_NAME
from prmflow.scoring.tokenization import PRM_CONFIG, PromptFormat, load_prompt_format

PYTHON_ENV = "PRMFLOW_VLLM_PYTHON"  # the interpreter of vLLM's own venv (Makefile: vllm-env)
DEFAULT_PYTHON = Path(".venv-vllm") / "bin" / "python"  # where `make vllm-env` puts it, in the checkout
# vLLM's CPU build sizes its KV cache from this (whole GiB); unset, it asks for most of the machine's memory and
# dies at start where other processes hold some (a 24 GB machine with 20 GB free).
KV_CACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
KV_CACHE_MAX_GIB = 4  # a PRM scores short candidates: past this, more cache only takes memory from the rest


def available_memory_bytes() -> int:
    """Memory available to a new process now (Linux: MemAvailable of /proc/meminfo; else the free pages)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def kv_cache_gib(available_bytes: int) -> int:
    """The KV cache `serve-vllm` gives vLLM's CPU build, in GiB: a quarter of `available_bytes`, at least 1 and at
    most KV_CACHE_MAX_GIB."""
    return max(1, min(KV_CACHE_MAX_GIB, available_bytes // 4 // 2**30))


def vllm_config(fmt: PromptFormat, architecture: str) -> dict:
    """The `hf_overrides` and `pooler_config` under which vLLM's pooling runner gives P(+) at every step tag."""
    return {"hf_overrides": {"architectures": [architecture.replace("ForCausalLM", "ForSequenceClassification")],
                             "classifier_from_token": [fmt.negative_token, fmt.positive_token],
                             "method": "from_2_way_softmax", "num_labels": 1},
            "pooler_config": {"pooling_type": "STEP", "step_tag_id": fmt.step_tag_id, "task": "token_classify"}}


def vllm_metadata(model_dir: str | Path) -> dict[str, str]:
    """MLmodel metadata for another server of a prmflow checkpoint: the step tag and label ids and the vLLM
    configuration (strings: MLflow tags are too). A checkpoint in another format (register.scorer: a public PRM)
    has no prm_config.json: none."""
    if not Path(model_dir, PRM_CONFIG).is_file():
        return {}
    fmt = load_prompt_format(model_dir)
    architecture = json.loads(Path(model_dir, "config.json").read_text())["architectures"][0]
    return {"step_tag_id": str(fmt.step_tag_id), "positive_token_id": str(fmt.positive_id),
            "negative_token_id": str(fmt.negative_id), "vllm_config": json.dumps(vllm_config(fmt, architecture))}


def vllm_command(python: str, model_dir: str | Path, config: dict, *, dtype: str, host: str, port: int,
                 extra: list[str] = ()) -> list[str]:
    """The command that serves `model_dir` with vLLM's OpenAI-compatible server under `config` (vllm_config).

    `dtype`: the precision MLflow's server of the same version runs in (float32 / bfloat16 / float16): vLLM's own
    `auto` picks float16 for a float32 checkpoint on a CPU, 7e-4 away from the float32 scores.
    `--max-model-len` is the PRM's context (prm_config.json), so vLLM never reads past what it was trained on;
    `--enforce-eager` skips graph capture (minutes on a CPU, nothing gained for one forward per request).
    `--disable-fastapi-docs`: no `/docs`, `/redoc` or `/openapi.json`, as on the other two servers.
    The `vllm` console script is not used: the CPU build's distribution is `vllm_cpu` and its script fails.
    """
    fmt = load_prompt_format(model_dir)
    return [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", SERVED_NAME, "--host", host, "--port", str(port), "--runner", "pooling",
            "--convert", "classify", "--enforce-eager", "--disable-fastapi-docs", "--max-model-len", str(fmt.max_length),
            "--dtype", dtype,
            "--hf-overrides", json.dumps(config["hf_overrides"]),
            "--pooler-config", json.dumps(config["pooler_config"]), *extra]


def registered_checkpoint(model_uri: str) -> tuple[Path, dict, str]:
    """(local directory of the PRM weights, its vllm_config, the dtype MLflow's server would load it in) of a
    registered model (`models:/prm@champion`); PRMFLOW_DEVICE / PRMFLOW_DTYPE apply as they do there."""
    import mlflow

    from prmflow.devices import Placement

    info = mlflow.models.get_model_info(model_uri)
    stored = info.flavors["python_function"].get("config") or {}
    dtype = Placement(**{key: stored[key] for key in ("device", "dtype") if key in stored}).with_env().resolve()[1]
    metadata = info.metadata or {}
    if "vllm_config" not in metadata:
        raise ValueError(f"{model_uri}: no vllm_config in its metadata (register it again with this prmflow, or it is "
                         f"a public checkpoint, which vLLM serves with that checkpoint's own recipe)")
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    (config_file,) = local.glob(f"artifacts/*/{PRM_CONFIG}")
    return config_file.parent, json.loads(metadata["vllm_config"]), str(dtype).removeprefix("torch.")


def serve_main(args: argparse.Namespace) -> None:
    """`prmflow serve-vllm`: replace this process with vLLM's server of the registered model, its KV cache
    (`VLLM_CPU_KVCACHE_SPACE`, CPU build) sized by `kv_cache_gib` from the memory available unless set."""
    python = args.python or os.environ.get(PYTHON_ENV) or (str(DEFAULT_PYTHON) if DEFAULT_PYTHON.is_file() else None)
    if not python:
        raise SystemExit(f"prmflow serve-vllm: no vLLM interpreter: run `make vllm-env` in the checkout (it makes "
                         f"{DEFAULT_PYTHON}), or set {PYTHON_ENV} or pass --python PATH/TO/VENV/bin/python")
    model_dir, config, dtype = registered_checkpoint(args.model)
    command = vllm_command(python, model_dir, config, dtype=dtype, host=args.host, port=args.port, extra=args.vllm_args)
    if os.environ.get(KV_CACHE_ENV):
        print(f"prmflow serve-vllm: KV cache {os.environ[KV_CACHE_ENV]} GiB ({KV_CACHE_ENV}, as set)", flush=True)
    else:
        available = available_memory_bytes()
        os.environ[KV_CACHE_ENV] = str(kv_cache_gib(available))  # the environment os.execv hands vLLM
        print(f"prmflow serve-vllm: KV cache {os.environ[KV_CACHE_ENV]} GiB for vLLM's CPU build ({KV_CACHE_ENV}: a "
              f"quarter of the {available / 2**30:.1f} GiB available, at most {KV_CACHE_MAX_GIB}; set it to choose)",
              flush=True)
    print("prmflow serve-vllm: " + " ".join(command), flush=True)
    os.execv(command[0], command)
