"""What the ingest stage promises every later stage: the fields of `data/problems/{train,test}.jsonl`.

A module of its own so that readers of the problems (label, validate) depend on the contract, not
on the ingest code.
"""

PROBLEM_FIELDS = ("id", "problem", "answer", "reference_steps", "source")
PROBLEM_TYPES = {"id": str, "problem": str, "answer": str, "reference_steps": list[str], "source": str}
