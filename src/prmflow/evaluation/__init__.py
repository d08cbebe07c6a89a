"""How good a reward model is: metrics on plain lists, the `evaluate` stage and its report."""
