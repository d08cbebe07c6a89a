"""From a trainer's prompt and completion, as it holds them, to the PRM's (problem, completion text).

Trainers hand rewards what they generated from: a plain prompt, a prompt with a chat template applied
(OpenRLHF's `--apply_chat_template`, a TRL prompt rendered by hand), or a list of chat messages (TRL's
conversational format). The PRM was trained on the problem alone, so the problem is read out of it:

- messages: the content of the last `user` message;
- a string with a chat template applied: the last user turn of the templates in USER_TURNS (ChatML,
  Llama 3, Gemma, Mistral `[INST]`), its markup removed;
- prmflow's own policy prompt (`Question: ...\\nAnswer:\\n`, labeling/completion_text.py): the question;
- any other string: the string itself, stripped.

A completion is a string, or (conversational) a list of messages whose contents are joined. End-of-turn and
padding tokens that a trainer decodes with `skip_special_tokens=False` (OpenRLHF's query, a padded batch) are
cut off its end, as many as follow it, so a reward is the same whatever of them the policy emitted: the policy
tokenizer's special tokens (`end_tokens(tokenizer)`: eos, pad, bos, unk and `additional_special_tokens`, and
every added token marked special, e.g. Llama 3's `<|eot_id|>`), always with the fallback list END_OF_TURN of
the common families' end-of-turn and padding tokens (what is cut where no tokenizer is named).
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
END_OF_TURN = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<end_of_turn>",
               "<|end|>", "<|endofturn|>", "</s>", "<eos>", "<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>",
               "<|PAD_TOKEN|>", "<|return|>")  # ChatML, Llama 3, Gemma, Phi, Mistral/Llama 2, gpt-oss; pads


def end_tokens(tokenizer=None) -> tuple[str, ...]:
    """The token texts cut off a completion's end: `tokenizer`'s special tokens (module doc) and END_OF_TURN,
    longest first (a token that ends with a shorter one is cut whole)."""
    tokens = set(END_OF_TURN)
    if tokenizer is not None:
        tokens |= set(tokenizer.all_special_tokens)
        tokens |= {str(added) for added in getattr(tokenizer, "added_tokens_decoder", {}).values()
                   if getattr(added, "special", False)}
    return tuple(sorted((t for t in tokens if t.strip()), key=lambda t: (-len(t), t)))


DEFAULT_END_TOKENS = end_tokens()


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


def completion_text(completion, ends: tuple[str, ...] = DEFAULT_END_TOKENS) -> str:
    """A completion as one text: a string, or the joined contents of its messages; every end-of-turn and padding
    token in `ends` (end_tokens) that follows it cut off, with the whitespace between them."""
    if isinstance(completion, list):
        completion = "\n".join(message_text(m.get("content", "")) for m in completion if isinstance(m, dict))
    if not isinstance(completion, str):
        raise ValueError(f"completion: must be a string or a list of chat messages, got {type(completion).__name__}")
    text = completion.rstrip()
    while text.endswith(ends):
        text = text[: -len(next(t for t in ends if text.endswith(t)))].rstrip()
    return text


def response_from_query(query: str, prompt: str, index: int, ends: tuple[str, ...] = DEFAULT_END_TOKENS) -> str:
    """OpenRLHF's response: its query is the prompt and the response decoded together; raises ValueError
    naming the index when the prompt is not found in the query."""
    at = query.find(prompt)
    if at < 0:
        raise ValueError(f"queries[{index}]: does not contain prompts[{index}] (a query is the prompt followed by the "
                         f"response; {len(query)} and {len(prompt)} characters)")
    return completion_text(query[at + len(prompt):], ends)
