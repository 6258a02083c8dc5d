"""The ``voxcpm2`` speech engine: OpenBMB's VoxCPM2 through its own package (PyPI ``voxcpm``).

The package is not among Kinema's dependencies: its metadata pulls a web demo, ASR, ModelScope
and dataset tooling (gradio, funasr, modelscope, datasets, torchcodec, …) that the model does not
import. VoxCPM2's inference needs only what the engines extra brings (torch, transformers,
safetensors, pydantic, tqdm) and einops and librosa (with soundfile), so the worker that speaks
installs the package without its dependencies and those two beside it:
:data:`~kinema.engines.speech.VOXCPM2_INSTALL` (docs/engines.md, "Speech (voices)"). torchaudio,
which the package imports for its first-generation model, is stood in for when missing
(:func:`_import_voxcpm`).

The weights (``openbmb/VoxCPM2``: ``config.json``, ``model.safetensors``, the audio VAE and the
tokenizer) are found before loading like every preset's (:mod:`kinema.engines.weights`); the
denoiser (a ModelScope model) is never loaded — reference clips are cleaned at create-voice.
"""

from __future__ import annotations

import importlib
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, cast

import torch

from kinema.engines.diffusion import resolve_device
from kinema.engines.registry import LoadOptions
from kinema.engines.speech import (
    VOXCPM2,
    VOXCPM2_HUB_ID,
    VOXCPM2_INSTALL,
    Reference,
    Speech,
    SpeechCapabilities,
    cut,
    require_text,
)
from kinema.engines.weights import resolve
from kinema.media.audio import resample
from kinema.voices.reference import encode_wav
from kinema.voices.script import Language

DEFAULT_STEPS = 10
CFG = 2.0
"""VoxCPM2's own defaults (``inference_timesteps``, ``cfg_value``)."""


class _VoxCPM(Protocol):
    """What this engine uses of ``voxcpm.VoxCPM``."""

    tts_model: Any

    def generate(self, **kwargs: Any) -> Any: ...


class VoxCPMEngine:
    def __init__(self, model: _VoxCPM, *, steps: int = DEFAULT_STEPS) -> None:
        tts = model.tts_model
        self.capabilities = SpeechCapabilities(sample_rate=int(tts.sample_rate))
        self._model = model
        self._steps = steps
        # One generation step is a patch of VAE frames: patch_size × chunk_size input samples.
        self._steps_per_s = tts.audio_vae.sample_rate / (tts.patch_size * tts.chunk_size)
        self._encode_rate = int(tts.audio_vae.sample_rate)

    def speak(
        self,
        text: str,
        reference: Reference | None,
        language: Language,
        max_seconds: float,
        *,
        seed: int | None = None,
    ) -> Speech:
        # The model reads the language from the text itself; ``language`` needs no switch.
        require_text(text)
        rate = self.capabilities.sample_rate
        max_len = max(2, math.ceil(max_seconds * self._steps_per_s))
        with tempfile.TemporaryDirectory(prefix="kinema-voice-") as folder:
            path = None
            if reference is not None:
                path = str(Path(folder) / "reference.wav")
                clip = resample(reference.samples, reference.sample_rate, self._encode_rate)
                Path(path).write_bytes(encode_wav(clip, self._encode_rate))
            with torch.random.fork_rng(devices=_cuda_devices()):
                torch.manual_seed(0 if seed is None else seed)
                waveform = self._model.generate(
                    text=text,
                    reference_wav_path=path,
                    cfg_value=CFG,
                    inference_timesteps=self._steps,
                    max_len=max_len,
                )
        samples = cut(waveform, rate, max_seconds)
        return Speech(samples, rate, {"cloned": reference is not None, "max_len": max_len})


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def load_voxcpm2(options: LoadOptions) -> VoxCPMEngine:
    """Loader of ``voxcpm2``: stops with the download command when the weights are missing,
    and with the install command when the ``voxcpm`` package is."""
    source = resolve(VOXCPM2.name, VOXCPM2_HUB_ID, options, marker="config.json")
    path = source if Path(source).is_dir() else _cached_snapshot(source)
    try:
        package = _import_voxcpm()
    except ImportError as exc:
        raise ImportError(
            f"engine preset 'voxcpm2' needs the voxcpm package in the worker's environment "
            f"({exc}): {VOXCPM2_INSTALL} — see docs/engines.md, 'Speech (voices)'"
        ) from exc
    device = resolve_device(options.device)
    voxcpm = cast(Callable[..., _VoxCPM], package.VoxCPM)
    model = voxcpm(
        voxcpm_model_path=path,
        zipenhancer_model_path=None,
        enable_denoiser=False,
        optimize=device.type == "cuda",  # torch.compile; the package refuses it elsewhere
        device=str(device),
    )
    return VoxCPMEngine(model, steps=options.num_inference_steps or DEFAULT_STEPS)


class _NoTorchaudio(ModuleType):
    """Stands in for torchaudio while ``voxcpm`` is imported; any use of it says so."""

    def __getattr__(self, name: str) -> Any:
        raise ImportError(
            f"torchaudio.{name}: torchaudio is not installed in this environment "
            "(VoxCPM2 does not need it; the first-generation VoxCPM and the denoiser do)"
        )


def _import_voxcpm() -> ModuleType:
    """``import voxcpm``, with a placeholder for torchaudio when it cannot be imported.

    The package imports torchaudio at the top of its first-generation model's module
    (``voxcpm.model.voxcpm``); only that model and the ModelScope denoiser call it, and VoxCPM2
    reads its reference clip with librosa. PyPI has no torchaudio for torch 2.13 (2.11.1 is the
    newest, and its compiled extension does not load under 2.13), so the worker goes without.
    The placeholder is taken out of ``sys.modules`` again, so that nothing else finds it."""
    try:
        importlib.import_module("torchaudio")
    except (ImportError, OSError):  # OSError: a torchaudio built for another torch
        pass
    else:
        return importlib.import_module("voxcpm")
    missing = object()
    previous = sys.modules.get("torchaudio", missing)
    sys.modules["torchaudio"] = _NoTorchaudio("torchaudio")
    try:
        return importlib.import_module("voxcpm")
    finally:
        if previous is missing:
            del sys.modules["torchaudio"]
        else:
            sys.modules["torchaudio"] = cast(ModuleType, previous)


def _cached_snapshot(hub_id: str) -> str:
    from huggingface_hub import snapshot_download

    return str(snapshot_download(hub_id, local_files_only=True))
