"""Bounded memory on the media path: the worker's peak RSS for a 15 s clip is at most 1.2× that
of a 5 s clip at the same size (1920×1080), on the video presets, measured in the real worker
process (its peak resident set, reset before each run through ``/proc/<pid>/clear_refs``).

Before frames streamed from the VAE to the encoder, the tiny preset's worker peaked at ≈1.4 GB
for 5 s and ≈2.8 GB for 15 s: the whole clip was held at the contract size (15 s of 1080p is
2.2 GB as uint8) before it was encoded. The test also bounds what a 15 s run adds to the
worker at rest, far below one such clip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kinema.jobs.spec import ShotSpec
from kinema.media.video import probe_mp4
from kinema.runners.base import RunProgress, RunTask
from kinema.runners.local import LocalRunner
from tests.conftest import STORAGE, png, start_runner
from tests.fixtures.specs import video_spec

pytestmark = [pytest.mark.integration, pytest.mark.embedded_only]  # no job store involved

PRESETS = ["tiny-ltx2", "tiny-ltx2-quality", "tiny-ltx2-two-stage", "static-video"]
"""Every video preset that runs without a GPU: the LTX-2 pipelines (one stage, with guidance,
two stages through the latent upsampler) decoding tile by tile, and an engine with frames of
its own. The production presets' device memory is bench/engines.py's (peak_gpu_gb_decode)."""
RATIO = 1.2
GROWTH_MB = 800.0
"""Most a 15 s run may add to the worker's resident memory at rest (the clip is 2,240 MB)."""


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := the current RSS


@pytest.fixture(params=PRESETS)
async def runner(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[LocalRunner, str]]:
    started = await start_runner([request.param], tmp_path_factory.mktemp("models"))
    yield started, request.param
    await started.close()


async def _peak_of_run(
    runner: LocalRunner, preset: str, seconds: int, name: str
) -> tuple[float, float]:
    """``(peak MB during the run, MB at rest before it)`` of the worker for a ``seconds`` clip."""
    (worker,) = runner.workers
    pid = worker.pid
    assert pid is not None
    key = f"inputs/{name}/00-start_image"
    spec = video_spec(
        name,
        preset=preset,
        duration_s=seconds,
        num_frames=seconds * 24,
        shots=(ShotSpec(prompt="a kite over a hill", duration_s=seconds),),
        start_image=key,
    )
    rest = _status_mb(pid, "VmRSS")
    _reset_peak(pid)
    heard: list[RunProgress] = []
    result = await runner.run(RunTask(job_id=name, spec=spec, inline={key: png()}), heard.append)
    peak = _status_mb(pid, "VmHWM")
    info = probe_mp4(STORAGE / result.output_key)
    assert (info["width"], info["height"], info["frames"]) == (1920, 1080, seconds * 24)
    assert heard[-1].value == 1.0
    return peak, rest


async def test_peak_memory_does_not_grow_with_the_duration(
    runner: tuple[LocalRunner, str],
) -> None:
    worker, preset = runner
    # The first run's allocations (thread pools, codec tables) are not the duration's.
    await _peak_of_run(worker, preset, 1, f"warm-{preset}")
    peak5, _ = await _peak_of_run(worker, preset, 5, f"five-{preset}")
    peak15, rest = await _peak_of_run(worker, preset, 15, f"fifteen-{preset}")
    print(f"{preset}: peak {peak5:.0f} MB (5 s), {peak15:.0f} MB (15 s), at rest {rest:.0f} MB")
    assert peak15 <= RATIO * peak5, f"15 s peaked at {peak15:.0f} MB, 5 s at {peak5:.0f} MB"
    assert peak15 - rest <= GROWTH_MB, f"a 15 s run added {peak15 - rest:.0f} MB at rest"
