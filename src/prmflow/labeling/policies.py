"""Build the rollout policy that the `label` params name; the policies below import nothing from here."""

from __future__ import annotations

from prmflow.config import LabelParams
from prmflow.labeling.policy import Policy
from prmflow.labeling.simulated import SimulatedPolicy


def make_policy(params: LabelParams, seed: int = 0, device: str = "auto", dtype: str = "auto") -> Policy:
    """The `label.policy`. `seed` draws the simulated policy's per-problem misconceptions (base.seed in the
    pipeline); a model-backed policy loads its model on `device` in `dtype` (prmflow.devices)."""
    if params.policy == "simulated":
        return SimulatedPolicy(params.slip_rate, params.operation_slip_fraction, params.misconception_rate, seed)
    if params.policy == "transformers":
        from prmflow.labeling.hf_policy import TransformersPolicy  # torch + transformers only when asked for

        return TransformersPolicy(params.model_dir, params.max_new_tokens, params.temperature, params.batch_size,
                                  params.gguf_file, device, dtype)
    if params.policy == "openai":
        from prmflow.labeling.openai_policy import OpenAIPolicy

        return OpenAIPolicy(params.endpoint, params.model_name, params.max_new_tokens, params.temperature,
                            params.concurrency, params.request_timeout_s, params.max_retries, params.retry_backoff_s,
                            params.api_key_env, params.send_seed)
    raise ValueError(f"label.policy: unknown policy {params.policy!r}")
