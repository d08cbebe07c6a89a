"""prmflow: a reproducible pipeline that builds process reward models (PRMs)."""

__version__ = "0.1.0"


# The public reward-model API (prmflow.scoring.rewards); its tag-mode ProcessRewardModel extends modeling.StepTagScorer.
REWARD_API = ("ProcessRewardModel", "ZeroShotProcessRewardModel", "OutcomeRewardModel", "TrainedOutcomeRewardModel",
              "CombinedRewardModel", "EnsembleRewardModel", "Placement", "load_reward_model", "reward_function",
              "shaped_reward")


def __getattr__(name: str):
    # Lazy: importing prmflow must stay cheap; torch/transformers load only when a model is used.
    if name in REWARD_API:
        from prmflow.scoring import rewards

        return getattr(rewards, name)
    raise AttributeError(name)
