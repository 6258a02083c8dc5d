"""The runner the settings ask for (the scale-out runner will be one more module and one more
branch here)."""

from __future__ import annotations

from kinema.engines.registry import LoadOptions
from kinema.runners.base import Runner
from kinema.runners.local import LocalRunner, RunLimits
from kinema.runners.protocol import WorkerConfig
from kinema.settings import Settings
from kinema.storage.factory import storage_target


def worker_config(settings: Settings) -> WorkerConfig:
    engines = settings.engines
    options = LoadOptions(
        models_dir=settings.models_dir,
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


def open_runner(settings: Settings) -> Runner | None:
    """The configured runner, not started; None for an API-only replica (no workers)."""
    if settings.engines.workers <= 0:
        return None
    return LocalRunner(
        worker_config(settings),
        workers=settings.engines.workers,
        limits=run_limits(settings),
        startup_timeout_s=settings.engines.startup_timeout_s,
    )
