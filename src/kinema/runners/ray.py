"""The scale-out runner: each pool's jobs run on the replicas of its Ray Serve deployment
(:mod:`kinema.runners.ray_deploy`, :mod:`kinema.runners.ray_replica`).

This process joins the cluster at ``runner.ray_address`` as a driver and calls each pool's
deployment through a streaming handle: a run is one request whose answer is the replica's
protocol lines (:class:`~kinema.runners.protocol.Started`, progress, heartbeats, one outcome).
The dispatcher keeps the lease and the money, as with local workers: every event proves the
run alive (``on_alive``), and so does a cluster that is still bringing a replica up for it.

Every call to Ray has a deadline — an unhealthy deployment otherwise leaves its caller waiting
forever: control calls (connect, deploy, look-ups, status) ``runner.call_timeout_s``; a run's
first event (a replica started from zero loads its engines first) ``engines.startup_timeout_s``;
then the local runner's hard ends (:class:`~kinema.runners.process.RunLimits`).

Errors, translated here (:mod:`kinema.runners.base`):
- a replica that died (``ActorDiedError``, ``RayActorError``, a node gone), a deployment that
  cannot start a replica or does not answer, a stream that goes silent past the heartbeat
  limit or ends without an outcome: :class:`RunnerLost` (the dispatcher hands the job back);
- the engine's failure, the run's time limit, a stall: :class:`RunFailed` (final, refunded);
- :meth:`RayRunner.cancel` cancels the Serve request; the replica's engine stops at its next
  step: :class:`RunCancelled`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence

from pydantic import ValidationError
from ray import serve
from ray.exceptions import RayError, RayTaskError
from ray.serve.exceptions import RayServeException, RequestCancelledError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from kinema.runners.base import (
    NOT_STARTED,
    ProgressCallback,
    RunCancelled,
    RunFailed,
    RunnerError,
    RunnerLost,
    RunResult,
    RunTask,
)
from kinema.runners.protocol import (
    AnyEvent,
    Cancelled,
    Done,
    Failed,
    Heartbeat,
    PhaseChanged,
    Progress,
    Started,
    decode_event,
)
from kinema.runners.ray_calls import call, connect, first_line
from kinema.runners.ray_deploy import PoolApp, deploy, pool_apps
from kinema.runners.ray_replica import Replica
from kinema.settings import RunnerSettings, Settings

log = logging.getLogger(__name__)

STATUS_EVERY_S = 1.0
"""While a run waits for a replica, how often the deployment's state is looked at."""

_STARTUP_FAILED = "REPLICA_STARTUP_FAILED"
"""Serve's status trigger for a deployment whose replicas fail in their constructor (missing
weights, a broken install): no replica will take the run, whatever the wait."""


