"""The reward models: tokenization, the PRM and its training (`tokenize`, `train`, `train_orm`), the public family."""
