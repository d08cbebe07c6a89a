"""Tokenizers of the common model families, trained locally on a small corpus (no hub).

Each builder mirrors its family's real pipeline (normalizer, pre-tokenizer, decoder, special
tokens) and saves it with a tiny model config, so `prepare_tokenizer` loads it through
`AutoTokenizer.from_pretrained(dir)` exactly as it loads a downloaded model.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

BYTE_PIECES = [f"<0x{i:02X}>" for i in range(256)]  # sentencepiece byte fallback
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
TINY = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2, "max_position_embeddings": 512}


def _sentencepiece_bpe(corpus: list[str], vocab_size: int, legacy_llama: bool) -> Tokenizer:
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    if legacy_llama:  # Llama 2: the normalizer turns spaces into "▁" and prepends one
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    else:  # Mistral / Llama 3-era sentencepiece conversions: a Metaspace pre-tokenizer
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + 256, special_tokens=["<unk>", "<s>", "</s>", *BYTE_PIECES],
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return tok


def _byte_level_bpe(corpus: list[str], vocab_size: int, specials: list[str], pattern: str | None) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    if pattern is None:  # GPT-2: ByteLevel's own regex
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:  # Qwen2: its own split regex (digits one by one), then bytes
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    return tok


def build_family(family: str, corpus: list[str], directory: Path, with_weights: bool = False) -> Path:
    """Save a `family` tokenizer and tiny model config (and random weights if asked) into `directory`."""
    import torch
    from transformers import (AutoModelForCausalLM, GPT2Config, GPT2TokenizerFast, LlamaConfig, LlamaTokenizerFast,
                              MistralConfig, Qwen2Config, Qwen2TokenizerFast)

    if family in ("llama", "mistral"):
        tok = _sentencepiece_bpe(corpus, 200, legacy_llama=family == "llama")
        tokenizer = LlamaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
        config_class = LlamaConfig if family == "llama" else MistralConfig
        config = config_class(vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2, **TINY)
    elif family == "qwen2":
        tok = _byte_level_bpe(corpus, 400, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], QWEN2_PATTERN)
        tokenizer = Qwen2TokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                       bos_token=None, unk_token=None)
        config = Qwen2Config(vocab_size=len(tokenizer), bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                             **TINY)
    elif family == "gpt2":
        tok = _byte_level_bpe(corpus, 400, ["<|endoftext|>"], None)
        tokenizer = GPT2TokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                      unk_token="<|endoftext|>")
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=512,
                            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    else:
        raise ValueError(f"unknown tokenizer family {family!r}")
    tokenizer.save_pretrained(directory)
    if with_weights:
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    else:
        config.save_pretrained(directory)
    return directory