class RayPool:
    """One pool: its Serve application, ``max_replicas`` jobs at a time."""

    def __init__(
        self,
        app: PoolApp,
        handle: DeploymentHandle[Replica],
        runner: RunnerSettings,
        startup_s: float,
    ) -> None:
        self.app = app
        self.name = app.pool
        self.tasks = frozenset({app.task})
        self._handle = handle.options(method_name="run", stream=True)
        self._call_s = runner.call_timeout_s
        self._startup_s = startup_s
        self._streams: dict[str, _Stream] = {}
        self._checked = (0.0, "")
        """When the deployment's state was last looked at, and the problem found."""

    @property
    def capacity(self) -> int:
        return self.app.max_replicas

    async def run(
        self, task: RunTask, on_progress: ProgressCallback, on_alive: Callable[[], None]
    ) -> RunResult:
        begun = time.monotonic()
        try:
            response = self._handle.remote(task.model_dump_json())
        except (RayError, RayServeException) as exc:
            raise RunnerLost(f"{self.app.name}: the run was not sent: {first_line(exc)}") from exc
        assert isinstance(response, DeploymentResponseGenerator)  # stream=True
        stream = _Stream(response)
        self._streams[task.job_id] = stream
        try:
            started = await self._started(stream, begun, on_alive)
            waited = time.monotonic() - begun
            result = await self._follow(stream, task, on_progress, on_alive)
            return result.model_copy(update={"startup_time": waited if started.cold else 0.0})
        finally:
            del self._streams[task.job_id]
            stream.close()

    async def _started(
        self, stream: _Stream, begun: float, on_alive: Callable[[], None]
    ) -> Started:
        """Wait for a replica to take the run: its first event."""
        until = begun + self._startup_s
        while True:
            event = await stream.next(min(STATUS_EVERY_S, max(0.0, until - time.monotonic())))
            if isinstance(event, Started):
                return event
            if event is not None:
                raise RunnerLost(f"{self.app.name}: the replica sent {event.event} first")
            if time.monotonic() >= until:
                raise RunnerLost(
                    f"{self.app.name}: no replica took the run within {self._startup_s:g} s "
                    "(engines.startup_timeout_s)"
                )
            await self._check_deployment()
            on_alive()  # the cluster answers and is bringing a replica up for this run

    async def _check_deployment(self) -> None:
        """Raise :class:`RunnerLost` when the deployment cannot start a replica (looked at
        once per :data:`STATUS_EVERY_S` at most, however many runs wait)."""
        when, problem = self._checked
        if time.monotonic() - when >= STATUS_EVERY_S:
            status = await call(serve.status, timeout_s=self._call_s, what="serve.status()")
            problem = _startup_problem(status, self.app)
            self._checked = (time.monotonic(), problem)
        if problem:
            raise RunnerLost(f"{self.app.name}: {problem}")

    async def _follow(
        self,
        stream: _Stream,
        task: RunTask,
        on_progress: ProgressCallback,
        on_alive: Callable[[], None],
    ) -> RunResult:
        """The run after its start, to its outcome, within the pool's hard ends."""
        limits = self.app.limits
        now = seen = moved = time.monotonic()
        limit_s = limits.run_timeout(task.spec.preset)
        deadline = now + limit_s
        if task.deadline is not None:
            deadline = min(deadline, now + task.deadline - time.time())
        steps = 0
        progress = NOT_STARTED
        while True:
            now = time.monotonic()
            if now > deadline:
                raise RunFailed(
                    f"the run exceeded its time limit ({limit_s:g} s); its replica was told to stop"
                )
            if now - seen > limits.heartbeat_timeout_s:
                raise RunnerLost(
                    f"{self.app.name}: no word from the replica for "
                    f"{limits.heartbeat_timeout_s:g} s"
                )
            if now - moved > limits.stall_timeout_s:
                raise RunFailed(
                    f"the run stalled (no progress for {limits.stall_timeout_s:g} s); its "
                    "replica was told to stop"
                )
            wait = min(deadline, seen + limits.heartbeat_timeout_s, moved + limits.stall_timeout_s)
            event = await stream.next(max(0.01, wait - now))
            if event is None:
                continue
            seen = time.monotonic()
            on_alive()
            if isinstance(event, Progress | PhaseChanged):
                moved = seen  # a phase begun is progress too
                progress = progress.after(event)
                on_progress(progress)
            elif isinstance(event, Heartbeat):
                if event.steps != steps:
                    steps, moved = event.steps, seen
            elif isinstance(event, Done):
                return event.result
            elif isinstance(event, Failed):
                raise RunFailed(event.error)
            elif isinstance(event, Cancelled):
                raise RunCancelled(RunCancelled.DEFAULT)

    async def cancel(self, job_id: str) -> None:
        stream = self._streams.get(job_id)
        if stream is not None:
            stream.cancel()

    async def close(self) -> None:
        for stream in list(self._streams.values()):
            stream.close()


class _Stream:
    """A run's Serve response, read one event at a time without losing one to a timeout."""

    def __init__(self, response: DeploymentResponseGenerator[bytes]) -> None:
        self._response = response
        self._next: asyncio.Future[bytes] | None = None
        self.cancelled = False
        self._closed = False

    async def next(self, timeout_s: float) -> AnyEvent | None:
        """The next event; None when none came within ``timeout_s``."""
        if self._next is None:
            self._next = asyncio.ensure_future(self._response.__anext__())
        done, _ = await asyncio.wait({self._next}, timeout=timeout_s)
        if not done:
            return None
        pending, self._next = self._next, None
        try:
            line = pending.result()
        except StopAsyncIteration:
            raise RunnerLost("the replica's stream ended without an outcome") from None
        except RequestCancelledError as exc:
            if self.cancelled:
                raise RunCancelled(RunCancelled.DEFAULT) from exc
            raise RunnerLost(f"the run was cancelled by Ray: {first_line(exc)}") from exc
        except (RayError, RayServeException) as exc:
            raise _translated(exc) from exc
        try:
            return decode_event(line)
        except ValidationError:
            bad = f"{line!r:.200}"
            raise RunnerLost(f"the replica sent a line that is not an event: {bad}") from None

    def cancel(self) -> None:
        """Cancel the run (a caller's cancel): its next event is :class:`RunCancelled`."""
        self.cancelled = True
        self._response.cancel()  # type: ignore[no-untyped-call]  # (Ray leaves it unannotated)

    def close(self) -> None:
        """Stop reading; a run not ended yet is cancelled on its replica."""
        if self._closed:
            return
        self._closed = True
        if self._next is not None:
            self._next.cancel()
            self._next.add_done_callback(_consume)
        self._response.cancel()  # type: ignore[no-untyped-call]  # nothing once the run ended


