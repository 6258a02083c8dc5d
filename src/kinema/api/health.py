"""``/healthz`` (the process answers) and ``/readyz`` (it can do its work): both public, for
load balancers and orchestrators, which probe without a key.

Ready means every check passed, each bounded by :data:`CHECK_TIMEOUT_S`, run together:
``engines`` (the runner's pools each have a worker that can take a job; an API-only replica,
which runs no jobs, passes and says so), ``store`` (a trivial query answers) and ``storage``
(an existence probe of a fixed key answers: missing is fine, unreachable is not). Not ready is
a 503 naming the failing checks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, text

from kinema.api.deps import Services, services_of
from kinema.errors import KinemaError

log = logging.getLogger(__name__)
router = APIRouter()

CHECK_TIMEOUT_S = 2.0
"""The longest one readiness check may take before it counts as failed."""
PROBE_KEY = "readyz/probe"
"""The key the storage check asks about; it is never written."""


IDEMPOTENT_PATHS = ["v1", "v2"]
"""The submit paths that deduplicate by Idempotency-Key, as ``/healthz`` lists them: the SDK
asks before it repeats a v1 call whose answer it lost."""


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, object]:
    return {"status": "ok", "idempotency": IDEMPOTENT_PATHS}


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    svc = services_of(request)
    names = ("engines", "store", "storage")
    results = await asyncio.gather(
        _bounded(_engines(svc)), _bounded(_store(svc)), _bounded(_storage(svc))
    )
    checks = {
        name: {"ok": ok, "detail": detail}
        for name, (ok, detail) in zip(names, results, strict=True)
    }
    failing = [name for name, (ok, _) in zip(names, results, strict=True) if not ok]
    if not failing:
        return JSONResponse({"status": "ready", "checks": checks})
    detail = "; ".join(f"{name}: {checks[name]['detail']}" for name in failing)
    body = {"status": "not ready", "error": f"not ready: {detail}", "checks": checks}
    return JSONResponse(body, status_code=503)


async def _bounded(check: Awaitable[tuple[bool, str]]) -> tuple[bool, str]:
    try:
        return await asyncio.wait_for(check, CHECK_TIMEOUT_S)
    except TimeoutError:
        return False, f"no answer within {CHECK_TIMEOUT_S:g} s"
    except KinemaError as exc:
        return False, exc.message
    except Exception as exc:  # a probe reports its failure, it never raises
        # Only the type on this public route; the message (which may name hosts) is logged.
        log.warning("readiness check failed: %r", exc)
        return False, f"failed ({type(exc).__name__})"


async def _engines(svc: Services) -> tuple[bool, str]:
    if svc.runner is None:
        return True, "API-only replica: no runner here, other processes run the jobs"
    pools = list(svc.runner.pools)
    down = [pool.name for pool in pools if pool.capacity <= 0]
    if down:
        return False, f"no worker can take a job in pool(s) {', '.join(down)}"
    return True, ", ".join(f"{pool.name}: {pool.capacity} worker(s)" for pool in pools)


def _select_one(conn: Connection) -> object:
    return conn.execute(text("SELECT 1")).scalar()


async def _store(svc: Services) -> tuple[bool, str]:
    await svc.db.read(_select_one)
    return True, svc.db.dialect


async def _storage(svc: Services) -> tuple[bool, str]:
    await svc.storage.exists(PROBE_KEY)
    return True, "reachable"
