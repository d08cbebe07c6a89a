"""prmflow: a reproducible pipeline that builds process reward models (PRMs)."""

__version__ = "0.1.0"

STAGES = ("ingest", "label", "validate", "tokenize", "train", "evaluate", "register")


def __getattr__(name: str):
    # Lazy: importing prmflow must stay cheap; torch/transformers load only when a model is used.
    if name == "ProcessRewardModel":
        from prmflow.modeling import ProcessRewardModel

        return ProcessRewardModel
    raise AttributeError(name)
