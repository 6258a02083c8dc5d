"""Idempotency-Key on the sync path: the same key and body attach to the same request (waiting
for it, or answering its output again, never charging twice); another body is a 409."""

from __future__ import annotations

import asyncio
import base64

import pytest

from tests.conftest import Ctx, ledger_and_balance, png

pytestmark = pytest.mark.integration

B64 = base64.b64encode(png()).decode()
IMAGE = "/v1/kling-3-image2image"


async def test_a_repeated_sync_request_answers_the_same_output_charged_once(ctx: Ctx) -> None:
    key = await ctx.key(credits=1)
    h = {"x-api-key": key, "Idempotency-Key": "retry-1"}
    body = {"image_url": B64, "prompt": "x"}
    first = await ctx.client.post(IMAGE, json=body, headers=h)
    again = await ctx.client.post(IMAGE, json=body, headers=h)
    assert first.status_code == again.status_code == 200
    assert first.content == again.content and first.headers["content-type"] == "image/png"
    assert first.headers["x-request-id"] == again.headers["x-request-id"]
    assert first.headers["x-idempotent-replay"] == "false"
    assert again.headers["x-idempotent-replay"] == "true"
    assert again.headers["idempotency-key"] == "retry-1"
    record = await ctx.svc.keys.authenticate(key)
    assert await ledger_and_balance(ctx.svc, record.id) == (965_000, 965_000)  # one charge
    # The same key on the async path names the same request too.
    r = await ctx.client.post("/v2/kling-3-image2image", json=body, headers=h)
    assert r.json()["request_id"] == first.headers["x-request-id"]


async def test_concurrent_repeats_share_one_generation(ctx: Ctx) -> None:
    key = await ctx.key(credits=1)
    h = {"x-api-key": key, "Idempotency-Key": "burst"}
    body = {"image_url": B64, "prompt": "y"}
    answers = await asyncio.gather(
        *(ctx.client.post(IMAGE, json=body, headers=h) for _ in range(4))
    )
    assert {a.status_code for a in answers} == {200}
    assert len({a.headers["x-request-id"] for a in answers}) == 1
    record = await ctx.svc.keys.authenticate(key)
    assert await ledger_and_balance(ctx.svc, record.id) == (965_000, 965_000)


async def test_the_same_key_with_another_body_is_a_409_and_a_bad_key_a_400(ctx: Ctx) -> None:
    key = await ctx.key(credits=1)
    h = {"x-api-key": key, "Idempotency-Key": "k"}
    assert (
        await ctx.client.post(IMAGE, json={"image_url": B64, "prompt": "a"}, headers=h)
    ).status_code == 200
    r = await ctx.client.post(IMAGE, json={"image_url": B64, "prompt": "b"}, headers=h)
    assert r.status_code == 409, r.text
    long = {"x-api-key": key, "Idempotency-Key": "x" * 201}
    r = await ctx.client.post(IMAGE, json={"image_url": B64, "prompt": "a"}, headers=long)
    assert r.status_code == 400
    assert r.json()["error"] == "Idempotency-Key: must be 1 to 200 characters (got 201)"
