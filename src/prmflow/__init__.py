"""prmflow: a reproducible pipeline that builds process reward models (PRMs)."""

__version__ = "0.1.0"


# The public reward-model API (prmflow.scoring.rewards); its tag-mode ProcessRewardModel extends modeling.StepTagScorer.
# `load` (prmflow.scoring.load) is the one door to a PRM of any format, registry URI or endpoint.
REWARD_API = ("load", "ProcessRewardModel", "ZeroShotProcessRewardModel", "OutcomeRewardModel", "TrainedOutcomeRewardModel",
              "CombinedRewardModel", "EnsembleRewardModel", "Placement", "load_reward_model", "reward_function",
              "shaped_reward")


def __getattr__(name: str):
    # Lazy: importing prmflow must stay cheap; torch/transformers load only when a model is used.
    if name in REWARD_API:
        from prmflow.scoring import rewards

        return getattr(rewards, name)
    raise AttributeError(name)
