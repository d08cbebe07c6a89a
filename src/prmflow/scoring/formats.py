"""Which PRM format a checkpoint directory is in, read from its files alone (no weights loaded).

    recognised_format("checkpoints/math-shepherd")   # -> "math_shepherd"; None when it cannot tell

- `prmflow`: a `prm_config.json` beside the weights (what `prmflow train` saves).
- `trl`: a `*ForTokenClassification` architecture in config.json (TRL PRMTrainer outputs).
- `math_shepherd`: a causal LM whose vocabulary holds Math-Shepherd's step tag `ки` and whose tokenizer
  has no chat template. Multilingual vocabularies (Mistral's, Qwen's) hold `ки` too, so a tokenizer
  with a chat template is left undecided: it may as well be a chat PRM or a verification judge.
- `chat`, `zero_shot`: never recognised; they must be named.

Nothing here or in the loaders runs remote code: a checkpoint whose config.json or
tokenizer_config.json has `auto_map` is refused. Used by public_prms (scoring) and tokenization
(fine-tuning a Math-Shepherd-style checkpoint in its own format).
"""

from __future__ import annotations

import json
from pathlib import Path

from prmflow.data.step_text import MATH_SHEPHERD_TAG

PRM_CONFIG = "prm_config.json"
RECOGNISED = {"prmflow": PRM_CONFIG, "trl": "a *ForTokenClassification architecture in config.json",
              "math_shepherd": f"{MATH_SHEPHERD_TAG!r} in the vocabulary of a tokenizer without a chat template"}


def refuse_remote_code(path: str | Path) -> None:
    """Raise ValueError when the local checkpoint `path` declares remote code (`auto_map` in its config.json or
    tokenizer_config.json): prmflow never runs it, and every loader (public_prms, StepTagScorer, the reward
    family) refuses such a checkpoint rather than load it as something it is not."""
    for name in ("config.json", "tokenizer_config.json"):
        file = Path(path) / name
        if file.is_file() and "auto_map" in json.loads(file.read_text()):
            raise ValueError(f"{file}: auto_map: this checkpoint needs remote code (trust_remote_code), "
                             f"which prmflow never runs; convert it to a transformers architecture first")


def read_checkpoint_config(path: str | Path) -> dict:
    """config.json of a local checkpoint; refuses one that needs remote code (trust_remote_code stays off)."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path}: not a model directory (no config.json)")
    refuse_remote_code(path)
    return json.loads(config_file.read_text())


def is_token_classifier(config: dict) -> bool:
    return any(a.endswith("ForTokenClassification") for a in config.get("architectures") or [])


def has_math_shepherd_tag(tokenizer) -> bool:
    """A vocabulary entry holds `ки`, written plainly (sentencepiece) or as GPT-2 byte characters."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_chars = bytes_to_unicode()
    spellings = (MATH_SHEPHERD_TAG, "".join(byte_chars[b] for b in MATH_SHEPHERD_TAG.encode()))
    return any(s in token for token in tokenizer.get_vocab() for s in spellings)


def recognised_format(path: str | Path, tokenizer=None) -> str | None:
    """`prmflow`, `trl` or `math_shepherd` when the directory's files say so (see the module docstring), else None.

    `tokenizer`: the directory's, if already loaded (it is loaded otherwise, never with remote code).
    """
    path = Path(path)
    config = read_checkpoint_config(path)
    if (path / PRM_CONFIG).is_file():
        return "prmflow"
    if is_token_classifier(config):
        return "trl"
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    return "math_shepherd" if not tokenizer.chat_template and has_math_shepherd_tag(tokenizer) else None


def detect_format(path: str | Path, tokenizer=None) -> str:
    """`recognised_format`, or a ValueError that says what was looked for and which formats to name instead."""
    found = recognised_format(path, tokenizer)
    if found is None:
        raise ValueError(f"{path}: cannot tell its PRM format (looked for: {'; '.join(RECOGNISED.values())}); a "
                         f"causal LM with a chat template may be a chat PRM or a verification judge: pass format "
                         f"'chat', 'zero_shot' or 'math_shepherd'")
    return found


def label_token_id(tokenizer, token: str) -> int:
    """The id a PRM answers `token` with: the last id of its encoding (`▁+` for sentencepiece, `+` byte-level),
    as Math-Shepherd's and RLHFlow's reference code read them."""
    ids = tokenizer.encode(token, add_special_tokens=False)
    if not ids:
        raise ValueError(f"label token {token!r}: encodes to nothing")
    return ids[-1]
