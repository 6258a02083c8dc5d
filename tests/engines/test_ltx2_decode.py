"""The streaming VAE decode of LTX-2 on tiny random weights: the same frames as diffusers'
temporal tiling, made only as they are read, a bounded tile at a time."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from kinema.engines.diffusion import seeded_generator
from kinema.engines.ltx2 import LTX2Engine
from kinema.engines.ltx2_decode import DecodeTiles, stream_frames
from tests.engines.conftest import ignore
from tests.engines.conftest import video_job as job

pytestmark = pytest.mark.engines


def _diffusers_uint8(video: torch.Tensor) -> np.ndarray:
    """The pipeline's own postprocessing of a decoded video, then rint to uint8 as before."""
    frames = (video.float() / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 3, 0).cpu().numpy()
    return np.rint(frames * 255.0).astype(np.uint8)


@pytest.mark.parametrize("latent_frames", [1, 2, 3, 16, 46])
def test_tiles_match_diffusers_temporal_tiling(ltx2_engine: LTX2Engine, latent_frames: int) -> None:
    vae: Any = ltx2_engine.pipeline.vae
    channels = vae.config.latent_channels
    latents = torch.randn(
        1, channels, latent_frames, 1, 2, generator=torch.Generator().manual_seed(0)
    )
    stream = stream_frames(vae, latents, DecodeTiles(16, 8))
    chunks = list(stream)
    with torch.no_grad():
        expected = vae._temporal_tiled_decode(latents, None, return_dict=False)[0]
    assert stream.count == (latent_frames - 1) * 8 + 1
    assert (stream.height, stream.width) == (32, 64)
    assert np.array_equal(np.concatenate(chunks), _diffusers_uint8(expected))
    assert max(len(chunk) for chunk in chunks) <= 9  # one stride (+ the causal first frame)


def test_the_engine_decodes_as_diffusers_does_with_framewise_decoding(
    ltx2_engine: LTX2Engine,
) -> None:
    """The engine's latents-then-stream path gives the pipeline's own frames (decoded there
    with its temporal tiling on, the same tiles): nothing is lost between denoise and decode."""
    pipe: Any = ltx2_engine.pipeline
    calls: list[dict[str, Any]] = []
    real = type(pipe).__call__

    def spy(self: Any, **kwargs: Any) -> Any:
        calls.append(dict(kwargs))
        return real(self, **kwargs)

    type(pipe).__call__ = spy
    try:
        out = ltx2_engine.generate(job(num_frames=48, seed=11), ignore)
    finally:
        type(pipe).__call__ = real
    streamed = out.frames.array()
    (kwargs,) = calls
    kwargs.update(output_type="np", generator=seeded_generator(11)[0])
    pipe.vae.use_framewise_decoding = True
    try:
        video, _audio = real(pipe, **kwargs)
    finally:
        pipe.vae.use_framewise_decoding = False
    assert streamed.shape == (49, 32, 64, 3)
    assert np.array_equal(streamed, np.rint(np.clip(video[0], 0, 1) * 255).astype(np.uint8))


def test_frames_are_decoded_only_as_they_are_read(ltx2_engine: LTX2Engine) -> None:
    vae: Any = ltx2_engine.pipeline.vae
    decodes: list[int] = []
    handle = vae.decoder.register_forward_hook(lambda *_: decodes.append(1))
    try:
        out = ltx2_engine.generate(job(num_frames=120), ignore)
        assert decodes == []  # denoised; not one frame decoded yet
        chunks = iter(out.frames)
        first = next(chunks)
        assert len(decodes) == 1 and len(first) == 9
        rest = list(chunks)
    finally:
        handle.remove()
    assert sum(map(len, rest)) + len(first) == out.frames.count == 121
    assert len(decodes) == 15  # one decoder pass per tile


def test_tiles_must_fit_the_vae_grid(ltx2_engine: LTX2Engine) -> None:
    latents = torch.zeros(1, ltx2_engine.pipeline.vae.config.latent_channels, 3, 1, 2)
    with pytest.raises(ValueError, match="multiples of the VAE's 8 frames"):
        stream_frames(ltx2_engine.pipeline.vae, latents, DecodeTiles(12, 8))
    with pytest.raises(ValueError, match="stride"):
        DecodeTiles(8, 16)
