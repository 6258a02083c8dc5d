"""LTX-2's latents to pixels a few frames at a time, and its audio latents to a waveform.

The pipeline is called for latents (``output_type="latent"``); the video VAE then decodes them
here in temporal tiles, each tile converted to uint8 on the device and handed over before the
next is decoded, so neither the device nor the host ever holds the whole clip in float (a 15 s
1088×1920 clip is ~9 GB as the float32 array the pipeline would return).

The tiles follow diffusers' own temporal tiling of ``AutoencoderKLLTX2Video`` exactly (same tile
and stride, the same linear blend over their overlap, its causal first frame), so the frames are
the ones ``vae.enable_framewise_decoding``-style decoding would make; spatial tiling
(``engines.vae_tiling``) applies inside each tile.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch

from kinema.engines.base import FrameChunk, FrameStream


@dataclass(frozen=True)
class DecodeTiles:
    """Temporal tiles of the streaming decode, in pixel frames (multiples of the VAE's 8)."""

    frames: int = 16
    """Pixel frames one tile decodes (plus its causal first frame)."""
    stride: int = 8
    """Pixel frames between tile starts; ``frames - stride`` frames are blended."""

    def __post_init__(self) -> None:
        if not 0 < self.stride <= self.frames:
            raise ValueError(f"decode tiles need 0 < stride <= frames, got {self}")


DIFFUSERS_TILES = DecodeTiles()


def stream_frames(vae: Any, latents: torch.Tensor, tiles: DecodeTiles) -> FrameStream:
    """The frames of ``latents`` (``[1, C, F, h, w]``, denormalized as the pipeline returns
    them with ``output_type="latent"``), decoded tile by tile as the stream is read."""
    if latents.ndim != 5 or latents.shape[0] != 1:
        raise ValueError(f"one video's latents [1, C, F, h, w] expected, got {latents.shape}")
    ratio = int(vae.temporal_compression_ratio)
    spatial = int(vae.spatial_compression_ratio)
    if tiles.frames % ratio or tiles.stride % ratio:
        raise ValueError(f"decode tiles must be multiples of the VAE's {ratio} frames: {tiles}")
    count = (latents.shape[2] - 1) * ratio + 1
    height, width = latents.shape[3] * spatial, latents.shape[4] * spatial
    return FrameStream(count, width, height, _tiles(vae, latents, tiles, ratio, count))


def _tiles(
    vae: Any, latents: torch.Tensor, tiles: DecodeTiles, ratio: int, count: int
) -> Iterator[FrameChunk]:
    latent_frames = latents.shape[2]
    tile, stride = tiles.frames // ratio, tiles.stride // ratio
    blend = tiles.frames - tiles.stride
    temb = _decode_timestep(vae, latents)
    previous: torch.Tensor | None = None
    made = 0
    for first in range(0, latent_frames, stride):
        decoded = _decode(vae, latents[:, :, first : first + tile + 1], temb)
        if first > 0:
            decoded = decoded[:, :, :-1]  # the next tile starts with this frame
        if previous is None:
            kept = decoded[:, :, : tiles.stride + 1]
        else:
            decoded = cast(torch.Tensor, vae.blend_t(previous, decoded, blend))
            kept = decoded[:, :, : tiles.stride]
        previous = decoded
        kept = kept[:, :, : count - made]
        if kept.shape[2]:
            made += kept.shape[2]
            yield _to_uint8(kept)
        if made >= count:
            return


def _decode_timestep(vae: Any, latents: torch.Tensor) -> torch.Tensor | None:
    """The pipeline's ``decode_timestep`` (0: no decode noise) for VAEs conditioned on one."""
    if not vae.config.timestep_conditioning:
        return None
    return torch.zeros(1, device=latents.device, dtype=latents.dtype)


def _decode(vae: Any, tile: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
    """One tile through ``vae.decode`` (its offload hook and spatial tiling apply), with the
    VAE's own temporal tiling kept off: the tiles are already the temporal tiles."""
    vae.use_framewise_decoding = False
    with torch.no_grad():
        return cast(torch.Tensor, vae.decode(tile.to(vae.dtype), temb, return_dict=False)[0])


def _to_uint8(video: torch.Tensor) -> FrameChunk:
    """``[1, 3, t, H, W]`` in -1..1 → ``[t, H, W, 3]`` uint8, converted on the device (as the
    pipeline's postprocessing rounds: ``rint(clip(x / 2 + 0.5, 0, 1) * 255)``)."""
    with torch.no_grad():
        pixels = (video.float() * 0.5 + 0.5).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
        frames = pixels[0].permute(1, 2, 3, 0).contiguous().cpu().numpy()
    return cast(npt.NDArray[np.uint8], frames)


def decode_audio(pipeline: Any, audio_latents: torch.Tensor) -> npt.NDArray[np.float32]:
    """Audio latents (denormalized and unpacked, as returned with ``output_type="latent"``) →
    the vocoder's waveform ``[channels, samples]`` in -1..1 (one clip)."""
    with torch.no_grad():
        audio_vae = pipeline.audio_vae
        mel = audio_vae.decode(audio_latents.to(audio_vae.dtype), return_dict=False)[0]
        waveform = cast(torch.Tensor, pipeline.vocoder(mel))
        return cast(npt.NDArray[np.float32], waveform[0].float().clamp(-1.0, 1.0).cpu().numpy())
