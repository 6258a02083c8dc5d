"""Real-size random-weight builds of the production presets, for GPU benchmarks (no downloads).

Each component is built from the exact constructor arguments of the published checkpoint, shipped as
JSON under ``configs/<family>/`` (sources in ``configs/README.md``), with random weights. A build
can stay on the ``meta`` device (shapes and parameter counts, no memory), or be materialised on a
real device (bfloat16 on CUDA: initialising ~35B parameters on a CPU takes far longer) and written
with ``save_pretrained`` into a directory laid out like the hub repository, so that the preset's
own loader reads it through the same ``from_pretrained`` path as the real weights.

Components are built, saved and freed one at a time, so a build needs GPU memory for the largest
component only (the LTX-2.5 transformer, ~38 GB in bf16). Tokenizers cannot be downloaded either:
they are built in memory with the real vocabulary size (byte-level tokens, then placeholders), so
the embedding tables and token ids have real sizes while prompts tokenize byte by byte. The
Qwen-Image-Edit tokenizer (real special-token ids) and ``processor/`` folder come from
:mod:`kinema.engines.realsize_qwen`.

``smoke=True`` applies ``configs/smoke.json``: the same components and code path with tiny widths
and depths, so that the benchmark itself runs in seconds on a CPU in tests.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

import diffusers
import torch
from diffusers.models.autoencoders.autoencoder_kl_flux2 import AutoencoderKLFlux2
from diffusers.models.autoencoders.autoencoder_kl_ltx2 import AutoencoderKLLTX2Video
from diffusers.models.autoencoders.autoencoder_kl_ltx2_audio import AutoencoderKLLTX2Audio
from diffusers.models.autoencoders.autoencoder_kl_qwenimage import AutoencoderKLQwenImage
from diffusers.models.transformers.transformer_flux2 import Flux2Transformer2DModel
from diffusers.models.transformers.transformer_ltx2 import LTX2VideoTransformer3DModel
from diffusers.models.transformers.transformer_qwenimage import QwenImageTransformer2DModel
from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors
from diffusers.pipelines.ltx2.duration_head import LTX2DurationHead
from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE
from diffusers.pipelines.pipeline_loading_utils import _fetch_class_library_tuple
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)
from transformers.models.gemma.tokenization_gemma import GemmaTokenizer
from transformers.models.gemma4_unified.configuration_gemma4_unified import Gemma4UnifiedConfig
from transformers.models.gemma4_unified.modeling_gemma4_unified import (
    Gemma4UnifiedForConditionalGeneration,
)
from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen3.configuration_qwen3 import Qwen3Config
from transformers.models.qwen3.modeling_qwen3 import Qwen3ForCausalLM

from kinema.engines.realsize_qwen import qwen_vl_tokenizer, save_processor
from kinema.engines.tokenizers import QWEN_CHAT_TEMPLATE, byte_level_alphabet

CONFIGS = Path(__file__).with_name("configs")
MARKER = ".kinema-realsize-complete"

_DIFFUSERS_MODELS: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        LTX2VideoTransformer3DModel,
        LTX2TextConnectors,
        AutoencoderKLLTX2Video,
        AutoencoderKLLTX2Audio,
        LTX2VocoderWithBWE,
        LTX2LatentUpsamplerModel,
        LTX2DurationHead,
        Flux2Transformer2DModel,
        AutoencoderKLFlux2,
        QwenImageTransformer2DModel,
        AutoencoderKLQwenImage,
    )
}
# transformers text encoders: architecture name → (config class, model class)
_TEXT_ENCODERS: dict[str, tuple[type[Any], type[Any]]] = {
    "Gemma4UnifiedForConditionalGeneration": (
        Gemma4UnifiedConfig,
        Gemma4UnifiedForConditionalGeneration,
    ),
    "Qwen3ForCausalLM": (Qwen3Config, Qwen3ForCausalLM),
    "Qwen2_5_VLForConditionalGeneration": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration),
}


@dataclass(frozen=True)
class Layout:
    """How one family's hub repository is laid out (subfolder = component name)."""

    family: str
    """Subdirectory of ``configs/``."""
    pipeline_class: str
    """``_class_name`` of the hub's ``model_index.json``."""
    models: tuple[str, ...]
    """Model components listed in ``model_index.json`` (each has ``<name>.json``)."""
    tokenizer: str
    """``gemma``, ``qwen`` or ``qwen-vl``: which in-memory tokenizer to build (``qwen-vl``: from
    ``<family>/tokenizer.json``, plus ``processor/`` from ``<family>/processor.json``)."""
    extras: tuple[str, ...] = ()
    """Models saved in their own subfolder but loaded separately (not in ``model_index.json``)."""
    aliases: tuple[tuple[str, str], ...] = ()
    """``(link, target)`` subfolders: same architecture, shipped twice on the hub."""
    absent: tuple[str, ...] = ()
    """Optional pipeline components the hub repository leaves out (``[null, null]``)."""
    pipeline_config: tuple[tuple[str, Any], ...] = ()


