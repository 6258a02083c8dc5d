"""A whole app on S3 storage (SeaweedFS), its workers started from the settings as
``kinema serve`` starts them: the S3 credentials exist only in the settings, so a worker that
reads its input and writes its output has had them passed through its environment."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import obstore
import pytest

from kinema.jobs.retention import cleanup_once
from kinema.storage.s3 import S3Location
from tests.conftest import STORAGE, Ctx, app_context, make_settings, png, wait_status
from tests.fixtures.seaweed import BUCKET, SeaweedFS

pytestmark = pytest.mark.services
DAY = 86_400


def _objects(location: S3Location) -> list[str]:
    listed = obstore.list(location.store, prefix=location.prefix).collect()
    return sorted(meta["path"].removeprefix(location.prefix + "/") for meta in listed)


async def test_jobs_read_and_write_through_s3_and_retention_deletes_them(
    tmp_path: Path, seaweed: SeaweedFS
) -> None:
    settings = make_settings(tmp_path, storage=seaweed.storage_settings())
    location = S3Location.from_settings(settings.storage)
    async with app_context(settings, None) as c:  # None: the app starts its own workers
        key = await c.key()
        h = {"x-api-key": key}
        image = png(96, 64, (20, 200, 20))

        # v2, async: the API keeps the input in the bucket, the worker reads it from there.
        body = {"image_url": base64.b64encode(image).decode(), "prompt": "x"}
        r = await c.client.post("/v2/kling-3-image2image", json=body, headers=h)
        assert r.status_code == 200, r.text
        rid = r.json()["request_id"]
        await wait_status(c.client, key, rid, "COMPLETED")
        job = await c.svc.jobs.get(rid)
        assert job is not None and job.output_key is not None
        # Its input goes once it is settled (just after the status says COMPLETED).
        await _until(lambda: _objects(location) == [job.output_key])
        assert not (STORAGE / "outputs" / rid).exists()  # nothing on the local disk

        # The result's output is a presigned URL of the object in the bucket.
        result = (await c.client.get(f"/v2/requests/{rid}", headers=h)).json()
        url = result["output"]
        prefix = f"{seaweed.endpoint_url}/{BUCKET}/{location.prefix}/outputs/{rid}/"
        assert url.startswith(prefix) and "X-Amz-Signature=" in url
        assert "X-Amz-Expires=3600&" in url  # storage.url_ttl_s
        async with httpx.AsyncClient() as client:
            download = await client.get(url)
        assert download.status_code == 200
        assert download.content == await c.svc.storage.get_bytes(job.output_key)
        assert download.headers["content-type"] == job.output_content_type

        # v1, sync: the answer is the output's bytes, read back from the bucket.
        video = {"start_image_url": base64.b64encode(image).decode(), "prompt": "x"}
        r = await c.client.post(
            "/v1/kling-3-standard-image2video", json={**video, "duration": "3"}, headers=h
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "video/mp4" and r.content[4:8] == b"ftyp"
        sync_id = r.headers["x-request-id"]
        sync_job = await c.svc.jobs.get(sync_id)
        assert sync_job is not None and sync_job.output_key is not None
        assert await c.svc.storage.get_bytes(sync_job.output_key) == r.content

        # Retention deletes the outputs from the bucket, then the requests (a sync job is
        # settled just after its answer: retention counts from then).
        await _settled(c, sync_id)
        assert await cleanup_once(c.svc.db, c.svc.storage, now=time.time() + 8 * DAY) == 4
        assert _objects(location) == []
        async with httpx.AsyncClient() as client:
            assert (await client.get(url)).status_code == 404


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within 10 s"
        await asyncio.sleep(0.05)


async def _settled(c: Ctx, job_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (job := await c.svc.jobs.get(job_id)) is None or job.output_expires_at is None:
        assert time.monotonic() < deadline, f"job {job_id} not settled: {job}"
        await asyncio.sleep(0.05)
