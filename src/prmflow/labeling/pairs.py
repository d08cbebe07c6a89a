"""Step-level preference pairs from labeled rollouts, for Step-DPO style training.

    prmflow pairs data/rollouts/train.jsonl --output data/pairs/train.jsonl

Two rollouts of one problem that share their first k steps, all labeled `+`, and then part ways
with a `+` step in one and a `-` step in the other give one pair: the problem and the shared steps
are the prompt, the `+` step is chosen and the `-` step rejected. Each line is
`{"prompt", "chosen", "rejected"}` (plus `problem_id` and `step`, the index of the step compared),
the standard format TRL's DPOTrainer reads; a pair (prompt, chosen, rejected) is written once.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import permutations

STEP_SEPARATOR = "\n"


def shared_prefix_length(a: list[str], b: list[str]) -> int:
    length = 0
    while length < min(len(a), len(b)) and a[length] == b[length]:
        length += 1
    return length


def render_prompt(problem: str, prefix: list[str], separator: str = STEP_SEPARATOR) -> str:
    """The problem, then each shared step, each line ending in `separator`, so the next step follows directly."""
    return "".join(piece + separator for piece in [problem, *prefix])


def step_pairs(rows: list[dict], separator: str = STEP_SEPARATOR) -> list[dict]:
    """All step-level pairs among rollouts of the same problem (rows need problem_id, problem, steps, labels)."""
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_problem[row["problem_id"]].append(row)
    pairs, seen = [], set()
    for problem_id, group in by_problem.items():
        for good, bad in permutations(group, 2):
            k = shared_prefix_length(good["steps"], bad["steps"])
            # The steps must diverge and the shared prefix be correct, else the comparison is not about step k.
            if k == len(good["steps"]) or k == len(bad["steps"]) or "-" in good["labels"][:k]:
                continue
            if good["labels"][k] != "+" or bad["labels"][k] != "-":
                continue
            pair = (render_prompt(good["problem"], good["steps"][:k], separator), good["steps"][k], bad["steps"][k])
            if pair not in seen:
                seen.add(pair)
                pairs.append({"prompt": pair[0], "chosen": pair[1], "rejected": pair[2],
                              "problem_id": problem_id, "step": k})
    return pairs


def write_pairs(inputs: list[str], output: str, separator: str = STEP_SEPARATOR) -> int:
    """Write the pairs of every input file to `output`; returns how many."""
    from prmflow.jsonl import read_jsonl, write_jsonl

    rows = [row for path in inputs for row in read_jsonl(path, required=("problem_id", "problem", "steps", "labels"))]
    return write_jsonl(output, step_pairs(rows, separator))
