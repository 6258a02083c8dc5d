"""Keys, prices, rate-limit rules, signed URLs: the pure parts of billing and storage."""

from __future__ import annotations

import asyncio
import time

import pytest

from kinema.billing.keys import KEY_PREFIX, display_prefix, generate_key, hash_key, to_micros
from kinema.billing.pricing import image_price, video_price
from kinema.billing.ratelimit import RateLimiter, parse_rule
from kinema.errors import InvalidRequest, RateLimited
from kinema.settings import BillingSettings
from kinema.storage.signing import sign, signed_url, verify

pytestmark = pytest.mark.unit


def test_keys_are_prefixed_high_entropy_and_hashed() -> None:
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    key = keys.pop()
    assert key.startswith(KEY_PREFIX) and len(key) == len(KEY_PREFIX) + 43
    h = hash_key(key, b"secret")
    assert len(h) == 64 and key not in h
    assert h == hash_key(key, b"secret") != hash_key(key, b"other")
    assert display_prefix(key) == key[:12]


def test_prices() -> None:
    billing = BillingSettings()
    assert image_price(billing, resolution="1K") == 35_000
    assert image_price(billing, resolution="2K") == 70_000
    assert video_price(billing, duration_s=5, audio=False, voice=False) == to_micros(0.42)
    assert video_price(billing, duration_s=5, audio=True, voice=False) == to_micros(0.63)
    assert video_price(billing, duration_s=10, audio=True, voice=True) == to_micros(1.54)
    with pytest.raises(InvalidRequest, match="resolution"):
        image_price(BillingSettings(image_price={"1K": 1.0}), resolution="2K")


def test_rate_rules_parse_and_reject() -> None:
    assert len(parse_rule("10/second;600/hour")) == 2
    with pytest.raises(InvalidRequest, match="invalid rate limit"):
        parse_rule("lots")


async def test_rate_limiter_counts_per_key_and_reports_reset() -> None:
    limiter = RateLimiter("3/minute", "memory://")
    states = [await limiter.hit("a", None) for _ in range(3)]
    assert [s.remaining for s in states] == [2, 1, 0]
    assert time.time() < states[-1].reset_at <= time.time() + 61
    with pytest.raises(RateLimited) as err:
        await limiter.hit("a", None)
    assert 1 <= err.value.retry_after <= 60
    assert err.value.headers["x-rate-limit-remaining"] == "0"
    assert (await limiter.hit("b", None)).remaining == 2  # other keys are separate
    assert (await limiter.hit("c", "1/minute")).remaining == 0  # a key's own rule wins


def test_signed_urls_verify_and_expire() -> None:
    url = signed_url(b"s", "http://h/", "outputs/j/output.png", 60)
    assert url.startswith("http://h/v1/files/outputs/j/output.png?expires=")
    exp = int(time.time()) + 60
    sig = sign(b"s", "k", exp)
    assert verify(b"s", "k", exp, sig)
    assert not verify(b"s", "k2", exp, sig)
    assert not verify(b"other", "k", exp, sig)
    assert not verify(b"s", "k", exp, sig, now=exp + 1)
    assert not verify(b"s", "k", exp, "é" + sig[1:])  # refused, not a TypeError


def test_a_signed_url_lives_at_least_its_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    """Made late in a second, a URL keeps its whole ttl (expires is rounded up, not down)."""
    from urllib.parse import parse_qs, urlsplit

    monkeypatch.setattr(time, "time", lambda: 1000.99)
    query = parse_qs(urlsplit(signed_url(b"s", "http://h", "k", 1)).query)
    expires, signature = int(query["expires"][0]), query["signature"][0]
    assert expires == 1002
    assert verify(b"s", "k", expires, signature, now=1000.99 + 1.0)
    assert not verify(b"s", "k", expires, signature, now=1002.01)


@pytest.mark.parametrize("rule", ["3/hour;1/minute", "1/minute;3/hour"])
async def test_rate_rule_order_does_not_matter(rule: str) -> None:
    limiter = RateLimiter(rule, "memory://")
    await limiter.hit("k", None)
    for _ in range(5):
        with pytest.raises(RateLimited, match="1 per 1 minute"):
            await limiter.hit("k", None)
    # Refused by the minute window, so counted in neither: the hour still has 2 left.
    hour = rule.split(";").index("3/hour")
    assert (await limiter.remaining("k", None))[hour] == 2


async def test_concurrent_hits_admit_the_quota_and_count_only_those() -> None:
    limiter = RateLimiter("100/hour;5/minute", "memory://")

    async def one() -> bool:
        try:
            await limiter.hit("k", None)
        except RateLimited:
            return False
        return True

    admitted = await asyncio.gather(*(one() for _ in range(50)))
    assert sum(admitted) == 5
    assert await limiter.remaining("k", None) == [95, 0]
