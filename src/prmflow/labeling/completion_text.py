"""The text format of the language-model policies (`transformers`, `openai`).

The prompt is the problem and the prefix, one step per line; the model writes the remaining
steps, one per line, and its answer ends at the line that states the final answer (`#### x`,
`The answer is x`, `\\boxed{x}`). One step (`next_steps`, for step-level search) is the first line
the model writes; a step that states the final answer ends the solution, and so does an empty
one (the model stopped). Both policies build prompts and read completions here, so a
local model and a served one see and are judged on the same text.
"""

from __future__ import annotations

import re

from prmflow.data.answers import extract_final_answer

# A final-answer statement, complete once its line ends.
FINAL_ANSWER_LINE = re.compile(r"(?:####|[Tt]he (?:final )?answer is|\\boxed\{)[^\n]*\n")
# One step written: a line with something on it, ended.
STEP_LINE = re.compile(r"\S[^\n]*\n")


def prompt_text(problem: dict, prefix: list[str]) -> str:
    return f"Question: {problem['problem']}\nAnswer:\n" + "".join(f"{step}\n" for step in prefix)


def finish(generated: str, reading: str = "strict") -> tuple[list[str], str]:
    """The new steps (up to and including the final-answer line) and the answer read under `reading`
    (label.answer_reading; "" if none)."""
    end = FINAL_ANSWER_LINE.search(generated)
    text = generated[:end.end()] if end else generated
    steps = [line.strip() for line in text.split("\n") if line.strip()]
    return steps, extract_final_answer(text, reading) or ""


def finish_step(generated: str, reading: str = "strict") -> tuple[list[str], str, bool]:
    """(the step, as a list of at most one, its final answer or "", whether the solution ends there).

    `generated`: what the model wrote after the prompt, cut at or after the first step's line end
    (or wherever the model stopped).
    """
    line = generated.strip().split("\n")[0].strip()
    if not line:
        return [], "", True
    if FINAL_ANSWER_LINE.search(line + "\n"):
        return [line], extract_final_answer(line, reading) or "", True
    return [line], "", False
