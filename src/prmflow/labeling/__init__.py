"""Rollouts and their step labels: policies, Monte-Carlo labeling methods, the `label` and `validate` stages."""
