"""Reference answers in a form `math-verify` can compare.

GSM8K writes `#### 1,200` and sometimes `$18` or `18 dollars`; MATH writes `\\boxed{\\frac{1}{2}}`
inside a LaTeX solution, sometimes with `\\text{ cm}` units or a `^\\circ`. `normalize_answer`
strips what is presentation, not value (thousands separators, currency, units, a trailing
period), and `math_verify_text` wraps the result in `$...$`, without which math-verify reads
`25\\pi` as 25 (STACK.md).

    normalize_answer("$1,200.")          -> "1200"
    normalize_answer("\\text{(B) } 5\\text{ cm}")  -> "(B) 5"
    answers_equivalent("0.5", "\\frac{1}{2}")  -> True
"""

from __future__ import annotations

import re
from collections import defaultdict

_UNIT_WORDS = (r"dollars?|cents?|percent|pounds?|kg|kilograms?|grams?|g|km|kilometers?|meters?|m|cm|mm|miles?|"
               r"feet|foot|ft|inches?|in|hours?|hrs?|minutes?|mins?|seconds?|secs?|days?|weeks?|years?|"
               r"liters?|l|ml|gallons?|units?|degrees?|sq|square")
_TRAILING_UNITS = re.compile(rf"(?<=[\d}}])\s*(?:{_UNIT_WORDS})\b\.?$", re.IGNORECASE)
_TEXT_UNITS = re.compile(r"\\(?:text|textbf|mbox|mathrm)\{\s*(?:" + _UNIT_WORDS + r")\s*\}(?:\^\d)?", re.IGNORECASE)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?:\D|$))|(?<=\d)\{,\}(?=\d{3})")


def extract_boxed(solution: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced; None when there is none."""
    start = max(solution.rfind("\\boxed"), solution.rfind("\\fbox"))
    if start < 0:
        return None
    brace = solution.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for pos in range(brace, len(solution)):
        depth += {"{": 1, "}": -1}.get(solution[pos], 0)
        if depth == 0:
            return solution[brace + 1:pos]
    return None


_FINAL_MARKERS = (re.compile(r"####\s*([^\n]+)"), re.compile(r"[Tt]he (?:final )?answer is:?\s*([^\n]+)"))


def extract_final_answer(text: str) -> str | None:
    """The final answer a generated solution states (`#### x`, `\\boxed{x}`, `The answer is x`); None if none.

    The last marker wins: a solution may restate its answer, and the last statement is the final one.
    """
    boxed = extract_boxed(text)
    candidates = [(text.rfind("\\boxed"), boxed)] if boxed is not None else []
    for marker in _FINAL_MARKERS:
        found = list(marker.finditer(text))
        if found:
            candidates.append((found[-1].start(), found[-1].group(1)))
    if not candidates:
        return None
    answer = max(candidates, key=lambda pair: pair[0])[1].strip()
    return answer.rstrip(".").strip() or None


def normalize_answer(text: str) -> str:
    """The answer without presentation: no `$`, thousands separators, units, `\\!`, or trailing period."""
    answer = text.strip()
    boxed = extract_boxed(answer)
    if boxed is not None:
        answer = boxed
    answer = answer.replace("\\$", "").replace("\\!", "").replace("\\%", "").replace("%", "")
    answer = re.sub(r"^\$|\$$", "", answer.strip()).strip()  # `$18` is money in GSM8K, `$x$` is math in MATH
    answer = re.sub(r"\^\s*\{?\\circ\}?", "", answer)
    answer = _TEXT_UNITS.sub("", answer)
    answer = _THOUSANDS.sub("", answer)
    answer = _TRAILING_UNITS.sub("", answer.strip())
    return answer.strip().rstrip(".").strip()


def math_verify_text(answer: str) -> str:
    """An answer wrapped so that math-verify parses it as LaTeX math."""
    return f"${normalize_answer(answer)}$"


def parse_answer(answer: str) -> list | None:
    """math-verify's reading of an answer, or None when it reads nothing (it falls back to the raw text)."""
    from math_verify import parse  # sympy warm-up (~0.4 s) only when an answer needs it

    parsed = parse(math_verify_text(answer))
    return None if all(isinstance(item, str) for item in parsed) else parsed


def answers_equivalent(predicted: str, reference: str) -> bool | None:
    """Whether two answers have the same value, by math-verify; None when `predicted` cannot be read."""
    from math_verify import verify

    if normalize_answer(predicted) == normalize_answer(reference):
        return True
    guess = parse_answer(predicted)
    if guess is None:
        return None
    gold = parse_answer(reference)
    return bool(gold and verify(gold, guess))


def answer_agreement(rows: list[dict]) -> dict[str, float]:
    """Share of problems where two samples share a right answer, and where two share a wrong one.

    `rows`: sampled solutions with `problem_id` (or `problem`), `predicted_answer` and `correct`.
    Majority vote needs only the first; it fails on the second. Real generators on GSM8K: about
    45% and 20% with 4 samples (issue 18); the simulated policy's misconceptions are calibrated to them.
    """
    groups: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for row in rows:
        key = row["problem_id"] if "problem_id" in row else row["problem"]
        groups[str(key)].append((str(row["predicted_answer"]), bool(row["correct"])))
    wrong_answers = [[a for a, correct in g if not correct] for g in groups.values()]
    count = max(len(groups), 1)
    return {"answers_repeated_right_share": sum(sum(c for _, c in g) > 1 for g in groups.values()) / count,
            "answers_repeated_wrong_share": sum(len(w) != len(set(w)) for w in wrong_answers) / count}