LTX25 = Layout(
    family="ltx2.5",
    pipeline_class="LTX2Pipeline",
    models=(
        "transformer",
        "connectors",
        "text_encoder",
        "vae",
        "audio_vae",
        "vocoder",
        "duration_head",
    ),
    tokenizer="gemma",
    # The two-stage path loads latent_upsampler/ on its own; the SFT transformer (quality tier)
    # has the distilled one's architecture, so random weights can share its files.
    extras=("latent_upsampler",),
    aliases=(("transformer_full", "transformer"),),
    absent=("audio_scheduler", "processor", "prompt_enhancer"),
)
FLUX2_KLEIN_4B = Layout(
    family="flux2-klein-4b",
    pipeline_class="Flux2KleinPipeline",
    models=("transformer", "text_encoder", "vae"),
    tokenizer="qwen",
    pipeline_config=(("is_distilled", True),),
)
QWEN_IMAGE_EDIT = Layout(
    family="qwen-image-edit",
    pipeline_class="QwenImageEditPlusPipeline",
    models=("transformer", "text_encoder", "vae"),
    tokenizer="qwen-vl",
    # Listed as in the hub's model_index.json; the engine loads it itself from processor/.
    pipeline_config=(("processor", ("transformers", "Qwen2VLProcessor")),),
)
LAYOUTS: dict[str, Layout] = {
    "ltx2.5-distilled": LTX25,
    "ltx2.5-quality": LTX25,
    "flux2-klein-4b": FLUX2_KLEIN_4B,
    "qwen-image-edit": QWEN_IMAGE_EDIT,
}
"""Production preset → the layout its weights directory has."""


def load_config(family: str, component: str, smoke: bool = False) -> dict[str, Any]:
    """The component's constructor arguments; ``smoke`` applies ``configs/smoke.json``."""
    config: dict[str, Any] = json.loads((CONFIGS / family / f"{component}.json").read_text())
    if smoke:
        config = _merge(config, _smoke_overrides().get(family, {}).get(component, {}))
    return config


