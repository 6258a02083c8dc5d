"""Speech engines: say one line of text in the voice of a reference clip.

A kind of engine beside image-to-video and image-to-image, with its own protocol and presets:
the :class:`~kinema.engines.base.Task` enum and :class:`~kinema.engines.base.Capabilities`
describe image and video engines, and are left as they are, so speech presets are registered
here (:func:`register_speech`) exactly as :mod:`kinema.engines.registry` registers the others —
data plus a ``"module:function"`` loader that only the worker resolves. A worker whose video
engine follows audio loads one beside it (:func:`speech_for`), to speak ``voice_ids``
(:mod:`kinema.runners.voicing`).

This module imports neither torch nor transformers: the API process may read the presets.

- ``tiny-vibevoice``: transformers' ``VibeVoiceForConditionalGeneration`` at toy size with
  random weights, built locally on first load (:mod:`kinema.engines.vibevoice`) and loaded with
  ``from_pretrained`` like real weights; the reference clip reaches the model (a different clip
  gives a different waveform), the sound is noise. For tests only: VibeVoice's authors advise
  against commercial use, so there is no production VibeVoice preset.
- ``voxcpm2``: OpenBMB's VoxCPM2 (2B, Apache-2.0 code and weights), zero-shot voice cloning in
  30 languages with Chinese and English among them, 48 kHz (:mod:`kinema.engines.voxcpm`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from kinema.engines.catalog import Catalog
from kinema.engines.registry import LoadOptions, Preset, Resources
from kinema.voices.script import Language

Samples = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Reference:
    """A voice to clone: the cleaned reference clip (:mod:`kinema.voices.reference`)."""

    samples: Samples
    """Mono float32 in -1..1."""
    sample_rate: int


@dataclass(frozen=True)
class Speech:
    waveform: Samples
    """Mono float32 in -1..1, at most ``max_seconds`` long."""
    sample_rate: int
    info: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class SpeechCapabilities:
    """What a speech preset can do, as data."""

    sample_rate: int
    """Rate of the waveforms it returns."""
    languages: frozenset[str] = frozenset({"en", "zh"})
    clones: bool = True
    """Speaks in the voice of a reference clip (else only in its own voices)."""


@runtime_checkable
class VoiceEngine(Protocol):
    capabilities: SpeechCapabilities

    def speak(
        self,
        text: str,
        reference: Reference | None,
        language: Language,
        max_seconds: float,
        *,
        seed: int | None = None,
    ) -> Speech:
        """``text`` spoken in the voice of ``reference`` (None: the engine's own voice), cut at
        ``max_seconds``. The same arguments and seed give the same waveform."""
        ...


def require_text(text: str) -> None:
    """Every engine's first check: a line with nothing to say is refused."""
    if not text.strip():
        raise ValueError("nothing to say: the line is empty")


def cut(waveform: npt.ArrayLike, rate: int, max_seconds: float) -> Samples:
    """A model's output as :meth:`VoiceEngine.speak` returns it: mono float32, at most
    ``max_seconds`` long, in -1..1."""
    samples = np.asarray(waveform, dtype=np.float32).reshape(-1)
    return np.clip(samples[: int(max_seconds * rate)], -1.0, 1.0)


@dataclass(frozen=True)
class SpeechPreset:
    name: str
    capabilities: SpeechCapabilities
    loader: str
    """``"package.module:function"`` taking :class:`LoadOptions`, returning a VoiceEngine."""
    description: str = ""
    license: str = ""
    weights: str = ""
    install: str = ""
    """What the worker's environment needs beyond Kinema's ``engines`` extra."""
    tags: frozenset[str] = field(default_factory=frozenset)
    resources: Resources = field(default_factory=Resources)


_CATALOG: Catalog[SpeechPreset, VoiceEngine] = Catalog("speech preset")


def register_speech(preset: SpeechPreset) -> SpeechPreset:
    return _CATALOG.add(preset)


def speech_presets() -> list[SpeechPreset]:
    return _CATALOG.all()


def get_speech_preset(name: str) -> SpeechPreset:
    return _CATALOG.get(name)


NO_SPEECH = "none"
"""``engines.speech_preset`` that loads no speech engine: ``voice_ids`` are then a 400."""


def speech_for(video: Preset, configured: str | None = None) -> SpeechPreset | None:
    """The speech preset a worker of ``video`` loads beside it: none unless the video engine
    follows a speech track (``voice_ids``) and ``configured`` (``engines.speech_preset``) is not
    :data:`NO_SPEECH`; ``configured`` when given; else ``tiny-vibevoice`` beside a test preset
    and ``voxcpm2`` beside any other."""
    if not video.capabilities.follows_audio or configured == NO_SPEECH:
        return None
    if configured is not None:
        return get_speech_preset(configured)
    return TINY_VIBEVOICE if "test" in video.tags else VOXCPM2


def load_voice_engine(name: str, options: LoadOptions) -> VoiceEngine:
    """Import the preset's module and build the engine. Worker process only."""
    return _CATALOG.load(name, options)


VOXCPM2_HUB_ID = "openbmb/VoxCPM2"
VOXCPM2_INSTALL = "pip install --no-deps voxcpm==2.0.3 && pip install einops librosa"
"""The model code without its demo, ASR, denoiser and training extras (gradio, funasr,
modelscope, datasets, torchcodec, torchaudio, …), which VoxCPM2's inference never calls
(docs/engines.md, "Speech (voices)")."""

TINY_VIBEVOICE = register_speech(
    SpeechPreset(
        name="tiny-vibevoice",
        capabilities=SpeechCapabilities(sample_rate=24_000),
        loader="kinema.engines.vibevoice:load_tiny",
        description=(
            "VibeVoice (VibeVoiceForConditionalGeneration) at toy size: the reference clip "
            "through its acoustic tokenizer into the prompt; speaks for the text's estimated "
            "length (random weights never learned when to stop)."
        ),
        license="MIT (VibeVoice code in transformers; the weights are random; tests only)",
        weights="random weights built locally",
        tags=frozenset({"test", "tiny"}),
        resources=Resources(gpus=0),
    )
)

VOXCPM2 = register_speech(
    SpeechPreset(
        name="voxcpm2",
        capabilities=SpeechCapabilities(sample_rate=48_000),
        loader="kinema.engines.voxcpm:load_voxcpm2",
        description=(
            "VoxCPM2 (OpenBMB, 2B): zero-shot voice cloning from the reference clip, Chinese, "
            "English and 28 more languages, 48 kHz; no denoiser (the clip is cleaned at "
            "create-voice)."
        ),
        license="Apache-2.0 (code and weights; stated free for commercial use)",
        weights=VOXCPM2_HUB_ID,
        install=VOXCPM2_INSTALL,
        # Estimate until measured on a GPU: ~4.6 GiB of bf16 weights plus the LM caches.
        resources=Resources(gpus=1, memory_gib=8.0),
    )
)
