"""The runner the settings ask for: worker processes with their pools placed on this machine's
GPUs, or the pools as Ray Serve deployments (``runner.backend = "ray"``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from kinema.engines.registry import LoadOptions
from kinema.runners.base import Runner
from kinema.runners.local import LocalPool, LocalRunner, RunLimits, WorkerProcess
from kinema.runners.placement import Device, detect_devices, plan
from kinema.runners.protocol import WorkerConfig
from kinema.settings import Settings, SettingsError
from kinema.storage.factory import storage_target, worker_environment

RAY_EXTRA = 'runner.backend = "ray" needs Ray Serve: pip install "kinema[ray]"'


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
        encoder=settings.media.encoder(),
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
    if settings.runner.backend == "ray":
        return _ray_runner(settings)
    inventory = detect_devices(engines) if devices is None else list(devices)
    plans = plan(engines, inventory, cpu_offload=engines.cpu_offload)
    base, limits = worker_config(settings), run_limits(settings)
    pools = []
    for pool in plans:
        config = base.model_copy(update={"presets": pool.loads, "speech_preset": pool.speech})
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


def _ray_runner(settings: Settings) -> Runner:
    """The pools as Ray Serve deployments; Ray is imported only here, for this backend."""
    try:
        from kinema.runners.ray import RayRunner
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "ray":
            raise
        raise SettingsError(RAY_EXTRA) from exc
    from kinema.runners.ray_deploy import pool_apps

    return RayRunner(
        pool_apps(settings),
        settings.runner,
        environment=worker_environment(settings),
        startup_timeout_s=settings.engines.startup_timeout_s,
    )


def _ids(gpus: tuple[int, ...]) -> str:
    return ",".join(map(str, gpus))


def _pinned(gpus: tuple[int, ...] | None, inventory: Sequence[Device]) -> dict[str, str]:
    """A worker sees only its GPUs (none for a CPU preset); on a machine without GPUs nothing
    is set."""
    if gpus is None or not inventory:
        return {}
    return {"CUDA_VISIBLE_DEVICES": _ids(gpus)}
