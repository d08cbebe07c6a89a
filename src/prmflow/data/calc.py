"""Calculator annotations (`<<48/2=24>>24`), the shared notation of GSM8K and our generator.

A reference step holds at most one annotation. `parse_step` turns it into a `CalcStep`:
the expression as tokens, where every number that equals an earlier step's result becomes a
reference to that step. That is what lets the simulated policy re-derive a solution from any
prefix: it substitutes the values the prefix actually holds and recomputes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

ANNOTATION = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
NUMBER = re.compile(r"\d+(?:\.\d+)?|\.\d+")  # GSM8K writes `.5` as well as `0.5`
_TOKEN = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+|[-+*/()])")


def to_number(text: str) -> Fraction:
    return Fraction(text.replace(",", ""))


def format_number(value: Fraction) -> str:
    """Exact decimal text for a value: integers plainly, terminating fractions as decimals."""
    if value.denominator == 1:
        return str(value.numerator)
    den, twos, fives = value.denominator, 0, 0
    while den % 2 == 0:
        den, twos = den // 2, twos + 1
    while den % 5 == 0:
        den, fives = den // 5, fives + 1
    if den != 1:  # non-terminating: keep a short rounded decimal
        return f"{float(value):.4f}".rstrip("0").rstrip(".")
    places = max(twos, fives)
    scaled = value * 10**places
    sign = "-" if scaled < 0 else ""
    digits = str(abs(scaled.numerator)).rjust(places + 1, "0")
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def tokenize_expression(expr: str) -> list[str]:
    tokens, pos = [], 0
    expr = expr.replace(",", "")
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if not match:
            if expr[pos:].strip() == "":
                break
            raise ValueError(f"cannot read expression {expr!r} at {expr[pos:]!r}")
        tokens.append(match.group(1))
        pos = match.end()
    return tokens


def evaluate(tokens: list[str | Fraction]) -> Fraction:
    """Exact arithmetic over + - * / and parentheses (recursive descent, no eval)."""
    pos = 0

    def atom() -> Fraction:
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "(":
            value = expression()
            pos += 1  # ')'
            return value
        if tok == "-":
            return -atom()
        if tok == "+":  # GSM8K sometimes starts a sum with `+`
            return atom()
        return tok if isinstance(tok, Fraction) else to_number(tok)

    def term() -> Fraction:
        nonlocal pos
        value = atom()
        while pos < len(tokens) and tokens[pos] in ("*", "/"):
            op, pos = tokens[pos], pos + 1
            rhs = atom()
            value = value * rhs if op == "*" else value / rhs
        return value

    def expression() -> Fraction:
        nonlocal pos
        value = term()
        while pos < len(tokens) and tokens[pos] in ("+", "-"):
            op, pos = tokens[pos], pos + 1
            rhs = term()
            value = value + rhs if op == "+" else value - rhs
        return value

    return expression()


@dataclass(frozen=True)
class Operand:
    """A number in an expression: a constant, or the result of an earlier step (`ref`)."""

    value: Fraction
    ref: int | None = None


@dataclass(frozen=True)
class CalcStep:
    text: str
    tokens: tuple[str | Operand, ...]  # operators as str, numbers as Operand
    result: Fraction

    def compute(self, results: list[Fraction]) -> Fraction:
        """Recompute with earlier steps' results taken from `results` (the prefix's own values)."""
        return evaluate([self.operand_value(t, results) for t in self.tokens])

    @staticmethod
    def operand_value(token: str | Operand, results: list[Fraction]) -> str | Fraction:
        if isinstance(token, str):
            return token
        return results[token.ref] if token.ref is not None else token.value

    def operand_texts(self, results: list[Fraction]) -> list[str]:
        """The expression's tokens as text, earlier results substituted; negatives in parentheses."""
        texts = []
        for token in self.tokens:
            value = self.operand_value(token, results)
            if isinstance(value, str):
                texts.append(value)
            else:
                texts.append(format_number(value) if value >= 0 else f"(-{format_number(-value)})")
        return texts


def parse_step(text: str, earlier_results: list[Fraction]) -> CalcStep | None:
    """Parse the annotation of a step; numbers equal to an earlier result refer to the latest such step."""
    match = ANNOTATION.search(text)
    if not match:
        return None
    try:
        raw_tokens = tokenize_expression(match.group(1))
        result = to_number(match.group(2).strip())
    except (ValueError, ZeroDivisionError):
        return None
    tokens: list[str | Operand] = []
    for tok in raw_tokens:
        if NUMBER.fullmatch(tok):
            value = to_number(tok)
            ref = next((i for i in range(len(earlier_results) - 1, -1, -1) if earlier_results[i] == value), None)
            tokens.append(Operand(value, ref))
        else:
            tokens.append(tok)
    return CalcStep(text=text, tokens=tuple(tokens), result=result)


def annotation_result(text: str) -> Fraction | None:
    """The result a step states in its annotation, or None when it has none."""
    match = ANNOTATION.search(text)
    if not match:
        return None
    try:
        return to_number(match.group(2).strip())
    except (ValueError, ZeroDivisionError):
        return None


def render_step(step: CalcStep, operands: list[str], result: Fraction) -> str:
    """Rewrite a step's text with new operand values and a (possibly wrong) result.

    The visible `a op b = ` just before the annotation and the number after it are rewritten
    too, so the text never shows one value and annotates another.
    """
    match = ANNOTATION.search(step.text)
    assert match is not None
    expr = "".join(operands)
    shown = format_number(result)
    before, after = step.text[: match.start()], step.text[match.end():]
    old_expr = match.group(1)
    visible = re.compile(r"(\$?)" + r"\s*".join(re.escape(t) for t in tokenize_expression(old_expr)) + r"(\s*=\s*)$")
    before = visible.sub(lambda m: m.group(1) + " ".join(_spaced(operands)) + m.group(2), before)
    old_result = match.group(2).strip()
    if after.startswith(old_result):
        after = shown + after[len(old_result):]
    return f"{before}<<{expr}={shown}>>{after}"


def _spaced(operands: list[str]) -> list[str]:
    """Operands as shown in text: `12 + 5`, keeping parentheses tight."""
    out: list[str] = []
    for tok in operands:
        if out and (tok == ")" or out[-1] == "("):
            out[-1] += tok
        else:
            out.append(tok)
    return out
