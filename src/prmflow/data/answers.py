"""Final answers: extracted from a solution, stripped of presentation, and compared by value.

`extract_final_answer(text, reading)` reads markers (`strict`) or, without one, also a real generator's
concluding sentence (`flexible`, answer_reading.py); `states_final_answer` is the one rule behind serving's
`has_final_answer` and evaluate's best-of-N; `reading_agreement` measures a reading against a source's grading.

GSM8K writes `#### 1,200` and sometimes `$18` or `18 dollars`; MATH writes `\\boxed{\\frac{1}{2}}`
inside a LaTeX solution, sometimes with `\\text{ cm}` units or a `^\\circ`; a model may end with
`A: 18`. `normalize_answer` strips what is presentation, not value (currency, units, degrees,
thousands separators of a plain number, a trailing period) and keeps a percent sign as `\\%`.

`answers_equivalent` never calls a wrong answer right (tests/fixtures/answers/equivalence.jsonl). math-verify 0.9 is the engine,
but its `parse` searches the text for anything it can read: when `1 - \\frac{1}{\\mathrm{e}}` fails
to parse it falls back to the `1` at its start, so two different answers "match". Here each
side is read whole by math-verify's LaTeX normalisation and parser (`parse_latex_cached`), and
the result is None (unknown) when either side does not parse completely: prose, a lost digit,
a parse error. A `Reading` that fails is never replaced by a fragment of it.

Conventions, each a row of tests/fixtures/answers/equivalence.jsonl:
- mixed numbers `1 1/4`, `2\\frac{1}{4}` are their value (5/4, 9/4);
- `25\\%` equals `0.25` only when the reference is the percentage; a predicted `25%` against a
  reference `25` compares the written number (GSM8K's "what percent" answers are bare numbers);
- `115,000` is a number only when the whole answer is one (`[1-9]\\d{0,2}(,\\d{3})+`); `12,34` and
  `0,1` are lists, `(0,1)` an interval or pair, and a list never equals an interval or a tuple;
- `1.5e3` is scientific notation (math-verify alone reads it as 1.5·e·3), `\\mathrm{e}` is Euler's e.

    normalize_answer("$1,200.")          -> "1200"
    answers_equivalent("0.5", "\\frac{1}{2}")  -> True
    answers_equivalent("4\\sqrt(2)", "4")      -> False (4√2 ≠ 4)
    answers_equivalent("18 apples and 3 pears", "18")  -> None (prose does not parse)
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction

from prmflow.data.answer_reading import PARSE_TIMEOUT_S, concluding_statement, stated_answer
from prmflow.param_rules import ANSWER_READINGS

_UNIT_WORDS = (r"dollars?|cents?|pounds?|kg|kilograms?|grams?|km|kilometers?|meters?|cm|mm|miles?|"
               r"feet|foot|ft|inches?|hours?|hrs?|minutes?|mins?|seconds?|secs?|days?|weeks?|years?|"
               r"liters?|ml|gallons?|units?|degrees?|sq|square")
_SHORT_UNITS = r"g|m|l|in"  # one or two letters: a unit only after a space, else `2m` is 2·m
_TRAILING_UNITS = re.compile(rf"(?<=[\d}}])(?:\s*(?:{_UNIT_WORDS})|\s+(?:{_SHORT_UNITS}))\b\.?$", re.IGNORECASE)
_TEXT_UNITS = re.compile(r"\\(?:text|textbf|mbox|mathrm)\{\s*(?:" + _UNIT_WORDS + "|" + _SHORT_UNITS
                         + r")\s*\}(?:\^\{?\d\}?)?", re.IGNORECASE)
# `5 apples`, `12 red apples`: words after a plain number name what is counted (GSM8K); not `2 pi`, `5 sin`.
_COUNTED = re.compile(r"(-?[\d.,]*\d(?:\s+\d+/\d+)?)(?:\s+(?!(?:sqrt|sin|cos|tan|log|exp|and|or)\b)[A-Za-z]{3,}){1,3}")
_PERCENT = re.compile(r"\s*(?:\\?%|\\text\{\s*\\?%\s*\}|\s(?:percent|per cent))$", re.IGNORECASE)
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|°|\\degree")
_PLAIN_THOUSANDS = re.compile(r"-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")
_UNICODE = {"−": "-", "–": "-", "×": "\\times ", "·": "\\cdot ", "π": "\\pi ", "√": "\\sqrt"}


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


# `#### x` (GSM8K), `The answer is x`, and a final-answer line `A: x` / `Answer: x` / `**Final answer:** x`.
_FINAL_MARKERS = (re.compile(r"####\s*([^\n]+)"), re.compile(r"[Tt]he (?:final )?answer is:?\s*([^\n]+)"),
                  re.compile(r"^[ \t]*(?:\*\*)?(?:(?:[Ff]inal )?[Aa]nswer|A)(?:\*\*)?[ \t]*:[ \t]*(?:\*\*)?[ \t]*"
                             r"([^\n]+)", re.MULTILINE))
_SENTENCE_END = re.compile(r"\.\s.*$", re.DOTALL)  # `18. So she ...`: the answer ends at the sentence


def extract_final_answer(text: str, reading: str = "strict") -> str | None:
    """The final answer a generated solution states; None if none.

    `reading`: `strict` reads the markers only (`#### x`, `\\boxed{x}`, `The answer is x`, `A: x` /
    `Answer: x` lines), the last marker winning (a solution may restate its answer); `flexible` also
    reads a real generator's concluding sentence when there is no marker ("Therefore, Janet makes
    $18 every day." -> `18`; answer_reading.stated_answer), but not a solution cut mid-sentence.
    ValueError for another `reading`.
    """
    if reading not in ANSWER_READINGS:
        raise ValueError(f"answer reading {reading!r} is not one of {', '.join(ANSWER_READINGS)}")
    marked = _marked_answer(text)
    if marked is not None or reading == "strict":
        return marked
    return stated_answer(text)


def states_final_answer(steps: list[str], reading: str) -> bool:
    """Whether a solution's steps (joined by newlines) state a final answer under `reading`: the rule behind
    serving's `has_final_answer` and evaluate's best-of-N ranking by (has_final_answer, score), so the two agree."""
    return extract_final_answer("\n".join(steps), reading) is not None


def _marked_answer(text: str) -> str | None:
    boxed = extract_boxed(text)
    candidates = [(text.rfind("\\boxed"), boxed)] if boxed is not None else []
    for marker in _FINAL_MARKERS:
        found = list(marker.finditer(text))
        if found:
            candidates.append((found[-1].start(), found[-1].group(1)))
    if not candidates:
        return None
    answer = _SENTENCE_END.sub("", max(candidates, key=lambda pair: pair[0])[1]).strip()
    answer = re.sub(r"^\*\*|\*\*$", "", answer).strip()
    return answer.rstrip(".").strip() or None


def normalize_answer(text: str) -> str:
    """The answer without presentation: no `$`, units, degrees, `\\!`, trailing period, or thousands commas of
    a plain number; a percent sign, kept because it changes the value, is written `\\%` at the end."""
    answer = text.strip()
    boxed = extract_boxed(answer)
    if boxed is not None:
        answer = boxed
    for raw, latex in _UNICODE.items():
        answer = answer.replace(raw, latex)
    answer = answer.replace("\\$", "").replace("\\!", "").replace("{,}", ",")
    answer = re.sub(r"(?<=\d)\\,(?=\d{3}(?!\d))", ",", answer)  # `2\,000`: a thin space between thousands
    answer = re.sub(r"^\$|\$$", "", answer.strip()).strip().rstrip(".").strip()  # `$18` money, `$x$` math
    percent = _PERCENT.search(answer)
    answer = _PERCENT.sub("", answer) if percent else answer
    answer = _DEGREES.sub("", answer)
    answer = _TEXT_UNITS.sub("", answer)
    answer = _TRAILING_UNITS.sub("", answer.strip()).strip().rstrip(".").strip()
    counted = _COUNTED.fullmatch(answer)
    answer = counted.group(1) if counted else answer
    if _PLAIN_THOUSANDS.fullmatch(answer):
        answer = answer.replace(",", "")
    return answer + "\\%" if percent and answer else answer


# ---------------------------------------------------------------- reading an answer whole

_MIXED = re.compile(r"(-?)(\d+)(?:\s+(\d+)\s*/\s*(\d+)|\s*\\[dt]?frac\{(\d+)\}\{(\d+)\})")
_SCIENTIFIC = re.compile(r"(-?\d+(?:\.\d+)?)[eE]([+-]?\d+)")
_SQRT_PAREN = re.compile(r"\\sqrt\s*\(([^()]*)\)")
_EULER = re.compile(r"\\(?:mathrm|text|operatorname)\{e\}")
_PROSE = re.compile(r"(?<![\\a-zA-Z])(?!(?:and|or)\b)[a-zA-Z]{3,}")  # a word outside \text{}: not math


@dataclass(frozen=True)
class Reading:
    """An answer read whole: `value` a sympy object (number, expression, set, interval, tuple, relation);
    `percent` when it was written `v\\%` (then `value` is v, not v/100)."""

    value: object
    percent: bool


def _latex(answer: str) -> tuple[str, bool]:
    """The normalized answer rewritten where math-verify misreads it; whether it is a percentage."""
    text = normalize_answer(answer)
    percent = text.endswith("\\%")
    text = text.removesuffix("\\%").strip()
    text = _EULER.sub("e", _SQRT_PAREN.sub(r"\\sqrt{\1}", text))
    if text.startswith("."):
        text = "0" + text
    mixed = _MIXED.fullmatch(text)
    if mixed:
        sign, whole = mixed.group(1), int(mixed.group(2))
        num, den = (int(g) for g in (mixed.group(3, 4) if mixed.group(3) else mixed.group(5, 6)))
        if 0 < num < den:  # a proper fraction after a whole number: `1 1/4` = 5/4
            value = whole + Fraction(num, den)
            text = f"{sign}\\frac{{{value.numerator}}}{{{value.denominator}}}"
    scientific = _SCIENTIFIC.fullmatch(text)
    if scientific:
        text = f"{scientific.group(1)}\\times 10^{{{scientific.group(2)}}}"
    return text, percent


def parse_answer(answer: str) -> Reading | None:
    """The answer read whole by math-verify's LaTeX normalisation and parser; None when any of it is not read.

    Not read: an empty answer, prose (a word of 3+ letters outside `\\text{}`), a digit lost in
    normalisation, a parse error or timeout. Raises nothing.
    """
    from latex2sympy2_extended.latex2sympy2 import NormalizationConfig, normalize_latex
    from math_verify.errors import TimeoutException
    from math_verify.parser import parse_latex_cached
    from math_verify.utils import timeout

    text, percent = _latex(answer)
    if not text or _PROSE.search(re.sub(r"\\text\{[^{}]*\}", "", text)):
        return None
    # Our own units rule above: math-verify's would cut a trailing `c`, `t` or `m` (`2t` -> `2`).
    config = NormalizationConfig(basic_latex=True, units=False, malformed_operators=True, nits=False,
                                 boxed="none", equations=False)
    latex = normalize_latex(text, config=config)
    if sorted(re.findall(r"\d", latex)) != sorted(re.findall(r"\d", text)):
        return None
    try:
        value = timeout(timeout_seconds=PARSE_TIMEOUT_S)(parse_latex_cached)(latex)
    except (Exception, TimeoutException):  # latex2sympy raises plain Exception on a parse error
        return None
    return Reading(value, percent)


def _kind(value: object) -> str:
    """set, interval, tuple or value: a list of answers is never an interval or an ordered pair."""
    import sympy

    if isinstance(value, sympy.FiniteSet):
        return "set"
    if isinstance(value, (sympy.Interval, sympy.Union)):
        return "interval"
    return "tuple" if isinstance(value, sympy.Tuple) else "value"


def _same_value(gold: object, guess: object) -> bool:
    from math_verify import verify

    if _kind(gold) != _kind(guess):
        return False
    return verify(gold, guess, timeout_seconds=PARSE_TIMEOUT_S)


def answers_equivalent(predicted: str, reference: str) -> bool | None:
    """Whether two answers have the same value; None (unknown) when either side does not parse completely.

    Identical after `normalize_answer` is equal without parsing. A percentage reference `25\\%`
    accepts `25`, `25%` and `0.25`; a plain reference compares the written numbers (`25%` = `25`).
    """
    if normalize_answer(predicted) == normalize_answer(reference):
        return True
    guess, gold = parse_answer(predicted), parse_answer(reference)
    if guess is None or gold is None:
        return None
    if gold.percent and not guess.percent:
        import sympy

        return _same_value(gold.value, guess.value) or _same_value(gold.value * sympy.Rational(1, 100), guess.value)
    return _same_value(gold.value, guess.value)


def answer_agreement(rows: list[dict]) -> dict[str, float]:
    """Share of problems where two samples share a right answer, and where two share a wrong one.

    `rows`: sampled solutions with `problem_id` (or `problem`), `predicted_answer` and `correct`.
    Majority vote needs only the first; it fails on the second. Real generators on GSM8K: about
    45% and 20% with 4 samples (bench/policy_agreement.py); the simulated policy's misconceptions are calibrated to them.
    """
    groups: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for row in rows:
        key = row["problem_id"] if "problem_id" in row else row["problem"]
        groups[str(key)].append((str(row["predicted_answer"]), bool(row["correct"])))
    wrong_answers = [[a for a, correct in g if not correct] for g in groups.values()]
    count = max(len(groups), 1)
    return {"answers_repeated_right_share": sum(sum(c for _, c in g) > 1 for g in groups.values()) / count,
            "answers_repeated_wrong_share": sum(len(w) != len(set(w)) for w in wrong_answers) / count}


def reading_agreement(rows: list[dict], reading: str) -> dict[str, float]:
    """How the answers `extract_final_answer(steps, reading)` reads agree with a source's own grading.

    `rows`: candidates with `steps`, `answer` (the reference), `predicted_answer` and `correct` (the source's
    extraction and grading). Returns `right_read_right` (of the rows graded right, the share read and judged
    right against `answer`), `wrong_read_right` (of those graded wrong, the share judged right: each is a
    wrong label or reward), `agrees_with_source` (the share whose answer equals `predicted_answer`),
    `read` (the share with an answer read) and the row counts. Judged by `answers_equivalent`.

    `wrong_read_right_source_slips` counts the rows graded wrong but judged right whose source answer is the
    last number of the concluding sentence other than the value read (`$10,000` -> `000`, "**$64** for the 16
    glasses" -> `16`): the source's extractor took the wrong number, and its grade is what is wrong.
    `wrong_read_right_net` is `wrong_read_right` without them.
    """
    right = wrong = right_read = wrong_read = agree = read_any = slips = 0
    for row in rows:
        answer = extract_final_answer("\n".join(row["steps"]), reading)
        judged = answer is not None and answers_equivalent(answer, str(row["answer"])) is True
        read_any += answer is not None
        agree += answer is not None and answers_equivalent(answer, str(row["predicted_answer"])) is True
        if row["correct"]:
            right, right_read = right + 1, right_read + judged
        else:
            wrong, wrong_read = wrong + 1, wrong_read + judged
            numbers = re.findall(r"\d+(?:\.\d+)?", concluding_statement("\n".join(row["steps"]).strip()) or "")
            slips += judged and bool(numbers) and numbers[-1] == str(row["predicted_answer"]).strip()
    return {"right_read_right": right_read / max(right, 1), "wrong_read_right": wrong_read / max(wrong, 1),
            "wrong_read_right_source_slips": slips, "wrong_read_right_net": (wrong_read - slips) / max(wrong, 1),
            "agrees_with_source": agree / max(len(rows), 1), "read": read_any / max(len(rows), 1),
            "rows": len(rows), "graded_right": right, "graded_wrong": wrong}
