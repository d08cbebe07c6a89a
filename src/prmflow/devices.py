"""Where a model runs and in what precision: the one resolver behind every place that loads a model.

    placement = Placement.of(params.model)              # the model.device / model.dtype settings, read once
    device, dtype = placement.resolve()                 # ("cuda", torch.bfloat16) on a GPU, ("cpu", torch.float32)
    model = load_causal_lm("models/prm", Placement("cpu", "bfloat16"))

A `Placement` is built once where the settings are read (`model.device` / `model.dtype` in params.yaml)
and handed down whole to whatever loads a model: training, evaluation, search, the rollout policy,
serving. The public reward-model classes take one too (`placement=`); the served model stores its two
settings in its config and reads PRMFLOW_DEVICE / PRMFLOW_DTYPE over them at load time (`Placement.with_env`),
so a model trained on a GPU serves on a CPU and back.
`auto` means CUDA + bfloat16 when a GPU is present, else CPU + float32 for loading a model (inference:
float32 keeps candidates' scores apart, where bfloat16's 8-bit mantissa would tie many of them).

Training precision is resolved apart (`training_placement`): its `auto` on a CPU with bfloat16 matrix units
(AMX or AVX-512 BF16, read from /proc/cpuinfo) is bfloat16 *autocast* for a model at least BF16_CPU_MIN_HIDDEN
wide: the weights and optimizer state stay float32, the matrix products run in bfloat16 (SmolLM2-135M, width
576: 1.25-2x faster per step, BENCHMARKS.md). bfloat16 keeps float32's range, so no loss scaling is needed.
Narrower models and CPUs without those units train in float32: the builtin model (width 64) measured 1.7x
slower per step and 2.4x the peak memory under autocast, whose casts cost more than its small products gain.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from prmflow.param_rules import DEVICE_PATTERN, DTYPES
from prmflow.sections import ModelParams

DEVICE_ENV = "PRMFLOW_DEVICE"
DTYPE_ENV = "PRMFLOW_DTYPE"
_TRANSFORMERS_IMPORT = threading.Lock()


def transformers_classes(*names: str) -> tuple:
    """transformers' classes by name (`"AutoTokenizer"`), imported under one process-wide lock: transformers
    resolves its names lazily on first use, and threads that race to the first `from transformers import X`
    get `ImportError: cannot import name X` (32 threads: 31 failed)."""
    with _TRANSFORMERS_IMPORT:
        import transformers

        return tuple(getattr(transformers, name) for name in names)


def resolve_placement(device: str, dtype: str, source: str = "model") -> tuple[str, object]:
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


# /proc/cpuinfo flags of the units that run bfloat16 matrix products natively (Intel AMX, AVX-512 BF16; AMD
# Zen 4+ reports avx512_bf16 too).
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# The narrowest model (hidden size) that `auto` trains in bfloat16 autocast on such a CPU: measured faster at 576
# (SmolLM2-135M), slower at 64 (the builtin model); widths between were not measured (BENCHMARKS.md).
BF16_CPU_MIN_HIDDEN = 512


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor in /proc/cpuinfo's text (x86 `flags`, ARM `Features`)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_has_bf16(flags: set[str]) -> bool:
    """Whether these CPU flags include native bfloat16 matrix units (BF16_CPU_FLAGS)."""
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def this_cpu_has_bf16() -> bool:
    """cpu_has_bf16 for this machine (False where /proc/cpuinfo cannot be read: not Linux)."""
    try:
        return cpu_has_bf16(cpu_flags(Path("/proc/cpuinfo").read_text()))
    except OSError:
        return False


def training_placement(device: str, dtype: str, hidden_size: int, *, bf16_cpu: bool | None = None,
                       source: str = "model") -> tuple[str, object]:
    """(torch device string, mixed-precision dtype) of training a model `hidden_size` wide: resolve_placement,
    except that `auto` on a CPU is bfloat16 (autocast over float32 weights) for a model at least
    BF16_CPU_MIN_HIDDEN wide where `bf16_cpu` (default: this_cpu_has_bf16()) holds.

    Raises ValueError as resolve_placement.
    """
    import torch

    where, precision = resolve_placement(device, dtype, source)
    if dtype == "auto" and where == "cpu" and hidden_size >= BF16_CPU_MIN_HIDDEN and (
            this_cpu_has_bf16() if bf16_cpu is None else bf16_cpu):
        precision = torch.bfloat16
    return where, precision


@dataclass(frozen=True)
class Placement:
    """The `device` (auto | cpu | cuda | cuda:N) and `dtype` (auto | float32 | bfloat16 | float16) settings of a
    model, as written (not yet resolved): `model.device` / `model.dtype`, whose defaults these are."""

    device: str = ModelParams.device
    dtype: str = ModelParams.dtype

    @classmethod
    def of(cls, model: ModelParams) -> Placement:
        """The `model` section's placement."""
        return cls(model.device, model.dtype)

    def with_env(self) -> Placement:
        """This placement with PRMFLOW_DEVICE / PRMFLOW_DTYPE, when set, taking precedence."""
        return replace(self, device=os.environ.get(DEVICE_ENV) or self.device,
                       dtype=os.environ.get(DTYPE_ENV) or self.dtype)

    def resolve(self, source: str = "model") -> tuple[str, object]:
        """(torch device string, torch dtype) of loading a model to score: resolve_placement (its errors)."""
        return resolve_placement(self.device, self.dtype, source)

    def for_training(self, hidden_size: int, bf16_cpu: bool | None = None) -> tuple[str, object]:
        """(torch device string, mixed-precision dtype) of training a model `hidden_size` wide: training_placement."""
        return training_placement(self.device, self.dtype, hidden_size, bf16_cpu=bf16_cpu)


def load_causal_lm(path, placement: Placement, **load_kwargs):
    """`AutoModelForCausalLM.from_pretrained(path)` in eval mode, in the placement's resolved dtype, on its device.

    Raises ValueError as resolve_placement, before anything is loaded."""
    from transformers import AutoModelForCausalLM

    where, precision = placement.resolve()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=precision, **load_kwargs)
    return model.to(where).eval()


def place(model, placement: Placement):
    """A model built in memory (e.g. from a config), moved to the placement's resolved device and dtype, in eval
    mode."""
    where, precision = placement.resolve()
    return model.to(device=where, dtype=precision).eval()
