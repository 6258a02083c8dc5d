"""Per-key rate limits: one rule per key (the key's own, else the default), enforced with the
``limits`` library's moving window over memory (one process) or Redis (shared by replicas).

A rule may have several windows (``5/second;20/minute``). A request is admitted only when every
window has room, and only an admitted request is counted, in every window: the windows are all
tested before any is hit, so the order they are written in does not matter (hitting them one by
one counted a request refused by the second window against the first). Test-then-hit runs under
a per-key lock, so requests of one process never interleave between the two; another replica's
request can still take the last slot in between, and then the windows hit before it stay counted
(each hit is atomic, so no window ever admits more than its limit)."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from limits import RateLimitItem, parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from kinema.errors import InvalidRequest, RateLimited


@dataclass(frozen=True)
class RateState:
    remaining: int
    reset_at: float
    """UNIX time at which the tightest window frees a slot."""

    def headers(self) -> dict[str, str]:
        reset = datetime.fromtimestamp(self.reset_at, tz=UTC)
        return {
            "x-rate-limit-remaining": str(self.remaining),
            "x-rate-limit-reset-at-utc": reset.isoformat(timespec="seconds").replace("+00:00", "Z"),
        }


@lru_cache(maxsize=256)
def parse_rule(rule: str) -> tuple[RateLimitItem, ...]:
    try:
        items = tuple(parse_many(rule))
    except ValueError as exc:
        raise InvalidRequest(f"invalid rate limit {rule!r}: {exc}") from exc
    if not items:
        raise InvalidRequest(f"invalid rate limit {rule!r}")
    return items


class RateLimiter:
    def __init__(self, default_rule: str, storage_url: str, *, key_prefix: str = "kinema") -> None:
        parse_rule(default_rule)
        self._default = default_rule
        url = storage_url if storage_url.startswith("async+") else "async+" + storage_url
        # Redis through redis-py (the `redis` extra), not the library's default coredis.
        options: dict[str, str] = (
            {}
            if url.startswith("async+memory")
            else {"key_prefix": key_prefix, "implementation": "redispy"}
        )
        self._storage = storage_from_string(url, **options)
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._locks: dict[str, asyncio.Lock] = {}

    async def hit(self, key_id: str, rule: str | None) -> RateState:
        """Count one request; raise :class:`RateLimited` (with Retry-After) when over the limit."""
        items = parse_rule(rule or self._default)
        if len(items) == 1:  # one window: its hit is the test (atomic in every storage)
            if not await self._limiter.hit(items[0], key_id):
                raise await self._refusal(items, items[0], key_id)
            return await self._state(items, key_id)
        async with self._lock(key_id):
            await self._test(items, key_id)
            for item in items:
                if not await self._limiter.hit(item, key_id):  # another replica was faster
                    raise await self._refusal(items, item, key_id)
        return await self._state(items, key_id)

    async def check(self, key_id: str, rule: str | None) -> None:
        """Raise :class:`RateLimited` when one more request would be over the limit, without
        counting one (:meth:`hit` counts it later)."""
        await self._test(parse_rule(rule or self._default), key_id)

    async def remaining(self, key_id: str, rule: str | None) -> list[int]:
        """What each window of the key's rule has left, in the rule's order."""
        items = parse_rule(rule or self._default)
        return [(await self._limiter.get_window_stats(i, key_id)).remaining for i in items]

    async def _test(self, items: tuple[RateLimitItem, ...], key_id: str) -> None:
        for item in items:
            if not await self._limiter.test(item, key_id):
                raise await self._refusal(items, item, key_id)

    def _lock(self, key_id: str) -> asyncio.Lock:
        # One per key seen by this process (keys are authenticated first, so bounded by them).
        return self._locks.setdefault(key_id, asyncio.Lock())

    async def _refusal(
        self, items: tuple[RateLimitItem, ...], item: RateLimitItem, key_id: str
    ) -> RateLimited:
        state = await self._state(items, key_id)
        retry = max(1, math.ceil(state.reset_at - time.time()))
        error = RateLimited(f"rate limit exceeded ({item}); retry in {retry} s", retry_after=retry)
        error.headers = state.headers()
        return error

    async def close(self) -> None:
        """Close the Redis connection pool, if any (limits offers no public close)."""
        bridge = getattr(self._storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()

    async def _state(self, items: tuple[RateLimitItem, ...], key_id: str) -> RateState:
        stats = [await self._limiter.get_window_stats(item, key_id) for item in items]
        tightest = min(stats, key=lambda s: (s.remaining, s.reset_time))
        return RateState(remaining=max(0, tightest.remaining), reset_at=tightest.reset_time)
