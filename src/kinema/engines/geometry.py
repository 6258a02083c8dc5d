"""Working sizes and frame counts an engine renders at, derived from its capabilities.

Pure arithmetic (no torch), shared by every engine so that the static engine and the diffusers
engines agree on what "the working size of this job" means.
"""

from __future__ import annotations

from kinema.engines.base import Capabilities


def working_size(width: int, height: int, capabilities: Capabilities) -> tuple[int, int]:
    """The size on the ``size_multiple`` grid closest to ``width×height``, keeping its aspect.

    The long side is rounded to the grid (1080 → 1088: render a little more and crop after
    decoding, rather than upscale) and capped by ``max_working_side``; the short side is the
    nearest grid size that keeps the aspect, at least one cell. At multiple 32, 1920×1080 gives
    1920×1088; with a cap of 64, 64×32.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive, got {width}×{height}")
    step = capabilities.size_multiple
    long_side, short_side = max(width, height), min(width, height)
    long_out = round(long_side / step) * step
    if capabilities.max_working_side is not None:
        long_out = min(long_out, capabilities.max_working_side // step * step)
    long_out = max(step, long_out)
    short_out = max(step, round(long_out * short_side / long_side / step) * step)
    return (long_out, short_out) if width >= height else (short_out, long_out)


def grid_frame_count(num_frames: int, capabilities: Capabilities) -> int:
    """The smallest frame count on the ``frame_grid·k + 1`` grid that covers ``num_frames``.

    Raises ``ValueError`` when that exceeds ``max_frames``: callers validate against the
    capabilities first, so reaching this is a bug, not a request to shorten the video.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    grid = capabilities.frame_grid
    count = num_frames if grid == 1 else -(-(num_frames - 1) // grid) * grid + 1
    if count > capabilities.max_frames:
        raise ValueError(
            f"{num_frames} frames need {count} on this engine's grid, above its max_frames "
            f"{capabilities.max_frames}"
        )
    return count
