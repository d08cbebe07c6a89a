"""Reading the final answer a real generator states in a sentence (the `flexible` answer reading).

Instruction-tuned generators rarely write `#### 18`; QwQ-32B ends "Therefore, Janet makes $18 every
day.", "... is \\( 260 \\).", "... is **14 old records**." or "Thus, the value is:\\n\\[ \\frac{3}{4} \\]".
`stated_answer` reads that statement:

1. The solution must end a sentence (`.`, `!`, a closed `**bold**`, `\\]`, `\\)` or `$`). A solution
   that stops mid-sentence was cut (a length limit, a stop token) and states no answer: reading the
   last number of a half-written step would call an unfinished computation an answer, which gives a
   right-looking intermediate value a reward and a label it has not earned. It reads None.
2. The statement is the last paragraph (a closing display equation belongs to the sentence that
   introduces it). Within it, the last sentence that opens with a concluding word (Therefore, Thus,
   So, Hence, Finally, In total, ...) is the answer's sentence, else the last sentence: a sentence
   after the conclusion that restates an intermediate value does not replace the answer.
3. In that sentence a bold span holding a value wins (the generator's own emphasis); otherwise the
   last value math-verify's extraction finds in the sentence (`math_verify.parse`: LaTeX spans, then
   plain numbers), so "not 5, but 7" reads 7. In a span `a = b = 18` the value is after the last `=`.

Markers (`####`, `\\boxed{}`, "The answer is", `Answer:` lines) are read before this, by
answers.extract_final_answer, and win whenever they are present.
Measured on QwQ-32B's GSM8K and MATH-500 candidates against the source's grading: bench/answer_reading.py.
"""

from __future__ import annotations

import re
import threading

PARSE_TIMEOUT_S = 5  # math-verify's own default; sympy can stall on towers such as 10^{10^{10}}

# A sentence ends here; anything else at the end of a solution means it was cut.
_COMPLETE = re.compile(r"(?:[.!]|\*\*|\\\]|\\\)|\$)[\s*.]*$")
_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_DISPLAY_ONLY = re.compile(r"^\s*(?:\\\[.*\\\]|\$\$.*\$\$)[\s.]*$", re.DOTALL)
# A sentence ends at `.`/`!` before a space and a capital, bold or LaTeX (`0.5`, `e.g. x` stay whole), and a line
# break starts one before a list item or a capitalised word (not before a display's `\\text` or `T = ...`).
_SENTENCE_BREAK = re.compile(r"(?<=[.!])\s+(?=[A-Z*\\$])|\n+(?=[ \t]*(?:[-*]|\d+[.)])\s|[ \t]*[A-Z][a-z])")
_CONCLUDING = re.compile(r"^\W*(?:therefore|thus|so|hence|finally|in total|in conclusion|in summary|altogether|"
                         r"overall|consequently|this means|the final|the total|the answer)\b", re.IGNORECASE)
_BOLD = re.compile(r"\*\*(.+?)\*\*", re.DOTALL)
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_VALUE = re.compile(r"\d|\\frac|\\sqrt|\\pi|\\infty")
_TRAILING_TEXT = re.compile(r"(?<=\S)\s*\\(?:text|mbox|mathrm)\{[^{}]*\}\s*$")


def _sentences(paragraph: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_BREAK.split(paragraph) if s.strip()]


def concluding_statement(text: str) -> str | None:
    """The sentence that states the answer (module rule 2); None for an empty text."""
    paragraphs = [p for p in _PARAGRAPH.split(text) if p.strip()]
    if not paragraphs:
        return None
    last = paragraphs[-1]
    if _DISPLAY_ONLY.match(last) and len(paragraphs) > 1:
        lead = _sentences(paragraphs[-2])
        return (lead[-1] if lead else "") + "\n" + last
    sentences = _sentences(last)
    concluding = [s for s in sentences if _CONCLUDING.match(s)]
    return (concluding or sentences)[-1] if sentences else None


def _after_equals(value: str) -> str:
    return re.split(r"(?<![<>!\\])=|\\approx", value)[-1].strip()


def _mathverify_value(text: str) -> str | None:
    """The last value math-verify's extraction reads in `text`, as written; None when it reads none."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    # math-verify's timeout is a SIGALRM, which only the main thread may set (a server scores in others);
    # one sentence is short enough to parse without it.
    limit = PARSE_TIMEOUT_S if threading.current_thread() is threading.main_thread() else 0
    # `\\$1430` is money, which math-verify reads as nothing; a value it cannot convert comes back as text alone.
    found = parse(text.replace("\\$", ""), [LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=limit)
    return found[-1] if found and isinstance(found[-1], str) and _VALUE.search(found[-1]) else None


def _bold_value(sentence: str) -> str | None:
    """The value of the last bold span that holds one: `**14 old records**` -> `14`, `**three**` -> `3`."""
    for span in reversed(_BOLD.findall(sentence)):
        inner = _after_equals(span.strip().strip(":").strip())
        if inner.lower() in _NUMBER_WORDS:
            return _NUMBER_WORDS[inner.lower()]
        if _VALUE.search(inner):  # `14 old records`: the value leads the words; LaTeX is read whole
            return _mathverify_value(inner if "\\" in inner or "$" in inner else inner.split()[0])
    return None


def _clean(value: str) -> str:
    value = _TRAILING_TEXT.sub("", _after_equals(value.strip().strip("$")).strip())
    return value.rstrip(".").strip()


def stated_answer(text: str) -> str | None:
    """The value a solution's concluding statement states (module rules 1-3); None when it was cut
    mid-sentence or its statement holds no value. `text`: the solution, steps joined by newlines. Raises nothing."""
    text = text.strip()
    if not text or not _COMPLETE.search(text):
        return None
    sentence = concluding_statement(text)
    if sentence is None:
        return None
    value = _bold_value(sentence) or _mathverify_value(sentence)
    return (_clean(value) or None) if value else None
