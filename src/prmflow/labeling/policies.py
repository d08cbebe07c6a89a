"""Build the rollout policy that the `label` params name; the policies below import nothing from here."""

from __future__ import annotations

from prmflow.config import LabelParams
from prmflow.devices import Placement
from prmflow.labeling.policy import Policy
from prmflow.labeling.simulated import SimulatedPolicy


def make_policy(params: LabelParams, seed: int, placement: Placement = Placement()) -> Policy:
    """The `label.policy`, built from its section. `seed` draws the simulated policy's per-problem misconceptions
    (base.seed in the pipeline); a model-backed policy loads its model on `placement` (`model.device` /
    `model.dtype`). Raises ValueError for an unknown policy."""
    if params.policy == "simulated":
        return SimulatedPolicy(params, seed)
    if params.policy == "transformers":
        from prmflow.labeling.hf_policy import TransformersPolicy  # torch + transformers only when asked for

        return TransformersPolicy(params, placement)
    if params.policy == "openai":
        from prmflow.labeling.openai_policy import OpenAIPolicy

        return OpenAIPolicy(params)
    raise ValueError(f"label.policy: unknown policy {params.policy!r}")