def _consume(future: asyncio.Future[bytes]) -> None:
    """A read given up: its outcome is nobody's (retrieved, so asyncio does not log it)."""
    if not future.cancelled():
        future.exception()


def _translated(exc: BaseException) -> RunnerError:
    """A Ray failure of a run: the replica's own exception is a failed run; anything else
    (the replica, its node or the deployment gone) a lost one."""
    if isinstance(exc, RayTaskError) and not isinstance(exc.cause, RayError):
        return RunFailed(f"the replica failed: {first_line(exc.cause)}")
    return RunnerLost(f"the replica was lost: {type(exc).__name__}: {first_line(exc)}")


def _startup_problem(status: object, app: PoolApp) -> str:
    """Why the deployment of ``app`` cannot take a run now ('' when it can, or may soon)."""
    applications = getattr(status, "applications", {})
    found = applications.get(app.name)
    if found is None:
        return "the application is not deployed (kinema ray deploy)"
    deployment = found.deployments.get(app.pool)
    if deployment is None:
        return f"the application has no deployment {app.pool}"
    if str(getattr(deployment.status_trigger, "value", "")) == _STARTUP_FAILED:
        return f"its replicas fail to start: {first_line(deployment.message)}"
    return ""


class RayRunner:
    """The pools' Serve applications on a Ray cluster."""

    def __init__(
        self,
        apps: Sequence[PoolApp],
        runner: RunnerSettings,
        *,
        environment: dict[str, str],
        startup_timeout_s: float,
    ) -> None:
        self._apps = list(apps)
        self._settings = runner
        self._environment = environment
        self._startup_s = startup_timeout_s
        self._pools: list[RayPool] = []
        self._by_task: dict[str, RayPool] = {}

    @property
    def pools(self) -> list[RayPool]:
        return list(self._pools)

    async def start(self) -> None:
        """Connect, deploy the applications that are missing (``runner.deploy_on_start``) and
        look up each one's handle; :class:`RunnerLost` naming the step that failed."""
        runner, limit = self._settings, self._settings.call_timeout_s
        address = runner.ray_address
        await call(connect, address, timeout_s=limit, what=f"connecting to {address}")
        if runner.deploy_on_start:
            missing = functools.partial(deploy, self._apps, self._environment, missing_only=True)
            await call(missing, timeout_s=limit * len(self._apps), what="deploying the pools")
        for app in self._apps:
            handle = await call(
                serve.get_app_handle, app.name, timeout_s=limit, what=f"finding {app.name}"
            )
            pool = RayPool(app, handle, runner, self._startup_s)
            self._pools.append(pool)
            self._by_task[app.task] = pool

    async def run(
        self,
        task: RunTask,
        on_progress: ProgressCallback,
        on_alive: Callable[[], None] = lambda: None,
    ) -> RunResult:
        pool = self._by_task.get(task.spec.task)
        if pool is None:
            raise RunFailed(f"no Ray deployment here serves {task.spec.task}")
        return await pool.run(task, on_progress, on_alive)

    async def cancel(self, job_id: str) -> None:
        for pool in self._pools:
            await pool.cancel(job_id)

    async def close(self) -> None:
        """Stop following runs (their replicas are told to stop). The cluster connection stays
        for the process's life: Ray allows one, and a later runner reuses it."""
        for pool in self._pools:
            await pool.close()


async def deploy_pools(settings: Settings) -> list[PoolApp]:
    """Deploy or update every pool's application on the cluster (``kinema ray deploy``);
    :class:`RunnerLost` naming the step that failed or ran past its deadline."""
    from kinema.storage.factory import worker_environment

    apps, runner = pool_apps(settings), settings.runner
    limit = runner.call_timeout_s
    address = runner.ray_address
    await call(connect, address, timeout_s=limit, what=f"connecting to {address}")
    every = functools.partial(deploy, apps, worker_environment(settings), missing_only=False)
    await call(every, timeout_s=limit * len(apps), what="deploying the pools")
    return apps
