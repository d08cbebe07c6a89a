"""Training precision: `model.dtype: auto` trains a wide model (SmolLM2's 576, not the builtin's 64) in bfloat16
autocast on a CPU with bfloat16 matrix units (AMX / AVX-512 BF16), in float32 otherwise; inference
(`resolve_placement`) stays float32 on a CPU."""

import math

import pytest
import torch

from prmflow.devices import (
    BF16_CPU_MIN_HIDDEN, cpu_flags, cpu_has_bf16, resolve_placement, this_cpu_has_bf16, training_placement,
)
from test_train_scale import project, stage_params, tokenize_and_train  # noqa: F401 (fixture)

SAPPHIRE_RAPIDS = ("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                   "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n\nprocessor\t: 1\nflags\t\t: fpu amx_bf16\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"


def test_cpu_flags_are_the_first_processors():
    assert {"avx512_bf16", "amx_bf16", "avx2"} <= cpu_flags(SAPPHIRE_RAPIDS)
    assert "amx_bf16" not in cpu_flags(SKYLAKE)  # the second processor's line is not read
    assert cpu_flags(GRAVITON) == {"fp", "asimd", "bf16", "i8mm"} and cpu_flags("") == set()


def test_bf16_units_are_amx_or_avx512_bf16():
    assert cpu_has_bf16(cpu_flags(SAPPHIRE_RAPIDS)) and cpu_has_bf16({"avx512_bf16"}) and cpu_has_bf16({"amx_bf16"})
    assert not cpu_has_bf16(cpu_flags(SKYLAKE)) and not cpu_has_bf16(set())
    with open("/proc/cpuinfo") as f:
        assert this_cpu_has_bf16() == cpu_has_bf16(cpu_flags(f.read()))


def test_auto_trains_wide_models_in_bf16_where_the_cpu_has_the_units_and_infers_in_float32():
    assert training_placement("cpu", "auto", 576, bf16_cpu=True) == ("cpu", torch.bfloat16)
    assert training_placement("cpu", "auto", BF16_CPU_MIN_HIDDEN, bf16_cpu=True) == ("cpu", torch.bfloat16)
    assert training_placement("cpu", "auto", 64, bf16_cpu=True) == ("cpu", torch.float32)  # the builtin model
    assert training_placement("cpu", "auto", 576, bf16_cpu=False) == ("cpu", torch.float32)
    assert training_placement("auto", "float32", 576, bf16_cpu=True)[1] == torch.float32  # an explicit dtype wins
    assert training_placement("cpu", "bfloat16", 64, bf16_cpu=False) == ("cpu", torch.bfloat16)
    assert resolve_placement("cpu", "auto") == ("cpu", torch.float32)  # loading a model to score: float32
    with pytest.raises(ValueError, match="model.dtype: 'fp8'"):
        training_placement("cpu", "fp8", 576, bf16_cpu=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU rule")
def test_the_train_stage_uses_the_cpu_rule_and_saves_float32_weights(project):  # noqa: F811
    from prmflow.scoring.modeling import StepTagScorer

    wide = tokenize_and_train(stage_params({"hidden_size": BF16_CPU_MIN_HIDDEN, "intermediate_size": 64}, epochs=1.0))
    assert wide["precision"] == ("bfloat16 autocast" if this_cpu_has_bf16() else "float32")  # model.dtype: auto
    assert math.isfinite(wide["train_loss"])  # 6 steps: fewer than one logging interval, so no final_loss
    assert StepTagScorer(project / "models" / "prm").model.dtype == torch.float32
    assert tokenize_and_train(stage_params(epochs=1.0))["precision"] == "float32"  # 16 wide
    forced = tokenize_and_train(stage_params({"hidden_size": BF16_CPU_MIN_HIDDEN, "intermediate_size": 64,
                                              "dtype": "float32"}, epochs=1.0))
    assert forced["precision"] == "float32"
