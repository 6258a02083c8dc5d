"""The storage contract, held by both backends: the local directory and an S3 bucket on a real
S3-compatible server (SeaweedFS, started by the tests). The same tests run against each; the S3
ones also check what only S3 does (presigned URLs, multipart uploads, a store that is down).

Each S3 test keeps to a prefix of its own in the session's bucket, emptied afterwards."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import obstore
import pytest

from kinema.errors import NotFound, StorageUnavailable
from kinema.settings import Settings
from kinema.storage.base import Storage
from kinema.storage.blobs import Blobs, InputMissing, open_blobs
from kinema.storage.factory import storage_target, worker_environment
from kinema.storage.s3 import MULTIPART_THRESHOLD, S3Location, S3Storage
from tests.conftest import Ctx, app_context, make_settings, png
from tests.fixtures.seaweed import ACCESS_KEY_ID, BUCKET, REGION, SECRET_ACCESS_KEY, SeaweedFS

BACKENDS = [
    pytest.param("local", marks=pytest.mark.unit),
    pytest.param("s3", marks=pytest.mark.services),
]


@dataclass
class Backend:
    name: str
    settings: Settings
    ctx: Ctx
    """An API-only app on this storage (the local backend's downloads are its routes)."""

    @property
    def storage(self) -> Storage:
        return self.ctx.svc.storage

    async def download(self, url: str) -> httpx.Response:
        if self.name == "local":
            return await self.ctx.client.get(url)
        async with httpx.AsyncClient() as client:  # straight from the bucket, as a client does
            return await client.get(url)


def _settings(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    over: dict[str, object] = {"engines": {"workers": 0}}
    if name == "s3":
        seaweed: SeaweedFS = request.getfixturevalue("seaweed")
        over["storage"] = seaweed.storage_settings()
    else:
        over["storage"] = {"path": tmp_path / "files"}
    return make_settings(tmp_path, **over)  # type: ignore[arg-type]


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    settings = _settings(request.param, request, tmp_path)
    async with app_context(settings, None) as ctx:
        yield Backend(request.param, settings, ctx)
    if request.param == "s3":
        _empty(settings)


def _empty(settings: Settings) -> None:
    """Remove the test's objects (its whole prefix)."""
    location = S3Location.from_settings(settings.storage)
    listed = obstore.list(location.store, prefix=location.prefix).collect()
    if listed:
        obstore.delete(location.store, [meta["path"] for meta in listed])


def _objects(settings: Settings) -> list[str]:
    """Every object under the test's prefix, as keys."""
    location = S3Location.from_settings(settings.storage)
    listed = obstore.list(location.store, prefix=location.prefix).collect()
    return sorted(meta["path"].removeprefix(location.prefix + "/") for meta in listed)


# The contract ---------------------------------------------------------------------------------


async def test_objects_are_stored_read_back_and_reported(backend: Backend, tmp_path: Path) -> None:
    storage = backend.storage
    await storage.put_bytes("inputs/j1/00-image", b"in", "application/octet-stream")
    src = tmp_path / "output.png"
    src.write_bytes(b"png")
    await storage.put_file("outputs/j1/output.png", src, "image/png")
    assert not src.exists()  # consumed
    assert await storage.get_bytes("inputs/j1/00-image") == b"in"
    assert await storage.get_bytes("outputs/j1/output.png") == b"png"
    assert await storage.exists("outputs/j1/output.png")
    assert not await storage.exists("outputs/j1/other.png")
    await storage.put_bytes("inputs/j1/00-image", b"again", "application/octet-stream")
    assert await storage.get_bytes("inputs/j1/00-image") == b"again"  # overwritten whole


async def test_a_missing_object_is_not_found_without_naming_it(backend: Backend) -> None:
    with pytest.raises(NotFound) as caught:
        await backend.storage.get_bytes("outputs/nope/output.png")
    assert caught.value.message == "the file is not stored (it may have expired)"
    with pytest.raises(NotFound):
        await backend.storage.get_bytes("../escape")


async def test_delete_prefix_removes_one_folder_and_nothing_beside_it(backend: Backend) -> None:
    storage = backend.storage
    for key in ("outputs/j1/output.mp4", "outputs/j1/poster.png", "outputs/j10/output.mp4"):
        await storage.put_bytes(key, b"x", "application/octet-stream")
    await storage.delete_prefix("outputs/j1")
    assert not await storage.exists("outputs/j1/output.mp4")
    assert not await storage.exists("outputs/j1/poster.png")
    assert await storage.exists("outputs/j10/output.mp4")  # a longer name is another folder
    await storage.delete_prefix("outputs/j1")  # nothing left: not an error
    await storage.delete_prefix("outputs/never")
    if backend.name == "s3":
        assert _objects(backend.settings) == ["outputs/j10/output.mp4"]


async def test_a_download_url_serves_the_object_until_it_expires(backend: Backend) -> None:
    storage = backend.storage
    await storage.put_bytes("outputs/j2/output.png", png(), "image/png")
    url = storage.url("outputs/j2/output.png", base_url="http://kinema.test", ttl_s=1)
    if backend.name == "s3":  # presigned: straight from the bucket, signed with the settings' key
        assert url.startswith(f"{backend.settings.storage.endpoint_url}/{BUCKET}/")
        assert f"X-Amz-Credential={ACCESS_KEY_ID}" in url and "X-Amz-Expires=1&" in url
    r = await backend.download(url)
    assert r.status_code == 200 and r.content == png()
    assert r.headers["content-type"] == "image/png"
    await asyncio.sleep(2.1)  # both check expiry at a one-second resolution
    refused = await backend.download(url)
    assert refused.status_code == 403
    assert png() not in refused.content


async def test_a_large_file_round_trips_byte_identical(backend: Backend, tmp_path: Path) -> None:
    size = MULTIPART_THRESHOLD + 4 * 1024 * 1024 + 7  # two parts, the last one odd
    data = os.urandom(size)
    src = tmp_path / "output.mp4"
    src.write_bytes(data)
    await backend.storage.put_file("outputs/j3/output.mp4", src, "video/mp4")
    assert await backend.storage.get_bytes("outputs/j3/output.mp4") == data
    if backend.name == "s3":  # S3 names a multipart object's ETag "<hash>-<parts>"
        location = S3Location.from_settings(backend.settings.storage)
        meta = obstore.head(location.store, location.path("outputs/j3/output.mp4"))
        assert meta["size"] == size and (meta["e_tag"] or "").strip('"').endswith("-2")


# A worker's view of the same storage ---------------------------------------------------------


@pytest.fixture
def worker_env(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment a worker process gets: its parent's (here: none of the AWS variables)
    plus :func:`worker_environment` — the credentials travel nowhere else."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in worker_environment(backend.settings).items():
        monkeypatch.setenv(name, value)


async def test_a_worker_reads_inputs_and_stores_outputs_by_the_same_keys(
    backend: Backend, worker_env: None
) -> None:
    target = storage_target(backend.settings)
    assert SECRET_ACCESS_KEY not in target.model_dump_json()  # the command line holds no secret
    blobs: Blobs = open_blobs(target)
    await backend.storage.put_bytes("inputs/j4/00-image", b"in", "application/octet-stream")

    def work() -> None:  # a worker blocks; off the loop, as in its own process
        with blobs.open("inputs/j4/00-image") as stream:
            assert stream.read() == b"in"
        with pytest.raises(InputMissing):
            blobs.open("inputs/j4/01-missing")
        scratch = blobs.scratch(".mp4")
        scratch.write_bytes(b"mp4" * 1000)
        blobs.put_file("outputs/j4/output.mp4", scratch)
        assert not scratch.exists()
        blobs.put_bytes("outputs/j4/output.png", b"png")

    await asyncio.to_thread(work)
    assert await backend.storage.get_bytes("outputs/j4/output.mp4") == b"mp4" * 1000
    assert await backend.storage.get_bytes("outputs/j4/output.png") == b"png"
    if backend.name == "s3":
        url = backend.storage.url("outputs/j4/output.mp4", base_url="", ttl_s=60)
        assert (await backend.download(url)).headers["content-type"] == "video/mp4"


# What only S3 does --------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.services
async def test_an_unreachable_store_is_a_503_naming_it_within_seconds() -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    location = S3Location(
        "kinema-down",
        endpoint_url=endpoint,
        region=REGION,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
    )
    storage = S3Storage(location)
    began = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        await storage.get_bytes("outputs/j5/output.png")
    assert time.monotonic() - began < 15  # a few quick retries, not the library's 3 minutes
    assert caught.value.status_code == 503
    assert caught.value.message == (
        f"cannot read an object from S3 bucket 'kinema-down' at {endpoint}: "
        "connection refused (is the server running?)"
    )
    assert isinstance(caught.value.__cause__, obstore.exceptions.BaseError)  # raise … from
    with pytest.raises(StorageUnavailable):
        await storage.delete_prefix("outputs/j5")
    with pytest.raises(StorageUnavailable, match="cannot read an input from"):
        open_blobs(storage_target(_s3_settings(endpoint))).open("inputs/j5/00-image")


def _s3_settings(endpoint: str, **storage: object) -> Settings:
    return Settings(
        storage={
            "backend": "s3",
            "bucket": "kinema-down",
            "endpoint_url": endpoint,
            "region": REGION,
            **storage,
        }
    )


@pytest.mark.services
async def test_wrong_credentials_and_a_missing_bucket_are_503s_that_say_so(
    seaweed: SeaweedFS,
) -> None:
    wrong = S3Storage(
        S3Location(
            BUCKET,
            endpoint_url=seaweed.endpoint_url,
            region=REGION,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key="not-the-secret",
        )
    )
    with pytest.raises(StorageUnavailable) as caught:
        await wrong.put_bytes("inputs/j6/00-image", b"x", "application/octet-stream")
    assert caught.value.message == (
        f"S3 bucket {BUCKET!r} at {seaweed.endpoint_url} refused to store an object in: "
        "check the storage credentials and the policy"
    )
    missing = S3Storage(
        S3Location(
            "kinema-no-such-bucket",
            endpoint_url=seaweed.endpoint_url,
            region=REGION,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
        )
    )
    with pytest.raises(StorageUnavailable, match=r"'kinema-no-such-bucket' .* does not exist"):
        await missing.delete_prefix("outputs/j6")


@pytest.mark.services
async def test_a_submit_while_the_store_is_down_is_a_503_and_charges_nothing(
    tmp_path: Path,
) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    settings = make_settings(
        tmp_path,
        engines={"workers": 0},
        storage={
            "backend": "s3",
            "bucket": "kinema-down",
            "endpoint_url": endpoint,
            "access_key_id": ACCESS_KEY_ID,
            "secret_access_key": SECRET_ACCESS_KEY,
        },
    )
    async with app_context(settings, None) as c:
        key = await c.key(credits=1.0)
        body = {"image_url": base64.b64encode(png()).decode(), "prompt": "x"}
        r = await c.client.post("/v2/kling-3-image2image", json=body, headers={"x-api-key": key})
        assert r.status_code == 503
        assert r.json() == {
            "error": f"cannot store an object in S3 bucket 'kinema-down' at {endpoint}: "
            "connection refused (is the server running?)"
        }
        credits = await c.client.get("/v1/get-user-credits", headers={"x-api-key": key})
        assert float(credits.json()["credits"]) == 1.0


# A storage failing under a charged request ----------------------------------------------------


@pytest.mark.integration
async def test_a_v1_output_that_cannot_be_read_back_is_not_an_answer_to_retry(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generation ran and was charged: a 503 would tell the client to send it again (and pay
    twice). The answer is a 500 that names the request, whose result stays readable."""
    storage = ctx.svc.storage

    async def down(key: str) -> bytes:
        raise StorageUnavailable("cannot read an object from S3 bucket 'media': timed out")

    monkeypatch.setattr(storage, "get_bytes", down)
    key = await ctx.key()
    body = {"image_url": base64.b64encode(png()).decode(), "prompt": "x"}
    r = await ctx.client.post("/v1/kling-3-image2image", json=body, headers={"x-api-key": key})
    assert r.status_code == 500
    rid = r.headers["x-request-id"]
    assert r.json() == {
        "error": "the generation completed but its output could not be read: cannot read an "
        "object from S3 bucket 'media': timed out; "
        f"read it with GET /v2/requests/{rid} once the storage is back"
    }
    monkeypatch.undo()
    result = await ctx.client.get(f"/v2/requests/{rid}", headers={"x-api-key": key})
    assert result.json()["status"] == "COMPLETED"
    assert (await ctx.client.get(result.json()["output"])).content[:8] == b"\x89PNG\r\n\x1a\n"
