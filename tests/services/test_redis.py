"""Rate limits shared by API replicas through Redis."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest

from kinema.billing.ratelimit import RateLimiter
from kinema.errors import RateLimited
from kinema.runners.local import LocalRunner
from tests.conftest import app_context, make_settings, png

pytestmark = pytest.mark.services


async def test_limiter_on_redis_counts_across_instances(redis_url: str) -> None:
    import redis.asyncio as redis

    prefix = f"kinema-test-{uuid.uuid4().hex[:8]}"
    a = RateLimiter("3/minute", redis_url, key_prefix=prefix)
    b = RateLimiter("3/minute", redis_url, key_prefix=prefix)
    assert (await a.hit("k", None)).remaining == 2
    assert (await b.hit("k", None)).remaining == 1  # the other replica sees the same window
    await a.close()
    await b.close()
    client = redis.from_url(redis_url)
    try:
        assert await client.keys(f"{prefix}*")
        await client.delete(*await client.keys(f"{prefix}*"))
    finally:
        await client.aclose()


@pytest.mark.parametrize("rule", ["3/hour;1/minute", "1/minute;3/hour"])
async def test_limiter_on_redis_counts_a_request_only_when_every_window_admits_it(
    redis_url: str, rule: str
) -> None:
    import redis.asyncio as redis

    prefix = f"kinema-test-{uuid.uuid4().hex[:8]}"
    limiter = RateLimiter(rule, redis_url, key_prefix=prefix)
    try:
        await limiter.hit("k", None)
        for _ in range(5):
            with pytest.raises(RateLimited):
                await limiter.hit("k", None)
        hour = rule.split(";").index("3/hour")
        assert (await limiter.remaining("k", None))[hour] == 2
    finally:
        await limiter.close()
        client = redis.from_url(redis_url)
        try:
            keys = await client.keys(f"{prefix}*")
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


async def test_two_replicas_share_one_limit(
    redis_url: str, tmp_path: Path, static_runner: LocalRunner
) -> None:
    import redis.asyncio as redis

    prefix = f"kinema-test-{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        tmp_path,
        rate_limit={"default": "2/minute", "storage_url": redis_url, "key_prefix": prefix},
    )
    body = {"image_url": base64.b64encode(png()).decode(), "prompt": "x"}
    async with app_context(settings, static_runner) as one:
        key = await one.key()
        h = {"x-api-key": key}
        assert (
            await one.client.post("/v2/kling-3-image2image", json=body, headers=h)
        ).status_code == 200
        async with app_context(settings, static_runner) as two:
            assert (
                await two.client.post("/v2/kling-3-image2image", json=body, headers=h)
            ).status_code == 200
            r = await two.client.post("/v2/kling-3-image2image", json=body, headers=h)
            assert r.status_code == 429
            assert r.headers["x-rate-limit-remaining"] == "0" and "retry-after" in r.headers
    client = redis.from_url(redis_url)
    try:
        await client.delete(*await client.keys(f"{prefix}*"))
    finally:
        await client.aclose()
