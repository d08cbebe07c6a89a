from fractions import Fraction

from prmflow.data.calc import annotation_result, evaluate, format_number, parse_step, render_step, tokenize_expression


def test_evaluate_is_exact_with_precedence_and_parentheses():
    assert evaluate(tokenize_expression("2+3*4")) == 14
    assert evaluate(tokenize_expression("(2+3)*4")) == 20
    assert evaluate(tokenize_expression("7/2")) == Fraction(7, 2)
    assert evaluate(tokenize_expression("1,200-200")) == 1000
    assert evaluate(tokenize_expression("5*(-2)")) == -10


def test_format_number():
    assert format_number(Fraction(24)) == "24"
    assert format_number(Fraction(7, 2)) == "3.5"
    assert format_number(Fraction(-1, 8)) == "-0.125"
    assert format_number(Fraction(1, 3)) == "0.3333"


def test_numbers_equal_to_earlier_results_become_references():
    step = parse_step("She has 24 + 6 = <<24+6=30>>30 clips.", [Fraction(48), Fraction(24)])
    refs = [t.ref for t in step.tokens if not isinstance(t, str)]
    assert refs == [1, None]
    assert step.compute([Fraction(48), Fraction(25)]) == 31  # carries the prefix's own value forward


def test_render_rewrites_visible_expression_annotation_and_result():
    step = parse_step("Now Ava has 12 + 5 = <<12+5=17>>17 apples.", [Fraction(12)])
    text = render_step(step, step.operand_texts([Fraction(13)]), Fraction(18))
    assert text == "Now Ava has 13 + 5 = <<13+5=18>>18 apples."
    assert annotation_result(text) == 18


def test_step_without_annotation():
    assert parse_step("So the answer is clear.", []) is None
    assert annotation_result("no numbers here") is None
