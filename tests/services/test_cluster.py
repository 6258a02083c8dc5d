"""The cluster layout end to end, as docs/deploy.md brings it up on one machine: two API
replicas (``kinema serve`` processes on loopback ports) sharing PostgreSQL, Redis and an
S3-compatible bucket (SeaweedFS), their jobs run by Ray Serve deployments on a local Ray
cluster.

One test, in phases that build on each other (the layout takes most of its time to come up):
50 async jobs submitted across both replicas and sync requests through each all complete
exactly once with every ledger balanced; a Ray replica killed mid-job ends in a retry that
completes, charged once; a deployment scaled to zero comes back for the next request and
reports its cold start.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from kinema.billing import repository as billing
from kinema.store.db import open_database
from kinema.store.tables import credit_ledger, jobs
from tests.conftest import png
from tests.fixtures.pg import Databases
from tests.fixtures.raycluster import (
    LOOPBACK_ENV,
    REPO,
    RayCluster,
    free_ports,
    replica_pids,
)
from tests.fixtures.seaweed import SeaweedFS

pytestmark = [pytest.mark.services, pytest.mark.ray, pytest.mark.timeout(600)]
B64 = base64.b64encode(png(64, 48)).decode()
IMAGE = "kling-3-image2image"
VIDEO = "kling-3-standard-image2video"
KINEMA = (sys.executable, "-m", "kinema")
START_S = 180.0
"""A replica's start: joining Ray and deploying the pools' applications on a loaded 2-core VM."""


@dataclass
class Replica:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(line for line in lines if "HTTP/1.1" not in line)[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _settings_env(
    pg_url: str, redis_url: str, storage: dict[str, Any], ray: RayCluster, app: str
) -> dict[str, str]:
    env = {
        "KINEMA_SECRET_KEY": "cluster-test-secret",
        "KINEMA_DATABASE__URL": pg_url,
        "KINEMA_RATE_LIMIT__STORAGE_URL": redis_url,
        "KINEMA_RATE_LIMIT__KEY_PREFIX": f"kinema-test-{uuid.uuid4().hex[:8]}",
        "KINEMA_RATE_LIMIT__DEFAULT": "100000/minute",
        "KINEMA_RUNNER__BACKEND": "ray",
        "KINEMA_RUNNER__RAY_ADDRESS": ray.address,
        "KINEMA_RUNNER__APP_NAME": app,
        "KINEMA_RUNNER__DOWNSCALE_DELAY_S": "4",
        "KINEMA_ENGINES__PRESET": "custom",
        "KINEMA_ENGINES__DEVICE": "cpu",  # the test cluster has no GPU for the replicas
        "KINEMA_ENGINES__VIDEO_PRESET": "test-slow-video",
        "KINEMA_ENGINES__IMAGE_PRESET": "static-image",
        "KINEMA_ENGINES__PLUGINS": '["tests.fixtures.engines"]',
        "KINEMA_JOBS__LEASE_S": "6",
        "KINEMA_JOBS__POLL_INTERVAL_S": "0.5",
    }
    for name, value in storage.items():
        env[f"KINEMA_STORAGE__{name.upper()}"] = str(value)
    return env


def _start(name: str, root: Path, env: dict[str, str]) -> Replica:
    port = free_ports(1)[0]
    log = root / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*KINEMA, "--data-dir", str(root / name), "serve", "--port", str(port)],
            env={
                **os.environ,
                **LOOPBACK_ENV,
                **env,
                "PYTHONPATH": str(REPO),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Replica(name, port, proc, log)


async def _ready(replica: Replica, http: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if replica.proc.poll() is not None:
            raise AssertionError(f"{replica.name} exited:\n{replica.tail()}")
        with contextlib.suppress(httpx.TransportError):
            if (await http.get(f"{replica.url}/healthz", timeout=2)).status_code == 200:
                return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{replica.name} did not come up:\n{replica.tail()}")


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    databases = Databases()
    url = await databases.create()
    try:
        yield url
    finally:
        await databases.drop(url)
        await databases.close()


@pytest.fixture
def replicas(
    tmp_path: Path,
    pg_url: str,
    redis_url: str,
    seaweed: SeaweedFS,
    ray_cluster: RayCluster,
) -> Iterator[tuple[Replica, Replica, str]]:
    app = f"kt{uuid.uuid4().hex[:6]}"
    env = _settings_env(pg_url, redis_url, seaweed.storage_settings(), ray_cluster, app)
    # As docs/deploy.md does: the pools' applications deployed once, then the replicas.
    deployed = subprocess.run(
        [*KINEMA, "--data-dir", str(tmp_path / "deploy"), "ray", "deploy"],
        env={**os.environ, **LOOPBACK_ENV, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=START_S,
        check=False,
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    started = [_start(name, tmp_path, env) for name in ("api-a", "api-b")]
    try:
        yield started[0], started[1], app
    finally:
        for replica in started:
            replica.stop()


async def _submit(http: httpx.AsyncClient, replica: Replica, key: str, slug: str, body: Any) -> str:
    r = await http.post(f"{replica.url}/v2/{slug}", json=body, headers={"x-api-key": key})
    assert r.status_code == 200, r.text
    return str(r.json()["request_id"])


async def _final(
    http: httpx.AsyncClient, replica: Replica, key: str, rid: str, timeout: float = 240
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = await http.get(f"{replica.url}/v2/requests/{rid}/status", headers={"x-api-key": key})
        body: dict[str, Any] = r.json()
        if body.get("status") in ("COMPLETED", "FAILED"):
            return body
        assert time.monotonic() < deadline, f"{rid} stuck: {body}\n{replica.tail()}"
        await asyncio.sleep(0.2)


async def test_the_cluster_layout_end_to_end(
    replicas: tuple[Replica, Replica, str], pg_url: str, tmp_path: Path, ray_cluster: RayCluster
) -> None:
    try:
        slow = await _phases(replicas, pg_url, tmp_path)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- Serve logs ---\n{_serve_logs(ray_cluster)}") from None
    await _audit_books(pg_url, slow)


def _serve_logs(cluster: RayCluster) -> str:
    logs = sorted((cluster.workdir / "ray" / "session_latest" / "logs" / "serve").glob("*.log"))
    return "\n".join(f"{p.name}: {p.read_text(errors='replace')[-1500:]}" for p in logs[-6:])


async def _phases(replicas: tuple[Replica, Replica, str], pg_url: str, tmp_path: Path) -> str:
    """Runs the three phases; returns the id of the job whose replica was killed."""
    a, b, app = replicas
    async with httpx.AsyncClient(timeout=120) as http:
        await asyncio.gather(_ready(a, http), _ready(b, http))
        key = subprocess.run(  # noqa: ASYNC221 - once, before any load
            [*KINEMA, "--data-dir", str(tmp_path / "cli"), "keys", "create", "--credits", "1000"],
            env={**os.environ, "KINEMA_DATABASE__URL": pg_url, **_secret()},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

        # 1. 50 async jobs across both replicas, and sync requests through each.
        bodies = [(IMAGE, {"image_url": B64, "prompt": f"an edit {n}"}) for n in range(42)]
        bodies += [(VIDEO, {"start_image_url": B64, "prompt": "x", "duration": "3"})] * 8
        ids = [
            (rep, await _submit(http, rep, key, slug, body))
            for n, (slug, body) in enumerate(bodies)
            for rep in ((a, b)[n % 2],)
        ]
        for rep in (a, b):
            r = await http.post(
                f"{rep.url}/v1/{IMAGE}",
                json={"image_url": B64, "prompt": "sync"},
                headers={"x-api-key": key},
            )
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "image/png"
        finals = [await _final(http, (b, a)[n % 2], key, rid) for n, (_, rid) in enumerate(ids)]
        assert [f["status"] for f in finals] == ["COMPLETED"] * 50, [
            f for f in finals if f["status"] != "COMPLETED"
        ]
        # Outputs are presigned URLs of the bucket, downloadable without a key.
        result = await http.get(f"{a.url}/v2/requests/{ids[0][1]}", headers={"x-api-key": key})
        output = result.json()["output"]
        assert output.startswith("http://127.0.0.1:") and "X-Amz-Signature" in output
        assert (await http.get(output)).status_code == 200

        # 2. A Ray replica killed mid-job: the job is retried and completes, charged once.
        slow = await _submit(
            http, a, key, VIDEO, {"start_image_url": B64, "prompt": "steps=40", "duration": "3"}
        )
        deadline = time.monotonic() + 60
        while (await _status(http, b, key, slow))["status"] != "PROCESSING":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        victims = replica_pids(f"{app}-image-to-video")
        assert victims, "no video replica process found"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        final = await _final(http, b, key, slow)
        assert final["status"] == "COMPLETED", final

        # 3. Scaled to zero after its idle delay, the image deployment comes back.
        deadline = time.monotonic() + 90
        while replica_pids(f"{app}-image-to-image"):
            assert time.monotonic() < deadline, "the idle image deployment never scaled to zero"
            await asyncio.sleep(0.5)
        cold = await _submit(http, b, key, IMAGE, {"image_url": B64, "prompt": "cold"})
        final = await _final(http, a, key, cold)
        assert final["status"] == "COMPLETED", final
        assert final["metrics"]["startup_time"] > 0
    return slow


async def _audit_books(pg_url: str, slow: str) -> None:
    """Every job ran to completion exactly once and the books balance."""
    db = open_database(pg_url)
    try:
        counts, charges, books = await db.read(_audit)
    finally:
        await db.dispose()
    assert counts == {"COMPLETED": 54}
    assert charges == {"reserve": 54}, "every job charged once, none refunded"
    assert all(ledger == balance for ledger, balance in books)
    attempts = dict(await db_attempts(pg_url, slow))
    assert attempts[slow] == 2


def _secret() -> dict[str, str]:
    return {"KINEMA_SECRET_KEY": "cluster-test-secret"}


async def _status(http: httpx.AsyncClient, rep: Replica, key: str, rid: str) -> dict[str, Any]:
    r = await http.get(f"{rep.url}/v2/requests/{rid}/status", headers={"x-api-key": key})
    body: dict[str, Any] = r.json()
    return body


def _audit(conn: Any) -> tuple[dict[str, int], dict[str, int], list[tuple[int, int]]]:
    """Jobs by status, ledger rows of jobs by kind, and each key's (ledger sum, balance)."""
    counts = dict(conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all())
    charges = dict(
        conn.execute(
            select(credit_ledger.c.kind, func.count())
            .where(credit_ledger.c.job_id.is_not(None))
            .group_by(credit_ledger.c.kind)
        ).all()
    )
    keys = {row.key_id for row in conn.execute(select(jobs.c.key_id).distinct())}
    books = [(billing.ledger_sum(conn, k), billing.balance(conn, k)) for k in keys]
    return counts, charges, books


async def db_attempts(pg_url: str, job_id: str) -> list[tuple[str, int]]:
    db = open_database(pg_url)
    try:
        return await db.read(
            lambda conn: [
                (row.id, row.attempts)
                for row in conn.execute(
                    select(jobs.c.id, jobs.c.attempts).where(jobs.c.id == job_id)
                )
            ]
        )
    finally:
        await db.dispose()
