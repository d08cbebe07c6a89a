"""Where a model runs and in what precision: the one resolver behind every place that loads a model.

    device, dtype = resolve_placement("auto", "auto")   # ("cuda", torch.bfloat16) on a GPU, ("cpu", torch.float32)
    model = load_causal_lm("models/prm", "cpu", "bfloat16")

`model.device` / `model.dtype` (params.yaml) name them for the stages; the public reward-model classes
take the same strings; the served model stores them in its config and reads PRMFLOW_DEVICE /
PRMFLOW_DTYPE over them at load time, so a model trained on a GPU serves on a CPU and back.
`auto` means CUDA + bfloat16 when a GPU is present, else CPU + float32 (CPUs are slow at half
precision, and bfloat16 keeps float32's range, so no loss scaling is needed).
"""

from __future__ import annotations

import os
import re

from prmflow.param_rules import DEVICE_PATTERN, DTYPES

DEVICE_ENV = "PRMFLOW_DEVICE"
DTYPE_ENV = "PRMFLOW_DTYPE"


def resolve_placement(device: str = "auto", dtype: str = "auto", source: str = "model") -> tuple[str, object]:
    """(torch device string, torch dtype) for the `device` and `dtype` settings.

    Raises ValueError naming `source`.device / `source`.dtype for a value outside auto|cpu|cuda|cuda:N
    and auto|float32|bfloat16|float16, or for a CUDA device on a machine without one.
    """
    import torch

    if not re.fullmatch(DEVICE_PATTERN, device):
        raise ValueError(f"{source}.device: {device!r} is not auto, cpu, cuda or cuda:N")
    if dtype not in DTYPES:
        raise ValueError(f"{source}.dtype: {dtype!r} is not one of {list(DTYPES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        count = torch.cuda.device_count()
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            raise ValueError(f"{source}.device: {device!r} asked for, but this machine has {count} CUDA device(s)")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, getattr(torch, dtype)


def placement_from_env(device: str, dtype: str) -> tuple[str, str]:
    """The (device, dtype) settings with PRMFLOW_DEVICE / PRMFLOW_DTYPE, when set, taking precedence."""
    return os.environ.get(DEVICE_ENV) or device, os.environ.get(DTYPE_ENV) or dtype


def load_causal_lm(path, device: str = "auto", dtype: str = "auto", **load_kwargs):
    """`AutoModelForCausalLM.from_pretrained(path)` in eval mode, in `dtype`, on `device` (resolve_placement)."""
    from transformers import AutoModelForCausalLM

    where, precision = resolve_placement(device, dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=precision, **load_kwargs)
    return model.to(where).eval()


def place(model, device: str = "auto", dtype: str = "auto"):
    """A model built in memory (e.g. from a config), moved to the resolved device and dtype, in eval mode."""
    where, precision = resolve_placement(device, dtype)
    return model.to(device=where, dtype=precision).eval()