def build_component(
    layout: Layout,
    component: str,
    device: torch.device | str = "meta",
    dtype: torch.dtype = torch.bfloat16,
    smoke: bool = False,
) -> torch.nn.Module:
    """One model component with random weights, created directly on ``device`` in ``dtype``."""
    config = load_config(layout.family, component, smoke)
    with torch.device(device), _default_dtype(dtype):
        if "_class_name" in config:
            module: torch.nn.Module = _DIFFUSERS_MODELS[config["_class_name"]].from_config(config)
        else:
            config_class, model_class = _TEXT_ENCODERS[config["architectures"][0]]
            module = model_class(config_class(**config))
    return module.eval()


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_tokenizer(layout: Layout, smoke: bool = False) -> GemmaTokenizer | Qwen2Tokenizer:
    """An in-memory tokenizer whose size equals the text encoder's ``vocab_size`` (Qwen-VL: the
    real tokenizer's 151,665 tokens at their real ids, under the padded 152,064-row embedding)."""
    if layout.tokenizer == "qwen-vl":
        return qwen_vl_tokenizer(load_config(layout.family, "tokenizer", smoke))
    text = load_config(layout.family, "text_encoder", smoke)
    vocab_size = int(text.get("text_config", text)["vocab_size"])
    if layout.tokenizer == "gemma":
        specials = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")  # ids 0-4 as in Gemma
        tokens = [*specials, *(f"<0x{b:02X}>" for b in range(256)), "▁"]
        return GemmaTokenizer(vocab=_padded(tokens, vocab_size), merges=[])
    specials_qwen = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = [*byte_level_alphabet(), *specials_qwen]
    tokenizer = Qwen2Tokenizer(vocab=_padded(tokens, vocab_size), merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": specials_qwen[1:]})
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def build_weights(
    preset: str,
    directory: Path,
    device: torch.device | str,
    dtype: torch.dtype = torch.bfloat16,
    smoke: bool = False,
    seed: int = 0,
    skip: tuple[str, ...] = (),
) -> Path:
    """Write random weights for ``preset`` into ``directory``, laid out like its hub repo.

    Components in ``skip`` are listed in ``model_index.json`` but not written: the caller passes
    them to ``from_pretrained`` itself (they would not fit the disk). Idempotent: a finished build
    (marker file) is reused; a half-written one is an error.
    """
    layout = LAYOUTS[preset]
    if (directory / MARKER).is_file():
        return directory
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} holds an unfinished build; remove it first")
    directory.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {
        "_class_name": layout.pipeline_class,
        "_diffusers_version": diffusers.__version__,
        **dict(layout.pipeline_config),
    }
    for name in (*layout.models, *layout.extras):
        torch.manual_seed(seed)
        module = build_component(layout, name, "meta" if name in skip else device, dtype, smoke)
        if name not in skip:
            module.save_pretrained(directory / name)  # type: ignore[operator]
        if name in layout.models:
            index[name] = list(_library_and_class(module))
        del module
        _release(device)
    for link, target in layout.aliases:
        if target not in skip:
            os.symlink(target, directory / link, target_is_directory=True)
    tokenizer = build_tokenizer(layout, smoke)
    tokenizer.save_pretrained(directory / "tokenizer")
    index["tokenizer"] = list(_library_and_class(tokenizer))
    if layout.tokenizer == "qwen-vl":
        save_processor(directory, load_config(layout.family, "processor", smoke), tokenizer)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        load_config(layout.family, "scheduler", smoke)
    )
    scheduler.save_pretrained(directory / "scheduler")
    index["scheduler"] = list(_library_and_class(scheduler))
    index.update({name: [None, None] for name in layout.absent})
    (directory / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (directory / MARKER).write_text(
        "random weights at real size, built by kinema.engines.realsize\n"
    )
    return directory


def weights_bytes(
    preset: str, dtype: torch.dtype = torch.bfloat16, smoke: bool = False
) -> dict[str, int]:
    """Bytes of every model component of ``preset`` in ``dtype`` (counted on the meta device)."""
    layout = LAYOUTS[preset]
    size = torch.empty((), dtype=dtype).element_size()
    return {
        name: parameter_count(build_component(layout, name, smoke=smoke)) * size
        for name in (*layout.models, *layout.extras)
    }


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _release(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":  # the caching allocator keeps freed blocks otherwise
        gc.collect()
        torch.cuda.empty_cache()


def _library_and_class(component: object) -> tuple[str, str]:
    """The ``[library, class]`` pair ``save_pretrained`` writes into ``model_index.json``."""
    fetch = cast(Callable[[object], tuple[str, str]], _fetch_class_library_tuple)
    return fetch(component)


def _padded(tokens: list[str], vocab_size: int) -> dict[str, int]:
    if len(tokens) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the {len(tokens)} base tokens")
    tokens = tokens + [f"<unused{i}>" for i in range(vocab_size - len(tokens))]
    return {token: i for i, token in enumerate(tokens)}


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@cache
def _smoke_overrides() -> dict[str, dict[str, dict[str, Any]]]:
    overrides: dict[str, dict[str, dict[str, Any]]] = json.loads(
        (CONFIGS / "smoke.json").read_text()
    )
    return overrides
