"""A seeded procedural generator of grade-school word problems.

Each problem follows one quantity through 2..N operations (add, subtract, multiply, divide);
each operation is one sentence of the problem and one reference step written with a
calculator annotation (`12 + 5 = <<12+5=17>>17`), so the simulated policy can re-derive it.
Answers are exact integers: divisions are drawn so that they come out even.

    from prmflow.generator import generate_problems
    problems = generate_problems(10, seed=0, min_steps=2, max_steps=5, max_operand=20)
"""

from __future__ import annotations

import random

NAMES = ["Ava", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jamal", "Kira", "Leo"]
ITEMS = ["apples", "stickers", "marbles", "books", "coins", "cookies", "pencils", "shells", "cards", "stamps"]

# Each operation: the sentence in the problem, and the reference step; {x} is the running value.
ADD = [
    ("Then {name} buys {b} more {item}.", "After buying more, {name} has {x} + {b} = {calc} {item}."),
    ("A friend gives {name} {b} {item}.", "With the gift, {name} has {x} + {b} = {calc} {item}."),
]
SUB = [
    ("Then {name} gives away {b} {item}.", "After giving some away, {name} has {x} - {b} = {calc} {item}."),
    ("{name} loses {b} {item} on the way home.", "After losing some, {name} has {x} - {b} = {calc} {item}."),
]
MUL = [
    ("Then the number of {item} {name} has becomes {b} times as large.",
     "Now {name} has {x} * {b} = {calc} {item}."),
    ("{name} trades each of the {item} for {b} new ones.", "After the trade, {name} has {x} * {b} = {calc} {item}."),
]
DIV = [
    ("{name} splits the {item} equally into {b} bags and keeps one bag.",
     "One bag holds {x} / {b} = {calc} {item}."),
    ("{name} shares the {item} equally among {b} friends, {name} included, and keeps one share.",
     "Each share is {x} / {b} = {calc} {item}."),
]
QUESTIONS = [
    "How many {item} does {name} have at the end?",
    "How many {item} does {name} end up with?",
]

OPS = {"+": ADD, "-": SUB, "*": MUL, "/": DIV}


def _next_operation(rng: random.Random, x: int, max_operand: int) -> tuple[str, int]:
    """Pick an operation that keeps the running value a positive integer of modest size."""
    divisors = [b for b in range(2, min(max_operand, x) + 1) if x % b == 0]
    choices = ["+"]
    if x > 1:
        choices.append("-")
    if x * 2 <= max_operand * 10:
        choices.append("*")
    if divisors:
        choices.append("/")
    op = rng.choice(choices)
    if op == "+":
        return op, rng.randint(1, max_operand)
    if op == "-":
        return op, rng.randint(1, min(x - 1, max_operand))
    if op == "*":
        return op, rng.randint(2, max(2, min(9, max_operand * 10 // x)))
    return op, rng.choice(divisors)


def _apply(op: str, x: int, b: int) -> int:
    return {"+": x + b, "-": x - b, "*": x * b, "/": x // b}[op]


def generate_problem(rng: random.Random, min_steps: int, max_steps: int, max_operand: int) -> dict:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    x = rng.randint(2, max_operand)
    sentences = [f"{name} has {x} {item}."]
    steps = []
    results: set[int] = set()
    for _ in range(rng.randint(min_steps, max_steps)):
        op, b = _next_operation(rng, x, max_operand)
        for _retry in range(10):  # an operand equal to an earlier result would read as a reference to it
            if b not in results:
                break
            op, b = _next_operation(rng, x, max_operand)
        y = _apply(op, x, b)
        sentence, step = rng.choice(OPS[op])
        calc = f"<<{x}{op}{b}={y}>>{y}"
        sentences.append(sentence.format(name=name, item=item, b=b))
        steps.append(step.format(name=name, item=item, x=x, b=b, calc=calc))
        results.add(y)
        x = y
    sentences.append(rng.choice(QUESTIONS).format(name=name, item=item))
    return {"problem": " ".join(sentences), "answer": str(x), "reference_steps": steps}


def generate_problems(count: int, seed: int, min_steps: int, max_steps: int, max_operand: int) -> list[dict]:
    """`count` distinct problems, the same for the same arguments."""
    rng = random.Random(seed)
    problems, seen = [], set()
    while len(problems) < count:
        problem = generate_problem(rng, min_steps, max_steps, max_operand)
        if problem["problem"] in seen:
            continue
        seen.add(problem["problem"])
        problems.append(problem)
    return problems
