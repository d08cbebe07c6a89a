"""A seeded procedural generator of grade-school word problems.

Each problem follows one quantity through 2..8 operations (add, subtract, multiply, divide,
and optionally "keep a simple fraction of it"); each operation is one sentence of the
problem and one reference step written with a calculator annotation
(`12 + 5 = <<12+5=17>>17`), so the simulated policy can re-derive it. Answers are exact:
integer problems divide evenly; decimal problems (opt-in, `decimal_rate`) are about
measured amounts with at most two decimal places, which `calc.format_number` writes back
exactly. Wording varies over several sentence templates per operation, names, and things.

    from prmflow.config import IngestParams
    from prmflow.data.generator import generate_problems
    problems = generate_problems(10, seed=0, settings=IngestParams(max_steps=8, fraction_rate=0.2))

The difficulty knobs are the `ingest` section's (min_steps, max_steps, max_operand, decimal_rate,
fraction_rate), read from an `IngestParams`.
"""

from __future__ import annotations

import random
from fractions import Fraction

from prmflow.config import IngestParams
from prmflow.data.calc import format_number

NAMES = ["Ava", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jamal", "Kira", "Leo",
         "Mei", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor", "Wen", "Yara"]
ITEMS = ["apples", "stickers", "marbles", "books", "coins", "cookies", "pencils", "shells", "cards", "stamps",
         "beads", "crayons", "eggs", "balloons", "toy cars", "seeds", "buttons", "postcards"]
# Amounts that can be fractional; used by decimal problems.
MEASURES = ["kg of flour", "liters of juice", "meters of ribbon", "dollars", "kg of rice", "liters of paint"]

# Each operation: (sentence in the problem, reference step); {x} is the running value, {b} the operand.
ADD = [
    ("Then {name} buys {b} more {item}.", "After buying more, {name} has {x} + {b} = {calc} {item}."),
    ("A friend gives {name} {b} {item}.", "With the gift, {name} has {x} + {b} = {calc} {item}."),
    ("Later {name} finds another {b} {item}.", "Adding what was found: {x} + {b} = {calc} {item}."),
    ("{name}'s aunt adds {b} {item} to the pile.", "The pile grows to {x} + {b} = {calc} {item}."),
]
SUB = [
    ("Then {name} gives away {b} {item}.", "After giving some away, {name} has {x} - {b} = {calc} {item}."),
    ("{name} loses {b} {item} on the way home.", "After losing some, {name} has {x} - {b} = {calc} {item}."),
    ("{name} uses up {b} of the {item} for a project.", "What is left is {x} - {b} = {calc} {item}."),
    ("Next, {name} sells {b} {item} at the market.", "After the sale, {name} keeps {x} - {b} = {calc} {item}."),
]
MUL = [
    ("Then the number of {item} {name} has becomes {b} times as large.",
     "Now {name} has {x} * {b} = {calc} {item}."),
    ("{name} trades each of the {item} for {b} new ones.", "After the trade, {name} has {x} * {b} = {calc} {item}."),
    ("By the end of the month, {name} has {b} times as many {item} as before.",
     "That is {x} * {b} = {calc} {item}."),
]
DIV = [
    ("{name} splits the {item} equally into {b} bags and keeps one bag.",
     "One bag holds {x} / {b} = {calc} {item}."),
    ("{name} shares the {item} equally among {b} friends, {name} included, and keeps one share.",
     "Each share is {x} / {b} = {calc} {item}."),
    ("{name} packs the {item} into {b} equal boxes and gives away all boxes but one.",
     "One box holds {x} / {b} = {calc} {item}."),
]
# A simple fraction p/q of the running value; {b} is rendered as `p/q`.
FRACTION = [
    ("{name} keeps {b} of the {item} and donates the rest.", "{name} keeps {x} * {b} = {calc} {item}."),
    ("Only {b} of the {item} are still good, and {name} throws the others out.",
     "The good ones are {x} * {b} = {calc} {item}."),
]
OPENINGS = ["{name} has {x} {item}.", "{name} starts the day with {x} {item}.", "At first, {name} owns {x} {item}."]
QUESTIONS = [
    "How many {item} does {name} have at the end?",
    "How many {item} does {name} end up with?",
    "How many {item} are left with {name} now?",
]
OPS = {"+": ADD, "-": SUB, "*": MUL, "/": DIV, "frac": FRACTION}
SIMPLE_FRACTIONS = [Fraction(1, 2), Fraction(1, 3), Fraction(2, 3), Fraction(1, 4), Fraction(3, 4),
                    Fraction(1, 5), Fraction(2, 5), Fraction(3, 5), Fraction(4, 5)]
DECIMAL_PARTS = [Fraction(1, 4), Fraction(1, 2), Fraction(3, 4), Fraction(1, 5), Fraction(1, 10)]


def _exact_enough(value: Fraction, decimal: bool) -> bool:
    """Integers for integer problems; at most two decimal places (money, measurements) for decimal ones."""
    return (value * (100 if decimal else 1)).denominator == 1


def _operand(rng: random.Random, max_operand: int, decimal: bool) -> Fraction:
    whole = Fraction(rng.randint(1, max_operand))
    return whole + rng.choice(DECIMAL_PARTS) if decimal and rng.random() < 0.5 else whole


def _next_operation(rng: random.Random, x: Fraction, s: IngestParams, decimal: bool) -> tuple[str, Fraction]:
    """Pick an operation that keeps the running value positive, exact and of modest size."""
    if rng.random() < s.fraction_rate:
        fits = [f for f in SIMPLE_FRACTIONS if x * f >= 1 and _exact_enough(x * f, decimal)]
        if fits:
            return "frac", rng.choice(fits)
    divisors = [Fraction(b) for b in range(2, min(s.max_operand, int(x)) + 1) if _exact_enough(x / b, decimal)]
    choices = ["+"]
    if x > 1:
        choices.append("-")
    if x * 2 <= s.max_operand * 10:
        choices.append("*")
    if divisors:
        choices.append("/")
    op = rng.choice(choices)
    if op == "+":
        return op, _operand(rng, s.max_operand, decimal)
    if op == "-":
        b = _operand(rng, max(1, min(int(x) - 1, s.max_operand)), decimal)
        return op, b if b < x else x / 2  # only decimals between 1 and 2 can draw too much
    if op == "*":
        return op, Fraction(rng.randint(2, max(2, min(9, s.max_operand * 10 // max(int(x), 1)))))
    return op, rng.choice(divisors)


def _apply(op: str, x: Fraction, b: Fraction) -> Fraction:
    return {"+": x + b, "-": x - b, "*": x * b, "/": x / b, "frac": x * b}[op]


def _numbers_in(op: str, b: Fraction) -> list[Fraction]:
    """The constants an operation writes into its annotation (`p/q` writes two)."""
    return [Fraction(b.numerator), Fraction(b.denominator)] if op == "frac" else [b]


def _render_operand(op: str, b: Fraction, spaced: bool = False) -> str:
    """`p/q` in the problem; `p / q` in a step, spaced as the simulated policy re-renders it."""
    return (f"{b.numerator} / {b.denominator}" if spaced else f"{b.numerator}/{b.denominator}") if op == "frac" \
        else format_number(b)


def generate_problem(rng: random.Random, settings: IngestParams) -> dict:
    decimal = rng.random() < settings.decimal_rate
    name, item = rng.choice(NAMES), rng.choice(MEASURES if decimal else ITEMS)
    x = Fraction(rng.randint(2, settings.max_operand))
    if decimal:
        x += rng.choice(DECIMAL_PARTS)
    sentences = [rng.choice(OPENINGS).format(name=name, x=format_number(x), item=item)]
    steps = []
    results: set[Fraction] = set()
    for _ in range(rng.randint(settings.min_steps, settings.max_steps)):
        op, b = _next_operation(rng, x, settings, decimal)
        for _retry in range(10):  # a constant equal to an earlier result would read as a reference to it
            if not results & set(_numbers_in(op, b)):
                break
            op, b = _next_operation(rng, x, settings, decimal)
        y = _apply(op, x, b)
        shown_x, shown_b, shown_y = format_number(x), _render_operand(op, b), format_number(y)
        expr_op = "*" if op == "frac" else op
        sentence, step = rng.choice(OPS[op])
        calc = f"<<{shown_x}{expr_op}{shown_b}={shown_y}>>{shown_y}"
        sentences.append(sentence.format(name=name, item=item, b=shown_b))
        steps.append(step.format(name=name, item=item, x=shown_x, b=_render_operand(op, b, spaced=True), calc=calc))
        results.add(y)
        x = y
    sentences.append(rng.choice(QUESTIONS).format(name=name, item=item))
    return {"problem": " ".join(sentences), "answer": format_number(x), "reference_steps": steps}


def generate_problems(count: int, seed: int, settings: IngestParams | None = None) -> list[dict]:
    """`count` distinct problems, the same for the same arguments; `settings`: the difficulty knobs (default: the
    `ingest` section's defaults)."""
    settings = settings or IngestParams()
    rng = random.Random(seed)
    problems, seen = [], set()
    while len(problems) < count:
        problem = generate_problem(rng, settings)
        if problem["problem"] in seen:
            continue
        seen.add(problem["problem"])
        problems.append(problem)
    return problems
