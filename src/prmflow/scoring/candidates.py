"""What a candidate must hold to be scored: one rule for the scoring server, `prmflow score`, the reward
adapters and every PRM `prmflow.load` gives, so a candidate that breaks it costs its own score (a `reason`,
`score: null`), never its batch-mates'.

    content_fault(Solution(problem="Ava has 3 apples.", text="Step 1:"), "inputs[2]")
    -> ([], "inputs[2].text: holds no step once its `Step k:` markers are taken out")

`text` is split by the first rule that applies (`split_text`): blank lines between paragraphs, else
`Step k:` markers at line starts, else line breaks; a `Step k:` marker that opens a piece is removed
in every rule, since the model renders its own (`model.step_template`).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

SPLITS = {"blank_lines": re.compile(r"\n[ \t]*\n"), "step_markers": re.compile(r"(?m)^[ \t]*(?=Step \d+\s*[:.])"),
          "lines": re.compile(r"\n")}
_MARKER = re.compile(r"^Step \d+\s*[:.]\s*")


class Solution(BaseModel):
    """One candidate: its problem and either its steps or its text (split by `split_text`)."""

    model_config = ConfigDict(extra="forbid")
    problem: str
    steps: list[str] | None = None
    text: str | None = None


def at(where: str, name: str) -> str:
    """The path of field `name` inside `where` (`inputs[3]` -> `inputs[3].steps`; a bare line: `steps`)."""
    return f"{where}.{name}" if where else name


def split_text(text: str) -> tuple[list[str], str]:
    """(steps, the rule used): blank lines, else `Step k:` markers, else line breaks; markers removed."""
    for rule, pattern in SPLITS.items():
        pieces = [_MARKER.sub("", piece.strip()).strip() for piece in pattern.split(text.strip())]
        pieces = [piece for piece in pieces if piece]
        if len(pieces) > 1 or rule == "lines":
            return pieces, rule
    raise AssertionError("unreachable: the last rule always returns")


def content_fault(solution: Solution, where: str) -> tuple[list[str], str | None]:
    """(the solution's steps, `text` split; None) or ([], why it cannot be scored): an empty problem, an empty or
    whitespace-only text, a text of `Step k:` markers alone, no steps, an empty step, a lone surrogate (a field
    that is not valid Unicode). The one rule behind the server's per-candidate `reason` and a trainer's
    `unscorable_reward` (integrations/client.py): such a candidate costs its own score, never its batch-mates'."""
    if not solution.problem.strip():
        return [], f"{at(where, 'problem')}: must be a non-empty string"
    if solution.text is not None:
        if not solution.text.strip():
            return [], f"{at(where, 'text')}: must be a non-empty string"
        steps = split_text(solution.text)[0]
        if not steps:
            return [], f"{at(where, 'text')}: holds no step once its `Step k:` markers are taken out"
    else:
        steps = solution.steps or []
        if not steps:
            return [], f"{at(where, 'steps')}: must be a non-empty list of strings"
        empty = next((index for index, step in enumerate(steps) if not step.strip()), None)
        if empty is not None:
            return [], f"{at(where, f'steps[{empty}]')}: empty step"
    fields = [("problem", solution.problem)] + ([("text", solution.text)] if solution.text is not None else
                                                [(f"steps[{index}]", step) for index, step in enumerate(steps)])
    for name, value in fields:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:  # a lone surrogate, which JSON's `\\ud800` escapes can carry
            return [], f"{at(where, name)}: not valid Unicode text ({err.reason} at character {err.start})"
    return steps, None
