"""The last release's API keeps working for one more release, with a DeprecationWarning that names the new form."""

import importlib
import sys

import pytest

from prmflow import Placement, ProcessRewardModel, load_reward_model
from prmflow.scoring import rewards
from tiny_models import build_tiny_prm


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory):
    return build_tiny_prm(tmp_path_factory.mktemp("prm") / "prm", seed=0)


def test_the_old_device_and_dtype_keywords_warn_and_score_as_placement_does(prm_dir):
    steps = ["Ava has 3 + 2 = <<3+2=5>>5 apples.", "She gives away 1, so 5 - 1 = <<5-1=4>>4."]
    new = ProcessRewardModel(prm_dir, placement=Placement("cpu", "float32"))
    with pytest.warns(DeprecationWarning, match=r"ProcessRewardModel\(\.\.\., device='cpu', dtype='float32'\) is "
                      r"deprecated .* use ProcessRewardModel\(\.\.\., placement=Placement\(device='cpu', "
                      r"dtype='float32'\)\)"):
        old = ProcessRewardModel(prm_dir, device="cpu", dtype="float32")
    assert old.get_rewards_for_steps("Ava has 3 apples.", steps) == new.get_rewards_for_steps("Ava has 3 apples.", steps)
    with pytest.warns(DeprecationWarning, match=r"load_reward_model\(\.\.\., dtype='float32'\)"):
        loaded = load_reward_model(prm_dir, dtype="float32")
    assert isinstance(loaded, ProcessRewardModel)
    with pytest.raises(TypeError, match="placement= or the deprecated device=/dtype=, not both"):
        ProcessRewardModel(prm_dir, placement=Placement(), device="cpu")
    with pytest.raises(TypeError):  # any other unknown keyword is still an error
        ProcessRewardModel(prm_dir, devise="cpu")


def test_the_old_prmflow_model_modules_import_with_a_warning_naming_the_new_ones():
    for name in [m for m in sys.modules if m == "prmflow.model" or m.startswith("prmflow.model.")]:
        del sys.modules[name]
    with pytest.warns(DeprecationWarning, match=r"prmflow.model is deprecated .* prmflow.scoring.rewards"):
        importlib.import_module("prmflow.model")
    with pytest.warns(DeprecationWarning, match=r"prmflow.model.rewards is deprecated .* use prmflow.scoring.rewards"):
        from prmflow.model.rewards import ProcessRewardModel as Old
    assert Old is rewards.ProcessRewardModel
    with pytest.warns(DeprecationWarning, match="use prmflow.training.train"):
        from prmflow.model import train
    assert train.main is importlib.import_module("prmflow.training.train").main
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("prmflow.model.nothing_here")
