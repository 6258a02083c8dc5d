"""The Serve applications of the Ray runner: one per pool, from the same pool plan as the
local runner, and how they are deployed.

Each pool (one per task) is an application ``<runner.app_name>-<task>`` holding one deployment
of :class:`~kinema.runners.ray_replica.Replica` that loads the pool's presets. Its replicas take
the preset's GPUs (none with ``engines.device = "cpu"``) and one job at a time; they scale
with the jobs waiting, from zero to ``runner.max_replicas``, and back to zero after
``runner.downscale_delay_s`` idle. A replica being replaced or scaled down is given longer than
the longest run to finish its job.

:func:`pool_apps` is plain data (no Ray); :func:`deploy` imports Ray Serve and must run in a
process connected to the cluster (:func:`kinema.runners.ray.connect`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, cast

from kinema.engines.registry import get_preset, load_plugins
from kinema.runners.placement import plan
from kinema.runners.process import RunLimits
from kinema.runners.ray_replica import ReplicaConfig
from kinema.settings import Settings

if TYPE_CHECKING:
    from ray.serve import Application
    from ray.serve.deployment import Deployment

log = logging.getLogger(__name__)

METRICS_S = 1.0
"""How often handles and replicas report their load to Serve's autoscaler."""

SHUTDOWN_MARGIN_S = 60.0
"""A replica told to stop is given its longest run plus this to finish the run it has."""


class ActorOptions(TypedDict, total=False):
    num_gpus: int
    num_cpus: float
    runtime_env: dict[str, dict[str, str]]


class Autoscaling(TypedDict):
    min_replicas: int
    initial_replicas: int
    max_replicas: int
    target_ongoing_requests: float
    upscale_delay_s: float
    downscale_delay_s: float
    downscale_to_zero_delay_s: float
    metrics_interval_s: float
    look_back_period_s: float
    aggregation_function: str


class DeploymentOptions(TypedDict):
    """The options of ``serve.deployment(...).options()`` that Kinema sets."""

    name: str
    max_ongoing_requests: int
    ray_actor_options: ActorOptions
    autoscaling_config: Autoscaling
    graceful_shutdown_timeout_s: float


@dataclass(frozen=True)
class PoolApp:
    """One pool as a Serve application."""

    name: str
    """The application's name (``kinema-image-to-video``)."""
    pool: str
    """The pool's name: its task, also the deployment's name."""
    task: str
    config: ReplicaConfig
    limits: RunLimits
    """The pool's run limits, held by the caller (the dispatcher's side)."""
    num_gpus: int
    num_cpus: float
    max_replicas: int
    downscale_delay_s: float

    @property
    def graceful_shutdown_s(self) -> float:
        longest = max([self.limits.run_timeout_s, *self.limits.run_timeout_overrides.values()])
        return longest + SHUTDOWN_MARGIN_S

    def deployment_options(self) -> DeploymentOptions:
        """The Serve deployment's options (also what ``kinema ray deploy`` prints)."""
        idle = self.downscale_delay_s
        return {
            "name": self.pool,
            "max_ongoing_requests": 1,  # an engine runs one generation at a time
            "ray_actor_options": {"num_gpus": self.num_gpus, "num_cpus": self.num_cpus},
            "autoscaling_config": {
                "min_replicas": 0,
                "initial_replicas": 0,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": 1,
                "upscale_delay_s": 0.0,  # a job is waiting: start a replica now
                "downscale_delay_s": idle,
                "downscale_to_zero_delay_s": idle,
                # A handle reports its waiting requests this often: the default 10 s would
                # add up to 10 s to every start from zero. (Serve 2.60 calls the field
                # deprecated, with a DeprecationWarning, yet its handles still use it.)
                "metrics_interval_s": METRICS_S,
                # The load of this window decides: its peak, so one waiting job has a replica,
                # and a replica is idle only once the whole window was (shorter than the idle
                # delay, which would otherwise be prolonged; longer than the interval).
                "look_back_period_s": min(30.0, max(2 * METRICS_S, idle)),
                "aggregation_function": "max",
            },
            "graceful_shutdown_timeout_s": self.graceful_shutdown_s,
        }


