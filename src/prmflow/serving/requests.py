"""What a scoring request may hold, checked before anything is scored: the same rules for the server and
`prmflow score`, each broken rule named by its field path (`inputs[3].steps[7]`) in one short line.

    {"inputs": [{"problem": "...", "steps": ["...", "..."]},        # a solution as steps
                {"problem": "...", "text": "Step 1: ...\\nStep 2: ..."}],  # or as one text, split here
     "params": {"aggregation": "min"}}

Messages never repeat what was sent (a value is named by its type and size), so an error stays under
`MAX_MESSAGE_CHARS` however large the request.

`text` is split by the first rule that applies (`split_text`): blank lines between paragraphs, else
`Step k:` markers at line starts, else line breaks; a `Step k:` marker that opens a piece is removed
in every rule, since the model renders its own (`model.step_template`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict

PARAM_KEYS = ("aggregation",)
SOLUTION_KEYS = ("problem", "steps", "text")
MAX_MESSAGE_CHARS = 900
SOLUTION_SHAPE = '{"problem": "...", "steps": ["...", "..."]}'
SHAPE = f'{{"inputs": [{SOLUTION_SHAPE}], "params": {{"aggregation": "min"}}}}'  # what a request looks like
SPLITS = {"blank_lines": re.compile(r"\n[ \t]*\n"), "step_markers": re.compile(r"(?m)^[ \t]*(?=Step \d+\s*[:.])"),
          "lines": re.compile(r"\n")}
_MARKER = re.compile(r"^Step \d+\s*[:.]\s*")


class RequestError(ValueError):
    """A request broke a rule: `str(err)` is `<field path>: <rule>`, short whatever was sent."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(clip(message, MAX_MESSAGE_CHARS))
        self.status = status  # 413 for a body over the size limit, else 400


class Solution(BaseModel):
    """One candidate: its problem and either its steps or its text (split by `split_text`)."""

    model_config = ConfigDict(extra="forbid")
    problem: str
    steps: list[str] | None = None
    text: str | None = None


def at(where: str, name: str) -> str:
    """The path of field `name` inside `where` (`inputs[3]` -> `inputs[3].steps`; a bare line: `steps`)."""
    return f"{where}.{name}" if where else name


def clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def described(value: Any) -> str:
    """What was sent, without repeating it: `a string of 6000 characters`, `null`, `a list of 3 items`."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if isinstance(value, (list, dict)):
        return f"{'a list' if isinstance(value, list) else 'an object'} of {len(value)} items"
    return f"{type(value).__name__} {clip(repr(value))}"


def unknown_keys(where: str, given: dict, known: tuple[str, ...]) -> None:
    extra = [key for key in given if key not in known]
    if extra:
        names = ", ".join(repr(clip(str(key))) for key in extra[:5]) + (", ..." if len(extra) > 5 else "")
        raise RequestError(f"{where}: unknown key{'s' if len(extra) > 1 else ''} {names} (known: {', '.join(known)})")


def split_text(text: str) -> tuple[list[str], str]:
    """(steps, the rule used): blank lines, else `Step k:` markers, else line breaks; markers removed."""
    for rule, pattern in SPLITS.items():
        pieces = [_MARKER.sub("", piece.strip()).strip() for piece in pattern.split(text.strip())]
        pieces = [piece for piece in pieces if piece]
        if len(pieces) > 1 or rule == "lines":
            return pieces, rule
    raise AssertionError("unreachable: the last rule always returns")


def body_text(data: bytes) -> str:
    """A request body as text for `parse_json`: bytes that are not UTF-8 become lone surrogates (surrogateescape)
    in the string that holds them, so only the candidate holding that string is unscorable (content_fault gives it
    its `reason`), not the request. A fault outside the candidates' text still refuses the request by its own rule
    (a key that is not a known name, a broken JSON token)."""
    return data.decode("utf-8", errors="surrogateescape")


def parse_json(data: str, where: str, hint: str = "") -> Any:
    """`json.loads(data)`, or a RequestError `<where>: <why>` (a bare line: `<why>`) for anything that cannot be read: not JSON,
    nested too deep (RecursionError), an integer past Python's digit limit. `hint` ends the message."""
    try:
        return json.loads(data)
    except json.JSONDecodeError as err:
        why = f"not JSON ({err.msg} at line {err.lineno} column {err.colno})"
    except RecursionError:
        why = "nested too deep to read"
    except ValueError as err:  # json's own errors are caught above: this is a value past a limit
        why = f"a value cannot be read ({clip(str(err), 120)})"
    raise RequestError(f"{where}: {why}{hint}" if where else why + hint)


def solution_from_json(value: Any, where: str) -> Solution:
    """A solution from parsed JSON, its types checked field by field (unknown keys are an error)."""
    if not isinstance(value, dict):
        raise RequestError(f"{where or 'record'}: must be an object like {SOLUTION_SHAPE}, got {described(value)}")
    unknown_keys(where or "record", value, SOLUTION_KEYS)
    if not isinstance(value.get("problem"), str):
        raise RequestError(f"{at(where, 'problem')}: must be a string, got {described(value.get('problem'))}")
    if ("steps" in value) == ("text" in value):
        raise RequestError(f"{where or 'record'}: give exactly one of steps (a list of strings) or text (one string)")
    if "text" in value and not isinstance(value["text"], str):
        raise RequestError(f"{at(where, 'text')}: must be a string, got {described(value['text'])}")
    steps = value.get("steps")
    if "steps" in value and not isinstance(steps, list):
        raise RequestError(f"{at(where, 'steps')}: must be a list of strings, got {described(steps)}")
    for index, step in enumerate(steps or []):
        if not isinstance(step, str):
            raise RequestError(f"{at(where, f'steps[{index}]')}: must be a string, got {described(step)}")
    return Solution(**value)


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


def check_solution(solution: Solution, where: str) -> list[str]:
    """The solution's steps (`text` split); raises RequestError with `content_fault`'s reason (`prmflow score`:
    a line of a file is rejected with it)."""
    steps, fault = content_fault(solution, where)
    if fault:
        raise RequestError(fault)
    return steps


def params_from_json(value: Any, aggregations: tuple[str, ...], default: str) -> str:
    """The aggregation a request's `params` ask for; unknown keys are an error, not silently ignored."""
    if value is None:
        return default
    if not isinstance(value, dict):
        raise RequestError(f"params: must be an object like {{\"aggregation\": \"min\"}}, got {described(value)}")
    unknown_keys("params", value, PARAM_KEYS)
    aggregation = value.get("aggregation", default)
    if aggregation not in aggregations:
        raise RequestError(f"params.aggregation: {clip(repr(aggregation))} is not one of {list(aggregations)}")
    return aggregation
