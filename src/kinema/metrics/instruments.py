"""The instruments recorded as things happen, in a registry of the app's own (never the global
default one: tests build many apps in one process, and two apps must not share counts).

Labels are bounded: a route's template (never the raw path), a method, a status code, a job
state, an engine preset, a pool. Never a key, a key id or a request id."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram

from kinema.billing.keys import from_micros
from kinema.jobs.models import Job, Status
from kinema.metrics.collector import StateCollector
from kinema.runners.base import Runner
from kinema.store.db import Database

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Seconds: an async submit answers in milliseconds, a sync request in the generation's time."""
RUN_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0)
QUEUE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0)
UNMATCHED = "unmatched"
"""The route label of a request no route matched (its raw path would be unbounded)."""
UNKNOWN_PRESET = "unknown"
"""The preset label of a job queued before presets were recorded in the job spec."""

HttpRecord = Callable[[float], None]


class Metrics:
    """Every instrument Kinema records, in :attr:`registry` (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.http_requests = Counter(
            "kinema_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=reg,
        )
        self.http_duration = Histogram(
            "kinema_http_request_duration_seconds",
            "Time from a request's arrival to its last byte handed to the server, by method "
            "and route template.",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=reg,
        )
        self.jobs = Counter(
            "kinema_jobs",
            "Jobs settled by this replica's dispatcher, by final state and engine preset.",
            ["state", "preset"],
            registry=reg,
        )
        self.run_duration = Histogram(
            "kinema_job_run_duration_seconds",
            "From a completed job's start on a worker to its settle, by engine preset.",
            ["preset"],
            buckets=RUN_BUCKETS,
            registry=reg,
        )
        self.queue_wait = Histogram(
            "kinema_job_queue_wait_seconds",
            "From a settled job's submit to its start on a worker, by engine preset.",
            ["preset"],
            buckets=QUEUE_BUCKETS,
            registry=reg,
        )
        self.credits = Counter(
            "kinema_credits_charged",
            "Credits charged for completed jobs (refunded ones are not counted), by preset.",
            ["preset"],
            registry=reg,
        )
        self._http: dict[tuple[str, str, int], HttpRecord] = {}
        self._state: StateCollector | None = None

    def watch(self, runner: Runner | None, models: Mapping[str, str]) -> Callable[[], None]:
        """Report the store's unfinished jobs and ``runner``'s restarts at each scrape
        (``models``: model slug → engine task). Returns what stops it (the app's lifespan
        ends: its runner and store go away)."""
        state = self._state = StateCollector(runner, models)
        self.registry.register(state)

        def unwatch() -> None:
            self.registry.unregister(state)
            self._state = None

        return unwatch

    async def refresh(self, db: Database) -> None:
        """Read what the next scrape reports from the store (one query)."""
        if self._state is not None:
            await self._state.refresh(db)

    def http(self, method: str, route: str, status: int) -> HttpRecord:
        """The recorder of one (method, route, status): call it with the request's seconds.
        Kept per label set: looking labels up costs more than the increment itself, and this
        runs on every request."""
        key = (method, route, status)
        record = self._http.get(key)
        if record is None:
            count = self.http_requests.labels(method, route, str(status))
            duration = self.http_duration.labels(method, route)

            def record(seconds: float) -> None:
                count.inc()
                duration.observe(seconds)

            self._http[key] = record
        return record

    def job_settled(self, job: Job, state: Status, *, finished_at: float | None = None) -> None:
        """``job`` was just settled ``state`` (COMPLETED keeps its price: it is charged)."""
        preset = job.spec.preset or UNKNOWN_PRESET
        self.jobs.labels(state.value, preset).inc()
        if job.started_at is None:
            return
        self.queue_wait.labels(preset).observe(max(0.0, job.started_at - job.created_at))
        if state is Status.COMPLETED:
            end = finished_at or job.finished_at or time.time()
            self.run_duration.labels(preset).observe(max(0.0, end - job.started_at))
            self.credits.labels(preset).inc(from_micros(job.price_micros))
