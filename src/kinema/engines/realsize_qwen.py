"""Qwen-Image-Edit's part of the real-size random-weight builds (:mod:`kinema.engines.realsize`):
its Qwen2.5-VL tokenizer and the ``processor/`` folder the engine loads its processor from.

Qwen's token ids are fixed numbers in the text encoder's config (``image_token_id`` 151655, …), so
this tokenizer keeps them: the 151,643 regular ids are the byte-level alphabet then placeholders,
and the 22 added tokens follow at their real ids (``configs/qwen-image-edit/tokenizer.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from kinema.engines.tokenizers import byte_level_alphabet

PROCESSOR = "processor"
"""Subfolder with the image processor and tokenizer files, as in Qwen's repositories."""
HUB_ONLY_KEYS = ("image_processor_type", "processor_class")
"""Keys of ``processor.json`` that name the hub's classes rather than constructor arguments."""


def qwen_vl_tokenizer(facts: dict[str, Any]) -> Qwen2Tokenizer:
    """A Qwen2.5-VL tokenizer with the real ids: ``facts`` is ``tokenizer.json`` of the configs."""
    regular = int(facts["regular_tokens"])
    added: list[str] = list(facts["added_tokens"])
    special_count = int(facts["special_tokens"])
    tokens = byte_level_alphabet()
    if regular < len(tokens):
        raise ValueError(f"regular_tokens {regular} is smaller than the byte alphabet")
    tokens += [f"<unused{i}>" for i in range(regular - len(tokens))]
    vocab = {token: i for i, token in enumerate([*tokens, *added])}
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        unk_token=None,  # type: ignore[arg-type]  # Qwen2.5 has none
        eos_token=facts["eos_token"],
        pad_token=facts["pad_token"],
    )
    # Registered at the ids they already have in the vocabulary; the first is <|endoftext|>.
    tokenizer.add_special_tokens({"additional_special_tokens": added[1:special_count]})
    tokenizer.add_tokens(added[special_count:])
    tokenizer.model_max_length = int(facts["model_max_length"])
    return tokenizer


def save_processor(
    directory: Path, config: dict[str, Any], tokenizer: PreTrainedTokenizerBase
) -> None:
    """Write ``processor/``: image processor config (``config``: ``processor.json``) + tokenizer.

    Built with the PIL class (no torchvision, see :mod:`kinema.engines.qwen`); transformers writes
    the hub file's ``image_processor_type`` (``Qwen2VLImageProcessor``) and the same numbers.
    """
    arguments = {key: value for key, value in config.items() if key not in HUB_ONLY_KEYS}
    Qwen2VLImageProcessorPil(**arguments).save_pretrained(directory / PROCESSOR)
    tokenizer.save_pretrained(directory / PROCESSOR)
