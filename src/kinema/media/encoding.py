"""How the MP4's video is encoded: the codec and its quality and speed knobs, as data.

Kept apart from :mod:`kinema.media.video` (which needs PyAV) so the settings and the worker
protocol can carry it without importing PyAV.

The libx264 defaults were chosen by measurement (``bench/media.py --parts sweep``: 48 frames
of 1920×1080 synthetic video with texture, motion and grain, a panning and a mostly still
clip; 2 vCPU, no GPU; docs/performance.md, "Media path"). At CRF 18 ``veryfast`` encoded
18 fps (panning) and 34 fps (still); ``superfast`` is ~1.8× as fast but, with no macroblock
tree, needs 8% (panning) to 31% (still, the common generated shot) more bits for the same luma
PSNR; ``faster`` and ``medium`` take 1.5× and ~2.8× the time for +0.7 and +1 dB. ``threads =
0`` (libx264's count, 1.5 per core, frame threads) was 1.35–1.9× one thread; ``tune = film``
gave nothing, ``fastdecode`` 20–26% bigger files.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Codec = Literal["libx264", "h264_nvenc", "auto"]
X264Preset = Literal[
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
]
X264Tune = Literal[
    "film", "animation", "grain", "stillimage", "psnr", "ssim", "fastdecode", "zerolatency"
]
NvencPreset = Literal["p1", "p2", "p3", "p4", "p5", "p6", "p7"]


class EncoderSettings(BaseModel):
    """The H.264 encoder of the output MP4 (yuv420p, BT.709 limited range, either codec)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    codec: Codec = "libx264"
    """``libx264`` (CPU); ``h264_nvenc`` (NVIDIA's hardware encoder: used when the PyAV build
    has it and it opens on this machine's GPU and driver; otherwise libx264, with one warning
    per process); ``auto``: NVENC when it opens, else libx264, silently."""
    preset: X264Preset = "veryfast"
    """libx264's speed/size trade-off (measured: see the module docstring)."""
    crf: int = Field(18, ge=0, le=51)
    """libx264's constant rate factor: lower is better quality and bigger files."""
    threads: int = Field(0, ge=0)
    """libx264's encoding threads; 0: its own choice (1.5 per core)."""
    tune: X264Tune | None = None
    """libx264's ``tune`` (none by default)."""
    nvenc_preset: NvencPreset = "p5"
    """NVENC's speed/quality preset, ``p1`` (fastest) to ``p7`` (best)."""
    cq: int = Field(19, ge=1, le=51)
    """NVENC's constant-quality level (variable bitrate, no bitrate cap), its CRF."""
