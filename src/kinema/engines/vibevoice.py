"""The ``tiny-vibevoice`` speech engine: transformers' VibeVoice at toy size, random weights.

Built locally on first load into ``<models_dir>/tiny-vibevoice`` (model, processor and a
generation config naming its noise scheduler, as the released checkpoints ship it), then loaded
with ``from_pretrained`` — the path real VibeVoice weights would take. The reference clip goes
through the processor's feature extractor and the model's acoustic tokenizer into the prompt,
VibeVoice's own voice-cloning route, so a different clip gives a different waveform.

VibeVoice's prompt layout, with one speaker: the system line, ``Voice input:`` with the
reference's audio tokens, ``Text input:`` with the line, ``Speech output:`` and the audio-start
token; the model then emits one audio token per acoustic frame (7.5 a second at 24 kHz), each
turned into a latent by the diffusion head and decoded to 3200 samples. Random weights never
learned when to stop, so this engine emits exactly the frames of the text's estimated length
(:func:`kinema.voices.timeline.estimate_seconds`), within ``max_seconds``.

No production VibeVoice preset: its authors advise against commercial use.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.generation.configuration_utils import GenerationConfig
from transformers.generation.logits_process import LogitsProcessor, LogitsProcessorList
from transformers.models.vibevoice.configuration_vibevoice import VibeVoiceConfig
from transformers.models.vibevoice.modeling_vibevoice import VibeVoiceForConditionalGeneration
from transformers.models.vibevoice.processing_vibevoice import VibeVoiceProcessor
from transformers.models.vibevoice_acoustic_tokenizer.configuration_vibevoice_acoustic_tokenizer import (  # noqa: E501
    VibeVoiceAcousticTokenizerConfig,
)
from transformers.models.vibevoice_acoustic_tokenizer.feature_extraction_vibevoice_acoustic_tokenizer import (  # noqa: E501
    VibeVoiceAcousticTokenizerFeatureExtractor,
)

from kinema.engines.diffusion import resolve_device, resolve_dtype
from kinema.engines.registry import LoadOptions
from kinema.engines.speech import (
    TINY_VIBEVOICE,
    Reference,
    Speech,
    SpeechCapabilities,
    cut,
    require_text,
)
from kinema.engines.tiny import build_once, seeded
from kinema.engines.tokenizers import byte_level_qwen_tokenizer
from kinema.media.audio import resample
from kinema.voices.script import Language, Line
from kinema.voices.timeline import estimate_seconds

SYSTEM = (
    " Transform the text provided by various speakers into speech output, utilizing the "
    "distinct voice of each respective speaker.\n"
)
AUDIO_BOS, AUDIO_EOS, AUDIO = "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>"
TINY_RATIOS = (8, 20, 20)
"""Acoustic tokenizer downsampling: 3200 samples a frame, as the real one (7.5 Hz at 24 kHz)."""
TINY_STEPS = 10
_NUMPY_COPY_WARNING = "__array__ implementation doesn't accept a copy keyword"
TINY_LAYER_GAIN = 3000.0
"""Scale of the acoustic tokenizer's last layers. Random weights leave its latents and its
sound about 70 dB down: the reference's latents (about 3e-4) would drown in the tokenizer's
own sampling noise (σ ≈ 0.6) and the speech (peaks of 1e-4) in 16-bit audio and AAC."""


def build_tiny_vibevoice(directory: Path, seed: int = 0) -> Path:
    """Build the tiny VibeVoice (model, processor, generation config) unless already there."""

    def write(staging: Path) -> None:
        processor = _tiny_processor()
        with seeded(seed):
            model = VibeVoiceForConditionalGeneration(_tiny_config(processor))
        with torch.no_grad():
            tower = model.model.audio_tower
            tower.encoder.head.conv.weight.mul_(TINY_LAYER_GAIN)
            tower.decoder.head.conv.weight.mul_(TINY_LAYER_GAIN)
        model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
            pad_token_id=model.config.pad_token_id,
            eos_token_id=model.config.eos_token_id,
            noise_scheduler_class="DPMSolverMultistepScheduler",
            noise_scheduler_config={
                "beta_schedule": "squaredcos_cap_v2",
                "prediction_type": "v_prediction",
            },
            num_diffusion_steps=TINY_STEPS,
        )
        model.save_pretrained(staging)
        processor.save_pretrained(staging)

    return build_once(directory, write)


def _tiny_processor() -> VibeVoiceProcessor:
    tokenizer = byte_level_qwen_tokenizer(("<|endoftext|>", AUDIO_BOS, AUDIO_EOS, AUDIO))
    features = VibeVoiceAcousticTokenizerFeatureExtractor(  # type: ignore[no-untyped-call]
        sampling_rate=TINY_VIBEVOICE.capabilities.sample_rate,
        pad_to_multiple_of=math.prod(TINY_RATIOS),
    )
    return VibeVoiceProcessor(  # type: ignore[no-untyped-call]
        feature_extractor=features, tokenizer=tokenizer
    )


def _tiny_config(processor: VibeVoiceProcessor) -> VibeVoiceConfig:
    tokenizer = processor.tokenizer
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    depths = [1] * (len(TINY_RATIOS) + 1)
    tokenizer_config = {
        "hidden_size": 8,
        "kernel_size": 3,
        "num_filters": 4,
        "downsampling_ratios": list(TINY_RATIOS),
        "depths": depths,
        # ConvNeXt layer scale: 1e-6 by default, which leaves random weights all but silent.
        "layer_scale_init_value": 1.0,
    }
    return VibeVoiceConfig(
        text_config={
            "model_type": "qwen2",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 4096,
            "pad_token_id": pad,
            "eos_token_id": pad,
            # Weights 10× the default spread: at 0.02 the random diffusion head barely heeds
            # its condition, so the reference clip changed the waveform by 1e-5.
            "initializer_range": 0.2,
        },
        audio_config={"model_type": "vibevoice_acoustic_tokenizer", **tokenizer_config},
        semantic_model_config={
            "model_type": "vibevoice_acoustic_tokenizer_encoder",
            "channels": 1,
            **tokenizer_config,
        },
        diffusion_head_config={
            "model_type": "vibevoice_diffusion",
            "num_hidden_layers": 1,
            "intermediate_size": 64,
        },
        pad_token_id=pad,
        eos_token_id=pad,
        audio_bos_token_id=processor.audio_bos_token_id,
        audio_eos_token_id=processor.audio_eos_token_id,
        audio_token_id=processor.audio_token_id,
    )


class _FixedLength(LogitsProcessor):
    """Emit ``frames`` audio tokens after the prompt, then audio-end, then end of text."""

    def __init__(self, prompt_length: int, frames: int, config: VibeVoiceConfig) -> None:
        self._prompt_length = prompt_length
        self._frames = frames
        self._config = config

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        made = input_ids.shape[1] - self._prompt_length
        token = self._config.audio_token_id
        if made >= self._frames:
            done = made > self._frames
            token = self._config.eos_token_id if done else self._config.audio_eos_token_id
        forced = torch.full_like(scores, -math.inf)
        forced[:, token] = 0.0
        return forced


class VibeVoiceEngine:
    def __init__(
        self,
        model: VibeVoiceForConditionalGeneration,
        processor: VibeVoiceProcessor,
        capabilities: SpeechCapabilities,
        *,
        steps: int | None = None,
    ) -> None:
        self.capabilities = capabilities
        self._model = model
        self._processor = processor
        self._steps = steps
        acoustic = model.config.audio_config
        if not isinstance(acoustic, VibeVoiceAcousticTokenizerConfig):  # a dict only before init
            raise TypeError(f"VibeVoice audio_config is {type(acoustic).__name__}")
        self._frame_rate = capabilities.sample_rate / int(acoustic.hop_length)

    def speak(
        self,
        text: str,
        reference: Reference | None,
        language: Language,
        max_seconds: float,
        *,
        seed: int | None = None,
    ) -> Speech:
        require_text(text)
        limit = max(1, math.floor(max_seconds * self._frame_rate))
        wanted = math.ceil(estimate_seconds(Line(text, None, language)) * self._frame_rate)
        frames = min(limit, wanted)
        inputs = self._inputs(text, reference).to(self._model.device)
        prompt_length = int(inputs["input_ids"].shape[1])
        config = self._model.config
        extra = {} if self._steps is None else {"num_diffusion_steps": self._steps}
        with (
            torch.random.fork_rng(devices=_rng_devices(self._model.device)),
            torch.no_grad(),
            warnings.catch_warnings(),
        ):
            # diffusers 0.42.1's DPMSolverMultistepScheduler.set_timesteps calls np.array on a
            # tensor, which numpy 2 flags (a copy keyword); it runs once per audio frame.
            warnings.filterwarnings("ignore", _NUMPY_COPY_WARNING, DeprecationWarning)
            torch.manual_seed(0 if seed is None else seed)
            audio = _generate(
                self._model,
                **inputs,
                max_new_tokens=frames + 2,
                logits_processor=LogitsProcessorList([_FixedLength(prompt_length, frames, config)]),
                **extra,
            )[0]
        rate = self.capabilities.sample_rate
        made = np.zeros(0, np.float32) if audio is None else audio.float().cpu().numpy()
        waveform = cut(made, rate, max_seconds)
        return Speech(waveform, rate, {"frames": frames, "cloned": reference is not None})

    def _inputs(self, text: str, reference: Reference | None) -> BatchFeature:
        # The processor's __call__ is typed, but its @auto_docstring decorator is not.
        rate = self.capabilities.sample_rate
        line = " ".join(text.split())
        if reference is None:
            prompt = f"{SYSTEM} Text input:\n Speaker 0: {line}\n Speech output:\n{AUDIO_BOS}"
            return cast(BatchFeature, self._processor(text=[prompt], return_tensors="pt"))
        samples = resample(reference.samples, reference.sample_rate, rate)
        prompt = (
            f"{SYSTEM} Voice input:\n Speaker 0:{AUDIO_BOS}{AUDIO}{AUDIO_EOS}\n"
            f" Text input:\n Speaker 0: {line}\n Speech output:\n{AUDIO_BOS}"
        )
        return cast(
            BatchFeature,
            self._processor(
                text=[prompt], audio=[samples], sampling_rate=rate, return_tensors="pt"
            ),
        )


def _generate(
    model: VibeVoiceForConditionalGeneration, **kwargs: object
) -> list[torch.Tensor | None]:
    """``model.generate``: one waveform per prompt (None where no audio frame was made).

    VibeVoice's ``_sample`` returns the waveforms, not the token outputs ``GenerationMixin``
    declares, and mypy does not match the model class to the protocol its ``self`` is typed by."""
    generate = cast(Callable[..., list[torch.Tensor | None]], cast(Any, model).generate)
    return generate(**kwargs)


def _rng_devices(device: torch.device) -> list[torch.device]:
    return [device] if device.type == "cuda" else []


def load(source: str, options: LoadOptions, capabilities: SpeechCapabilities) -> VibeVoiceEngine:
    """A VibeVoice engine from a local directory or hub id (``from_pretrained``)."""
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    model = VibeVoiceForConditionalGeneration.from_pretrained(source, dtype=dtype)
    processor = VibeVoiceProcessor.from_pretrained(source)
    # PreTrainedModel.to is wrapped in functools.wraps(nn.Module.to), which mypy cannot bind;
    # both move the model in place.
    cast(torch.nn.Module, model).to(device).eval()
    return VibeVoiceEngine(model, processor, capabilities, steps=options.num_inference_steps)


def load_tiny(options: LoadOptions) -> VibeVoiceEngine:
    """Loader of ``tiny-vibevoice``: build random weights once, then load them like real ones."""
    directory = options.models_dir / TINY_VIBEVOICE.name
    source = options.source or str(build_tiny_vibevoice(directory))
    return load(source, options, TINY_VIBEVOICE.capabilities)
