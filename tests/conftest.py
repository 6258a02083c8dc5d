"""Shared fixtures: settings on a temp data dir, a worker pool started once per session, an app
per test (its own SQLite database), a loopback image server.

Workers read and write the storage themselves, so every app a shared worker serves uses the
same storage directory (:data:`STORAGE`); keys are unique per job, so tests never collide."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from kinema.api.app import create_app
from kinema.api.deps import Services
from kinema.engines.registry import LoadOptions
from kinema.runners.local import LocalRunner, RunLimits
from kinema.runners.protocol import WorkerConfig
from kinema.settings import Settings
from kinema.storage.target import LocalTarget

PLUGINS = ["tests.fixtures.engines"]
# pytest imports this file as ``conftest`` and the tests import it as ``tests.conftest``: the
# directory is made once and found again through the environment.
STORAGE = Path(
    os.environ.setdefault("_TESTS_STORAGE_DIR", tempfile.mkdtemp(prefix="kinema-test-storage-"))
)
"""The storage directory of every test app (and so of the workers they share)."""


@pytest.fixture(scope="session", autouse=True)
def _storage_removed() -> Iterator[None]:
    yield
    shutil.rmtree(STORAGE, ignore_errors=True)


DATABASE_ENV = "_TESTS_DATABASE_URL"
"""Names the job store of the running test when it is not the embedded default (set by the
integration suite's PostgreSQL run; through the environment, like :data:`STORAGE`, so both
imports of this file see it)."""


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": data_dir,
        "secret_key": "test-secret-key",
        "engines": {"preset": "static", "plugins": PLUGINS},
        "storage": {"path": STORAGE},
        "fetch": {"allow_hosts": ["127.0.0.1"]},
        "jobs": {"poll_interval_s": 0.05, "lease_s": 5},
        "rate_limit": {"default": "1000/minute"},
        "server": {"sync_timeout_s": 60},
    }
    if DATABASE_ENV in os.environ:
        base["database"] = {"url": os.environ[DATABASE_ENV]}
    for key, value in overrides.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
    return Settings(**base)


def png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def worker_config(presets: list[str], models_dir: Path, **kwargs: Any) -> WorkerConfig:
    return WorkerConfig(
        presets=tuple(presets),
        load_options=LoadOptions(models_dir=models_dir),
        plugins=tuple(PLUGINS),
        storage=LocalTarget(root=str(STORAGE)),
        **kwargs,
    )


async def start_runner(
    presets: list[str], models_dir: Path, *, limits: RunLimits | None = None, **kwargs: Any
) -> LocalRunner:
    runner = LocalRunner.single(worker_config(presets, models_dir), limits=limits, **kwargs)
    await runner.start()
    return runner


def runner_fixture(*presets: str) -> Any:
    """A module-scoped fixture: one worker process loaded with ``presets`` (one per task),
    closed after the module."""

    @pytest.fixture(scope="module")
    async def runner(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalRunner]:
        started = await start_runner(list(presets), tmp_path_factory.mktemp("models"))
        yield started
        await started.close()

    return runner


@pytest.fixture(scope="session")
async def static_runner(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalRunner]:
    runner = await start_runner(["static-video", "static-image"], tmp_path_factory.mktemp("models"))
    yield runner
    await runner.close()


@dataclass
class Ctx:
    app: FastAPI
    client: httpx.AsyncClient
    svc: Services

    async def key(self, credits: float = 100.0, **kwargs: Any) -> str:
        return (await self.svc.keys.create(credits=credits, **kwargs)).key


@pytest.fixture
async def ctx(tmp_path: Path, static_runner: LocalRunner) -> AsyncIterator[Ctx]:
    async with app_context(make_settings(tmp_path), static_runner) as c:
        yield c


class app_context:
    """An app with its lifespan running and an in-memory HTTP client bound to it."""

    def __init__(self, settings: Settings, runner: LocalRunner | None) -> None:
        self.app = create_app(settings, runner=runner)
        self._lifespan = self.app.router.lifespan_context(self.app)
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Ctx:
        await self._lifespan.__aenter__()
        transport = httpx.ASGITransport(app=self.app)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://kinema.test")
        return Ctx(self.app, self._client, self.app.state.services)

    async def __aexit__(self, *exc: object) -> None:
        assert self._client is not None
        await self._client.aclose()
        await self._lifespan.__aexit__(None, None, None)


class ImageServer:
    """Serves registered bytes on 127.0.0.1 (inputs reach it through the allow-list)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        files = self.files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                entry = files.get(self.path)
                if entry is None:
                    self.send_error(404)
                    return
                data, ctype = entry
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, path: str, data: bytes, ctype: str = "image/png") -> str:
        self.files[path] = (data, ctype)
        return f"http://127.0.0.1:{self.server.server_port}{path}"


@pytest.fixture(scope="session")
def images() -> Iterator[ImageServer]:
    server = ImageServer()
    server.thread.start()
    server.add("/start.png", png(640, 480, (250, 10, 10)))
    server.add("/end.png", png(640, 480, (10, 10, 250)))
    yield server
    server.server.shutdown()
    server.server.server_close()


async def ledger_and_balance(svc: Services, key_id: str) -> tuple[int, int]:
    """(sum of the key's ledger rows, its balance): equal whenever the books are right."""
    from kinema.billing import repository as billing

    return await svc.db.read(
        lambda conn: (billing.ledger_sum(conn, key_id), billing.balance(conn, key_id))
    )


async def wait_status(
    client: httpx.AsyncClient, key: str, request_id: str, *statuses: str, timeout: float = 30
) -> httpx.Response:
    """Poll the status URL until the status is one of ``statuses``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await client.get(f"/v2/requests/{request_id}/status", headers={"x-api-key": key})
        status = r.json().get("status")
        if status in statuses:
            return r
        if status in ("COMPLETED", "FAILED"):
            raise AssertionError(f"expected {statuses}, the request ended {r.json()}")
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"status stuck at {r.json()}")
        await asyncio.sleep(0.05)
