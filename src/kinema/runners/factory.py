"""The runner the settings ask for (the scale-out runner will be one more module and one more
branch here), with its pools placed on the machine's GPUs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from kinema.engines.registry import LoadOptions
from kinema.runners.base import Runner
from kinema.runners.local import LocalPool, LocalRunner, RunLimits, WorkerProcess
from kinema.runners.placement import Device, detect_devices, plan
from kinema.runners.protocol import WorkerConfig
from kinema.settings import Settings
from kinema.storage.factory import storage_target, worker_environment


def worker_config(settings: Settings) -> WorkerConfig:
    engines = settings.engines
    options = LoadOptions(
        models_dir=settings.models_dir.resolve(),  # the worker may start elsewhere
        device=engines.device,
        dtype=engines.dtype,
        cpu_offload=engines.cpu_offload,
        vae_tiling=engines.vae_tiling,
        num_inference_steps=engines.num_inference_steps,
    )
    return WorkerConfig(
        presets=engines.resolved_presets(),
        load_options=options,
        plugins=tuple(engines.plugins),
        storage=storage_target(settings),
    )


def run_limits(settings: Settings) -> RunLimits:
    jobs = settings.jobs
    return RunLimits(
        run_timeout_s=jobs.run_timeout_s,
        run_timeout_overrides=dict(jobs.run_timeout_overrides),
        stall_timeout_s=jobs.stall_timeout_s,
        cancel_grace_s=jobs.cancel_grace_s,
        max_rss_mb=settings.engines.max_worker_rss_mb,
    )


def open_runner(settings: Settings, devices: Sequence[Device] | None = None) -> Runner | None:
    """The configured runner, not started: one pool per task, each worker pinned to its GPUs
    (``devices``: the inventory, detected when None). None for an API-only replica. Raises
    :class:`~kinema.runners.placement.PlacementError` when the pools do not fit."""
    engines = settings.engines
    if engines.workers <= 0 and not engines.pools:
        return None
    inventory = detect_devices(engines) if devices is None else list(devices)
    plans = plan(engines, inventory, cpu_offload=engines.cpu_offload)
    base, limits = worker_config(settings), run_limits(settings)
    pools = []
    for pool in plans:
        config = base.model_copy(update={"presets": pool.loads})
        pool_limits = limits
        if pool.run_timeout_s is not None:
            pool_limits = dataclasses.replace(limits, run_timeout_s=pool.run_timeout_s)
        workers = [
            WorkerProcess(
                config,
                limits=pool_limits,
                startup_timeout_s=engines.startup_timeout_s,
                env={**worker_environment(settings), **_pinned(gpus, inventory)},
                name=f"{pool.name} worker {n}" + (f" (GPU {_ids(gpus)})" if gpus else ""),
            )
            for n, gpus in enumerate(pool.workers)
        ]
        pools.append(LocalPool(pool.name, frozenset({pool.task.value}), workers))
    return LocalRunner(pools)


def _ids(gpus: tuple[int, ...]) -> str:
    return ",".join(map(str, gpus))


def _pinned(gpus: tuple[int, ...] | None, inventory: Sequence[Device]) -> dict[str, str]:
    """A worker sees only its GPUs (none for a CPU preset); on a machine without GPUs nothing
    is set."""
    if gpus is None or not inventory:
        return {}
    return {"CUDA_VISIBLE_DEVICES": _ids(gpus)}
