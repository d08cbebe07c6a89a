"""Reading P(+) at the step tags: tokenization, checkpoint formats, the tag-only head, the reward-model family."""
