"""Audio-driven LTX-2: the video denoised against a given speech track held frozen.

LTX-2's transformer denoises video and audio tokens together, each modality attending to the
other. To make the video follow a given track (the recipe of Lightricks' ``A2VidPipelineTwoStage``
in ``ltx-core``), the track's latents (:mod:`kinema.engines.ltx2_audio`) are given to every
transformer call as clean audio: ``audio_hidden_states`` the clean packed latents,
``audio_timestep`` and ``audio_sigma`` 0 (nothing left to denoise). A forward pre-hook on the
transformer does it, so every call the pipeline makes — each step, classifier-free guidance's
doubled batch, both stages of the two-stage path — sees the same clean audio, whatever the
pipeline does with its own audio latents in between. Those the pipeline steps are never seen by
the model and its audio output is discarded: a shot's audio is the original track, not the VAE's
re-decode of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from kinema.engines.ltx2_audio import AudioLatents


@dataclass
class FrozenCalls:
    """How many transformer calls were given the frozen audio (one per pass)."""

    calls: int = 0


@contextmanager
def frozen_audio(transformer: torch.nn.Module, audio: AudioLatents | None) -> Iterator[FrozenCalls]:
    """Feed ``audio`` (clean, at timestep 0) to every call of ``transformer`` inside the
    context; None leaves the calls alone. Raises :class:`ValueError` on a call whose audio
    tokens do not have the shape of ``audio.packed`` (a clip of another length)."""
    seen = FrozenCalls()
    if audio is None:
        yield seen
        return
    packed = audio.packed

    def hook(
        _module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        given = kwargs.get("audio_hidden_states")
        if not isinstance(given, torch.Tensor) or given.shape[1:] != packed.shape[1:]:
            got = None if not isinstance(given, torch.Tensor) else tuple(given.shape)
            raise ValueError(
                f"the pipeline's audio tokens {got} do not match the speech track's "
                f"{tuple(packed.shape)}: the track was encoded for another duration"
            )
        clean = packed.to(given.device, given.dtype).expand(given.shape[0], -1, -1)
        zero = torch.zeros_like(kwargs["audio_timestep"])
        seen.calls += 1
        return args, {
            **kwargs,
            "audio_hidden_states": clean,
            "audio_timestep": zero,
            "audio_sigma": zero,
        }

    handle = transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()
