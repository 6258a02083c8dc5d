"""Tokenizers built in memory (no hub): byte-level Qwen vocabularies for the tiny presets and for
real-size random-weight builds, which need the real vocabulary size but not real merges."""

from __future__ import annotations

from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)
"""Qwen3's chat template, reduced to what Flux2KleinPipeline uses: user turns, the generation
prompt, thinking switched off."""


def byte_level_alphabet() -> list[str]:
    """GPT-2's byte → printable-character map: the 256 symbols a byte-level BPE starts from."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    extra = (b for b in range(256) if b not in printable)
    mapping = {b: chr(b) for b in printable}
    mapping.update({b: chr(256 + n) for n, b in enumerate(extra)})
    return [mapping[b] for b in range(256)]


def byte_level_qwen_tokenizer(specials: tuple[str, ...]) -> Qwen2Tokenizer:
    """A Qwen tokenizer over the bare byte alphabet (no merges) plus ``specials``; the first
    special is the end-of-text token, the rest are registered as special tokens."""
    vocab = {char: i for i, char in enumerate(byte_level_alphabet())}
    vocab.update({token: len(vocab) + i for i, token in enumerate(specials)})
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": list(specials[1:])})
    return tokenizer
