"""How the steps of a solution are laid out as text: one home for the layout and the Math-Shepherd step tag.

    step_line("Step {i}. {step}", 0, "3 + 2 = 5")   # -> "Step 1. 3 + 2 = 5"
    step_line("Step {i}. {step}", 1, "5 * 2 = 10")  # -> "\\nStep 2. 5 * 2 = 10"

A step is its template (`model.step_template`, `{i}` the 1-based step number, `{step}` the text) on a
line of its own: every step but the first starts with a newline. The tokenizer (training and scoring),
the verification prompt and Math-Shepherd-format PRMs all write steps this way.
"""

MATH_SHEPHERD_TAG = "ки"  # the step tag of Math-Shepherd (Wang et al. 2024) data and checkpoints


def step_line(template: str, index: int, step: str) -> str:
    """Step `index` (0-based) of a solution rendered with `template`, preceded by a newline unless it is the first."""
    return ("\n" if index else "") + template.format(i=index + 1, step=step)