def pool_apps(settings: Settings) -> list[PoolApp]:
    """The applications for the configured pools (placement on GPUs is Ray's: no devices)."""
    from kinema.runners.factory import run_limits, worker_config

    engines, runner = settings.engines, settings.runner
    load_plugins(engines.plugins)  # the pools may name a plugin's presets
    base, limits = worker_config(settings), run_limits(settings)
    apps = []
    for pool in plan(engines, [], cpu_offload=engines.cpu_offload):
        pool_limits = limits
        if pool.run_timeout_s is not None:
            pool_limits = dataclasses.replace(limits, run_timeout_s=pool.run_timeout_s)
        worker = base.model_copy(update={"presets": pool.loads, "speech_preset": pool.speech})
        gpus = 0 if engines.device == "cpu" else get_preset(pool.preset).resources.gpus
        apps.append(
            PoolApp(
                name=f"{runner.app_name}-{pool.name}",
                pool=pool.name,
                task=pool.task.value,
                config=ReplicaConfig(worker=worker, cancel_grace_s=limits.cancel_grace_s),
                limits=pool_limits,
                num_gpus=gpus,
                num_cpus=runner.replica_cpus,
                max_replicas=runner.max_replicas,
                downscale_delay_s=runner.downscale_delay_s,
            )
        )
    return apps


def application(app: PoolApp, environment: dict[str, str]) -> Application:
    """The Serve application of ``app``; ``environment``: variables its replicas get (the S3
    credentials the settings give, :func:`kinema.storage.factory.worker_environment`)."""
    from ray import serve

    from kinema.runners.ray_replica import Replica

    options = app.deployment_options()
    actor = options["ray_actor_options"]
    if environment:
        # Ray keeps a runtime environment in its control store, readable by the cluster's
        # users: docs/operations.md says to give the nodes their own credentials instead.
        actor["runtime_env"] = {"env_vars": environment}
    # Typed as returning a decorator; given the class, it returns the deployment.
    deployment = cast("Deployment", serve.deployment(Replica)).options(
        name=options["name"],
        max_ongoing_requests=options["max_ongoing_requests"],
        ray_actor_options=dict(actor),
        autoscaling_config=dict(options["autoscaling_config"]),
        graceful_shutdown_timeout_s=options["graceful_shutdown_timeout_s"],
    )
    return deployment.bind(app.config.model_dump_json())


def build(args: dict[str, str]) -> Application:
    """A Serve application builder, for a Serve config file (a KubeRay ``RayService``) instead
    of ``kinema ray deploy``: ``import_path: kinema.runners.ray_deploy:build`` with ``args``
    ``{pool: image-to-video, config: /etc/kinema/kinema.toml}`` (``config`` optional: then the
    ``KINEMA_*`` environment of the cluster). The application is the one ``kinema ray deploy``
    makes from the same settings; name it ``<runner.app_name>-<pool>`` in the config."""
    from kinema.settings import load_settings
    from kinema.storage.factory import worker_environment

    config = args.get("config")
    settings = load_settings(Path(config) if config else None)
    apps = {app.pool: app for app in pool_apps(settings)}
    pool = args.get("pool", "")
    if pool not in apps:
        raise ValueError(f"pool {pool!r} is not configured; the pools are: {', '.join(apps)}")
    return application(apps[pool], worker_environment(settings))


def deploy(
    apps: Sequence[PoolApp], environment: dict[str, str], *, missing_only: bool
) -> list[str]:
    """Deploy (or update) ``apps`` on the connected cluster; blocking, to be run in a thread.
    ``missing_only``: leave applications that are already there as they are. Returns the
    names deployed."""
    from ray import serve

    serve.start(proxy_location="Disabled")  # called through handles only: no HTTP proxy
    present = set(serve.status().applications) if missing_only else set()
    deployed = []
    for app in apps:
        if app.name in present:
            continue
        serve.run(application(app, environment), name=app.name, route_prefix=None)
        presets = ", ".join(app.config.worker.presets)
        log.info("deployed Serve application %s (%s)", app.name, presets)
        deployed.append(app.name)
    return deployed
