"""Where workers run: one pool per task, each worker pinned to its GPUs, checked to fit.

A pool serves one preset (its task's engine); each of its workers loads that preset and the
presets it needs (a video engine that composes elements loads the image engine too). A worker
takes ``resources.gpus`` GPUs of its preset — the pool's ``devices`` in order, or else the GPUs
with the most memory left, then the fewest workers — and sees only those
(``CUDA_VISIBLE_DEVICES``). A placement whose estimated memory exceeds a GPU's is refused at
start-up, naming the device, the presets and the numbers. Without GPUs everything runs on the
CPU and nothing is checked.

Pure data in, data out: the device inventory is an argument (tests pass fake ones).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from kinema.engines.base import Task
from kinema.engines.registry import Preset, get_preset
from kinema.engines.speech import speech_for
from kinema.settings import EngineSettings, PoolSettings


class PlacementError(ValueError):
    """The configured pools cannot be placed on the machine's GPUs."""


@dataclass(frozen=True)
class Device:
    index: int
    memory_gib: float


@dataclass(frozen=True)
class PoolPlan:
    preset: str
    loads: tuple[str, ...]
    """The presets each worker loads: the pool's own first."""
    task: Task
    workers: tuple[tuple[int, ...] | None, ...]
    """Each worker's GPU indices; None: no GPU placement (CPU machine)."""
    run_timeout_s: float | None = None
    speech: str | None = None
    """The speech preset each worker loads too (a video engine that follows audio)."""

    @property
    def name(self) -> str:
        """The task it serves (``image-to-video``): one pool per task."""
        return self.task.value


def pools_of(settings: EngineSettings) -> list[PoolSettings]:
    """The pools: the long form as given, or one per task from the short form."""
    if settings.pools:
        return list(settings.pools)
    return [
        PoolSettings(preset=name, workers=settings.workers) for name in settings.resolved_presets()
    ]


def plan(
    settings: EngineSettings, devices: Sequence[Device], *, cpu_offload: bool = False
) -> list[PoolPlan]:
    """Place every pool's workers; raises :class:`PlacementError` when they do not fit."""
    pools = pools_of(settings)
    presets = {pool.preset: get_preset(pool.preset) for pool in pools}
    by_task: dict[Task, str] = {}
    for pool in pools:
        task = presets[pool.preset].task
        if task in by_task:
            raise PlacementError(
                f"engines.pools: two pools serve {task.value} ({by_task[task]}, {pool.preset}); "
                "give one pool more workers instead"
            )
        by_task[task] = pool.preset
    used = {device.index: 0.0 for device in devices}
    holders: dict[int, list[str]] = {device.index: [] for device in devices}
    plans = []
    for pool in pools:
        preset = presets[pool.preset]
        loads = _loads(preset, by_task)
        need = sum(get_preset(name).resources.peak_gib(cpu_offload=cpu_offload) for name in loads)
        speech = speech_for(preset, settings.speech_preset)
        if speech is not None:
            need += speech.resources.peak_gib(cpu_offload=cpu_offload)
        workers: list[tuple[int, ...] | None] = []
        for n in range(pool.workers):
            if not devices:
                workers.append(None)
                continue
            gpus = _pick(pool, preset, n, devices, used, holders)
            for index in gpus:
                used[index] += need / max(1, len(gpus))
                names = (*loads, speech.name) if speech is not None else loads
                holders[index].append(f"{pool.preset} worker {n} ({' + '.join(names)})")
            workers.append(gpus)
        task = preset.task
        plans.append(
            PoolPlan(
                pool.preset,
                loads,
                task,
                tuple(workers),
                pool.run_timeout_s,
                None if speech is None else speech.name,
            )
        )
    _check_fit(devices, used, holders, cpu_offload)
    return plans


def _loads(preset: Preset, by_task: dict[Task, str]) -> tuple[str, ...]:
    needed = []
    for task in preset.required_tasks:
        if task not in by_task:
            raise PlacementError(
                f"{preset.name} needs an engine for {task.value}, and no pool serves it"
            )
        needed.append(by_task[task])
    return (preset.name, *needed)


def _pick(
    pool: PoolSettings,
    preset: Preset,
    n: int,
    devices: Sequence[Device],
    used: dict[int, float],
    holders: dict[int, list[str]],
) -> tuple[int, ...]:
    count = preset.resources.gpus
    if count == 0:
        return ()
    known = {device.index for device in devices}
    if pool.devices:
        chosen = pool.devices[n * count : (n + 1) * count]
        if len(chosen) < count:
            raise PlacementError(
                f"engines.pools[{pool.preset}]: {pool.workers} workers × {count} GPU(s) need "
                f"{pool.workers * count} devices, devices lists {len(pool.devices)}"
            )
        unknown = sorted(set(chosen) - known)
        if unknown:
            raise PlacementError(
                f"engines.pools[{pool.preset}]: device {unknown[0]} does not exist "
                f"(found: {sorted(known) or 'none'})"
            )
        return tuple(chosen)
    if count > len(devices):
        raise PlacementError(
            f"{preset.name} needs {count} GPUs per worker; this machine has {len(devices)}"
        )
    # The most memory left first, then the fewest workers, then the lowest index.
    free = sorted(
        devices, key=lambda d: (used[d.index] - d.memory_gib, len(holders[d.index]), d.index)
    )
    return tuple(sorted(d.index for d in free[:count]))


def _check_fit(
    devices: Sequence[Device],
    used: dict[int, float],
    holders: dict[int, list[str]],
    cpu_offload: bool,
) -> None:
    for device in devices:
        if used[device.index] > device.memory_gib:
            hint = "" if cpu_offload else "; engines.cpu_offload = true lowers the estimates"
            raise PlacementError(
                f"GPU {device.index} ({device.memory_gib:g} GiB) cannot hold "
                f"{'; '.join(holders[device.index])}: about {used[device.index]:.0f} GiB "
                f"estimated{hint}; or give the pools other devices (engines.pools[].devices)"
            )


def detect_devices(settings: EngineSettings) -> list[Device]:
    """The GPUs: ``engines.gpu_memory_gib`` when set, else as ``nvidia-smi`` reports them,
    else none (CPU)."""
    if settings.gpu_memory_gib is not None:
        return [Device(i, gib) for i, gib in enumerate(settings.gpu_memory_gib)]
    if settings.device == "cpu" or shutil.which("nvidia-smi") is None:
        return []
    try:
        query = ["--query-gpu=index,memory.total", "--format=csv,noheader,nounits"]
        out = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            ["nvidia-smi", *query],  # noqa: S607 - found on PATH above
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.splitlines():
        index, mib = (part.strip() for part in line.split(","))
        found.append(Device(int(index), float(mib) / 1024))
    return found
