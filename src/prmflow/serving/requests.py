"""What a scoring request may hold, checked before anything is scored: the same rules for the server and
`prmflow score`, each broken rule named by its field path (`inputs[3].steps[7]`) in one short line.

    {"inputs": [{"problem": "...", "steps": ["...", "..."]},        # a solution as steps
                {"problem": "...", "text": "Step 1: ...\\nStep 2: ..."}],  # or as one text, split here
     "params": {"aggregation": "min"}}

Messages never repeat what was sent (a value is named by its type and size), so an error stays under
`MAX_MESSAGE_CHARS` however large the request.

What a candidate must hold to be scored (`content_fault`, `split_text`, `Solution`) is scoring.candidates': the
same rule for every client of a PRM (prmflow.load's), each unscorable candidate answered on its own.
"""

from __future__ import annotations

import json
from typing import Any

from prmflow.scoring.candidates import Solution, at, content_fault

PARAM_KEYS = ("aggregation",)
SOLUTION_KEYS = ("problem", "steps", "text")
MAX_MESSAGE_CHARS = 900
SOLUTION_SHAPE = '{"problem": "...", "steps": ["...", "..."]}'
SHAPE = f'{{"inputs": [{SOLUTION_SHAPE}], "params": {{"aggregation": "min"}}}}'  # what a request looks like


class RequestError(ValueError):
    """A request broke a rule: `str(err)` is `<field path>: <rule>`, short whatever was sent."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(clip(message, MAX_MESSAGE_CHARS))
        self.status = status  # 413 for a body over the size limit, else 400


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
