"""From a trainer's prompt and completion, as it holds them, to the PRM's (problem, completion text).

Trainers hand rewards what they generated from: a plain prompt, a prompt with a chat template applied
(OpenRLHF's `--apply_chat_template`, a TRL prompt rendered by hand), or a list of chat messages (TRL's
conversational format). The PRM was trained on the problem alone, so the problem is read out of it:

- messages: the content of the last `user` message;
- a string with a chat template applied: the last user turn of the templates in USER_TURNS (ChatML,
  Llama 3, Gemma, Mistral `[INST]`), its markup removed;
- prmflow's own policy prompt (`Question: ...\\nAnswer:\\n`, labeling/completion_text.py): the question;
- any other string: the string itself, stripped.

A completion is a string, or (conversational) a list of messages whose contents are joined. End-of-turn
tokens that a trainer decodes with `skip_special_tokens=False` (OpenRLHF's query) are cut off the end.
"""

from __future__ import annotations

import re

# The last user turn of common chat templates: (pattern, group holding the text). Searched in order.
USER_TURNS = (
    re.compile(r"<\|im_start\|>user\s*\n(.*?)<\|im_end\|>", re.S),                               # ChatML (Qwen, SmolLM)
    re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\s*(.*?)<\|eot_id\|>", re.S),       # Llama 3
    re.compile(r"<start_of_turn>user\s*\n(.*?)<end_of_turn>", re.S),                             # Gemma
    re.compile(r"\[INST\](.*?)\[/INST\]", re.S),                                                  # Mistral, Llama 2
)
PRMFLOW_PROMPT = re.compile(r"^Question: (.*?)\nAnswer:\n", re.S)
END_OF_TURN = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>", "<eos>")


def message_text(content) -> str:
    """A message's content: a string, or a list of parts of which the text parts are joined."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def problem_from_prompt(prompt) -> str:
    """The problem in a prompt (see module doc); raises ValueError when there is none to find."""
    if isinstance(prompt, list):
        users = [message_text(m.get("content", "")) for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            raise ValueError(f"prompt: a conversation without a user message (roles: "
                             f"{[m.get('role') for m in prompt if isinstance(m, dict)]})")
        return users[-1].strip()
    if not isinstance(prompt, str):
        raise ValueError(f"prompt: must be a string or a list of chat messages, got {type(prompt).__name__}")
    for pattern in USER_TURNS:
        turns = pattern.findall(prompt)
        if turns:
            return turns[-1].strip()
    own = PRMFLOW_PROMPT.search(prompt)
    return own.group(1).strip() if own else prompt.strip()


def completion_text(completion) -> str:
    """A completion as one text: a string, or the joined contents of its messages; end-of-turn tokens cut off."""
    if isinstance(completion, list):
        completion = "\n".join(message_text(m.get("content", "")) for m in completion if isinstance(m, dict))
    if not isinstance(completion, str):
        raise ValueError(f"completion: must be a string or a list of chat messages, got {type(completion).__name__}")
    text = completion.rstrip()
    while text.endswith(END_OF_TURN):
        text = text[: -len(next(t for t in END_OF_TURN if text.endswith(t)))].rstrip()
    return text


def response_from_query(query: str, prompt: str, index: int) -> str:
    """OpenRLHF's response: its query is the prompt and the response decoded together; raises ValueError
    naming the index when the prompt is not found in the query."""
    at = query.find(prompt)
    if at < 0:
        raise ValueError(f"queries[{index}]: does not contain prompts[{index}] (a query is the prompt followed by the "
                         f"response; {len(query)} and {len(prompt)} characters)")
    return completion_text(query[at + len(prompt):])
