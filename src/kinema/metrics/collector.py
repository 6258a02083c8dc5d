"""What is read at scrape time rather than recorded: jobs by state and queue depth per pool (one
grouped count of the job store, made by :meth:`StateCollector.refresh` just before the
registry is rendered), and worker restarts per pool (counted by the runner's own pools)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Protocol, runtime_checkable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kinema.jobs.models import ACTIVE, Status
from kinema.metrics.repository import active_counts
from kinema.runners.base import Pool, Runner
from kinema.store.db import Database

log = logging.getLogger(__name__)

STORE_TIMEOUT_S = 2.0
"""The longest a scrape waits for the job store; past it, the store's gauges are left out."""


@runtime_checkable
class CountsRestarts(Protocol):
    """A pool that counts the times it brought a lost or killed worker back (the local one)."""

    @property
    def name(self) -> str: ...

    @property
    def restarts(self) -> int: ...


class StateCollector(Collector):
    """``kinema_jobs_current``, ``kinema_queue_depth`` and ``kinema_worker_restarts_total``."""

    def __init__(self, runner: Runner | None, models: Mapping[str, str]) -> None:
        """``models``: model slug → engine task. With no runner (an API-only replica) a queue
        is named by its task."""
        self._runner = runner
        self._pool_of: dict[str, str] = {}
        for model, task in models.items():
            pools = [p.name for p in runner.pools if task in p.tasks] if runner else [task]
            self._pool_of[model] = pools[0] if pools else task
        self._pools = sorted({*self._pool_of.values(), *(p.name for p in self._all_pools())})
        self._counts: dict[tuple[str, str], int] | None = None

    def _all_pools(self) -> list[Pool]:
        return list(self._runner.pools) if self._runner is not None else []

    async def refresh(self, db: Database) -> None:
        """Read the store's counts for the next :meth:`collect`; a store that does not answer
        within :data:`STORE_TIMEOUT_S` leaves its gauges out of this scrape."""
        try:
            self._counts = await asyncio.wait_for(db.read(active_counts), STORE_TIMEOUT_S)
        except Exception as exc:  # a scrape never fails on the store: it reports what it has
            log.warning("metrics: the job store did not answer (%s)", type(exc).__name__)
            self._counts = None

    def collect(self) -> Iterator[Metric]:
        if self._counts is not None:
            yield from self._store_families(self._counts)
        restarts = CounterMetricFamily(
            "kinema_worker_restarts",
            "Times a pool's lost or killed worker was brought back, by pool.",
            labels=["pool"],
        )
        for pool in self._all_pools():
            if isinstance(pool, CountsRestarts):
                restarts.add_metric([pool.name], pool.restarts)
        yield restarts

    def _store_families(self, counts: Mapping[tuple[str, str], int]) -> Iterator[Metric]:
        current = GaugeMetricFamily(
            "kinema_jobs_current",
            "Unfinished jobs in the store (every replica's), by state.",
            labels=["state"],
        )
        for state in ACTIVE:
            current.add_metric([state], sum(n for (s, _), n in counts.items() if s == state))
        yield current
        depth = dict.fromkeys(self._pools, 0)
        for (state, model), n in counts.items():
            if state == Status.QUEUED.value:
                pool = self._pool_of.get(model, model)
                depth[pool] = depth.get(pool, 0) + n
        queue = GaugeMetricFamily(
            "kinema_queue_depth",
            "Jobs waiting for a worker (every replica's), by the pool that runs them.",
            labels=["pool"],
        )
        for pool, n in sorted(depth.items()):
            queue.add_metric([pool], n)
        yield queue
