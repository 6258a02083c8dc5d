"""The dispatcher's view of the runner's pools: one queue per pool, so that a long video never
keeps an image edit with its own worker waiting. A queue knows the models whose jobs it claims,
which of its jobs hold a slot, the slots held for sync jobs about to be inserted, and whether
its last claim left jobs behind."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kinema.runners.base import Pool


@dataclass
class Queue:
    pool: Pool
    models: tuple[str, ...]
    """Model slugs whose jobs this pool runs."""
    running: set[str] = field(default_factory=set)
    """Jobs holding one of its slots: from launch until the runner returns."""
    reserved: int = 0
    """Slots held for sync jobs about to be inserted (``Dispatcher.offer_slot``)."""
    drained: bool = False
    """Its last claim took fewer jobs than it had slots: nothing of its models waits."""

    @property
    def free(self) -> int:
        return self.pool.capacity - len(self.running) - self.reserved


class Slots:
    def __init__(self, pools: Sequence[Pool], models: Mapping[str, str]) -> None:
        """``models``: model slug → engine task."""
        self.queues = [
            Queue(pool, tuple(sorted(m for m, task in models.items() if task in pool.tasks)))
            for pool in pools
        ]
        self._by_model = {m: q for q in reversed(self.queues) for m in q.models}

    def for_model(self, model: str) -> Queue | None:
        return self._by_model.get(model)

    def holding(self, job_id: str) -> Queue | None:
        return next((q for q in self.queues if job_id in q.running), None)

    def running(self, job_id: str) -> bool:
        return self.holding(job_id) is not None

    @property
    def reserved(self) -> int:
        return sum(q.reserved for q in self.queues)
