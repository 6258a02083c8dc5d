"""Queue benchmark: what the job store and the wake-ups between replicas cost, side by side.

In one run, on loopback:
  (a) jobs/s through submit → claim → complete, SQLite vs PostgreSQL: ``--jobs`` jobs submitted
      by ``--concurrency`` concurrent submitters (each one credit reservation + insert in one
      transaction) while a dispatcher claims them and settles each COMPLETED (charge kept,
      lease released). The runner is an in-process one that answers at once, so the figure is
      the store's and the dispatcher's, not an engine's;
  (b) a v1 (sync) request's latency through a replica with a worker (the job goes straight to
      its local slot) vs through an API-only replica (``engines.workers = 0``) on the same
      PostgreSQL database, whose job another replica's worker runs: woken by LISTEN/NOTIFY
      (``jobs.relay``, the default) and, for scale, by polling alone (``jobs.relay = false``).
      Three ``kinema serve`` processes on the ``static`` engine, one storage directory;
  (c) what the Ray runner adds per job over the local runner: ``--runs`` sequential runs of the
      ``static-image`` engine through each runner's interface (warm), and the Ray runner's cold
      start from zero replicas (the first run's whole wait, and the ``startup_time`` it
      reports). A one-node Ray cluster on loopback is started and stopped by the benchmark
      (``--no-ray`` skips this part).

Prints a table and writes JSON (default bench/results/queue.json). Bounded in count and time.
Needs PostgreSQL (``--pg``, default ``postgresql://postgres@127.0.0.1:5432/postgres``); it
creates and drops a database of its own.
Named job_queue, not queue: a queue.py in bench/ would stand in for the standard library's
queue module in every script run from here.
Usage: python bench/job_queue.py [--jobs 400] [--concurrency 16] [--sync 60] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg

from gateway import free_port, percentile, small_png, wait_healthy
from kinema.api.endpoints import ENDPOINTS
from kinema.billing.service import KeyService
from kinema.jobs.dispatcher import Dispatcher
from kinema.jobs.models import NewJob, Status
from kinema.jobs.notify import Notifier
from kinema.jobs.service import JobService
from kinema.jobs.spec import ImageSpec
from kinema.runners.base import RunResult, RunTask
from kinema.settings import Settings
from kinema.storage.local import LocalStorage
from kinema.store.db import open_database

ROOT = Path(__file__).resolve().parents[1]
SLUG = "kling-3-image2image"
DEADLINE_S = 600  # hard bound on the whole run
PRICE = 10_000


class Pool:
    name = "image"
    tasks = frozenset({"image-to-image", "text-to-image"})

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity


class InstantRunner:
    """Answers every run at once with an output it never wrote: the queue alone is measured."""

    def __init__(self, capacity: int) -> None:
        self.pools = [Pool(capacity)]

    async def start(self) -> None: ...

    async def run(self, task: RunTask, on_progress: Any, on_alive: Any) -> RunResult:
        await asyncio.sleep(0)
        return RunResult(output_key=f"outputs/{task.job_id}/output.png", content_type="image/png")

    async def cancel(self, job_id: str) -> None: ...

    async def close(self) -> None: ...


def spec(job_id: str) -> ImageSpec:
    return ImageSpec(
        preset="static-image",
        prompt="a queue",
        aspect_ratio="1:1",
        resolution="1K",
        width=1024,
        height=1024,
        output_format="png",
        seed=1,
        image=f"inputs/{job_id}/00-image",
    )


async def store_throughput(url: str, data_dir: Path, n: int, conc: int) -> dict[str, float]:
    secret = "bench-secret"  # noqa: S105
    settings = Settings(data_dir=data_dir, secret_key=secret, database={"url": url})
    db = open_database(url)
    await db.migrate()
    try:
        keys = KeyService(db, settings.secret(), cache_s=0)
        key = await keys.create(credits=n * PRICE / 1e6 + 1)
        jobs = JobService(db, settings, Notifier())
        storage = LocalStorage(data_dir / "files", settings.secret())
        models = {slug: endpoint.task.value for slug, endpoint in ENDPOINTS.items()}
        runner = InstantRunner(conc)
        dispatcher = Dispatcher(db, jobs, runner, storage, settings.jobs, models=models)
        ids = [str(uuid.uuid4()) for _ in range(n)]
        done = asyncio.Event()
        finished = 0
        notify = jobs.notifier.job_finished

        def counted(job: Any) -> None:
            nonlocal finished
            notify(job)
            finished += 1
            if finished == n:
                done.set()

        jobs.notifier.job_finished = counted  # type: ignore[method-assign]
        dispatcher.start()
        t0 = time.perf_counter()
        todo = iter(ids)

        async def submitter() -> None:
            for job_id in todo:
                new = NewJob(
                    id=job_id,
                    key_id=key.record.id,
                    model=SLUG,
                    spec=spec(job_id),
                    price_micros=PRICE,
                )
                await jobs.submit(new)

        await asyncio.gather(*(submitter() for _ in range(conc)))
        submitted = time.perf_counter() - t0
        async with asyncio.timeout(DEADLINE_S / 3):
            await done.wait()
        total = time.perf_counter() - t0
        await dispatcher.stop()
        statuses = await db.read(
            lambda conn: conn.exec_driver_sql(
                "SELECT status, count(*) FROM jobs GROUP BY status"
            ).all()
        )
        assert dict(statuses) == {Status.COMPLETED.value: n}, statuses
        return {"jobs": n, "submit_s": submitted, "total_s": total, "jobs_per_s": n / total}
    finally:
        await db.dispose()


def start_replica(
    data_dir: Path, port: int, env: dict[str, str], workers: int, relay: bool
) -> subprocess.Popen[bytes]:
    replica_env = {
        **os.environ,
        **env,
        "KINEMA_ENGINES__WORKERS": str(workers),
        "KINEMA_JOBS__RELAY": "true" if relay else "false",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kinema",
            "--data-dir",
            str(data_dir),
            "serve",
            "--preset",
            "static",
            "--port",
            str(port),
        ],
        env=replica_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def sync_latencies(port: int, key: str, image_b64: str, n: int) -> list[float]:
    body = json.dumps({"image_url": image_b64, "prompt": "a harbour"}).encode()
    headers = {"x-api-key": key, "content-type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    try:
        for _ in range(n + 3):  # three warm-ups
            t0 = time.perf_counter()
            conn.request("POST", f"/v1/{SLUG}", body=body, headers=headers)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"v1 answered {r.status}")
            times.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return times[3:]


async def wakeups(pg_url: str, root: Path, n: int) -> dict[str, dict[str, float]]:
    env = {
        "KINEMA_DATABASE__URL": pg_url,
        "KINEMA_STORAGE__PATH": str(root / "files"),
        "KINEMA_SECRET_KEY": "bench-secret",
        "KINEMA_RATE_LIMIT__DEFAULT": "1000000/minute",
    }
    base = [sys.executable, "-m", "kinema", "--data-dir", str(root / "w")]
    key = subprocess.run(  # noqa: ASYNC221 (before any replica runs)
        [*base, "keys", "create", "--credits", "1000000"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ports = {name: free_port() for name in ("worker", "api-only", "api-only-polling")}
    procs = [
        start_replica(root / "w", ports["worker"], env, workers=1, relay=True),
        start_replica(root / "a", ports["api-only"], env, workers=0, relay=True),
        start_replica(root / "p", ports["api-only-polling"], env, workers=0, relay=False),
    ]
    try:
        for port in ports.values():
            await wait_healthy(f"http://127.0.0.1:{port}")
        image = small_png()
        out = {}
        for name, port in ports.items():
            count = max(5, n // 6) if name == "api-only-polling" else n
            times = await asyncio.to_thread(sync_latencies, port, key, image, count)
            out[name] = {
                "requests": count,
                "p50_ms": percentile(times, 0.5) * 1e3,
                "p95_ms": percentile(times, 0.95) * 1e3,
            }
        return out
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def scratch_database(admin: str) -> tuple[str, str]:
    name = f"kinema_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return name, f"{base}/{name}"


async def drop_database(admin: str, name: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def runner_runs(settings: Settings, n: int) -> tuple[list[float], tuple[float, Any]]:
    """``n`` warm runs through the configured runner, after a first one (a cold start for
    Ray); returns the warm runs' seconds and the first run's (seconds, result)."""
    from kinema.runners.factory import open_runner

    runner = open_runner(settings)
    assert runner is not None
    await runner.start()
    image = base64.b64decode(small_png())
    times: list[float] = []
    first: tuple[float, Any] = (0.0, None)
    try:
        for i in range(n + 1):
            job_id = str(uuid.uuid4())
            task = RunTask(
                job_id=job_id, spec=spec(job_id), inline={f"inputs/{job_id}/00-image": image}
            )
            t0 = time.perf_counter()
            result = await runner.run(task, lambda _p: None, lambda: None)
            elapsed = time.perf_counter() - t0
            if i == 0:
                first = (elapsed, result)
            else:
                times.append(elapsed)
        return times, first
    finally:
        await runner.close()


def ray_head() -> Any:
    """A one-node Ray cluster on loopback (the test suite's fixture class), this process set
    up to join it."""
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.raycluster import LOOPBACK_ENV, RayCluster, ray_binary

    binary = ray_binary()
    if binary is None:
        raise RuntimeError('Ray is not installed: pip install -e ".[ray]"')
    os.environ.update(LOOPBACK_ENV)
    cluster = RayCluster(binary, Path(tempfile.mkdtemp(prefix="kray-")))
    cluster.start()
    return cluster


async def dispatch_overhead(root: Path, n: int) -> dict[str, Any]:
    base: dict[str, Any] = {
        "data_dir": root / "runners",
        "secret_key": "bench-secret",
        "engines": {"preset": "static", "device": "cpu"},
    }
    local, _ = await runner_runs(Settings(**base), n)
    cluster = ray_head()
    try:
        app = f"bench{uuid.uuid4().hex[:6]}"
        runner = {"backend": "ray", "ray_address": cluster.address, "app_name": app}
        ray, (cold_s, cold) = await runner_runs(Settings(**base, runner=runner), n)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()  # leave the cluster before it stops
        cluster.stop()
    p50 = {"local": percentile(local, 0.5) * 1e3, "ray": percentile(ray, 0.5) * 1e3}
    return {
        "runs": n,
        "local_p50_ms": p50["local"],
        "ray_p50_ms": p50["ray"],
        "ray_p95_ms": percentile(ray, 0.95) * 1e3,
        "added_ms_p50": p50["ray"] - p50["local"],
        "ratio_p50": p50["ray"] / p50["local"],
        "cold_start_s": cold_s,
        "cold_startup_time_s": cold.startup_time,
        "ray_start_s": cluster.startup_s,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"jobs": args.jobs, "concurrency": args.concurrency}
    with tempfile.TemporaryDirectory(prefix="kinema-bench-queue-") as tmp:
        root = Path(tmp)
        store: dict[str, dict[str, float]] = {}
        store["sqlite"] = await store_throughput(
            f"sqlite:///{root / 'q.db'}", root / "sqlite", args.jobs, args.concurrency
        )
        name, url = await scratch_database(args.pg)
        try:
            store["postgresql"] = await store_throughput(
                url, root / "pg", args.jobs, args.concurrency
            )
        finally:
            await drop_database(args.pg, name)
        result["store"] = store
        name, url = await scratch_database(args.pg)
        try:
            sync = await wakeups(url, root, args.sync)
        finally:
            await drop_database(args.pg, name)
        sync["added_ms_p50"] = {
            "relay": sync["api-only"]["p50_ms"] - sync["worker"]["p50_ms"],
            "polling": sync["api-only-polling"]["p50_ms"] - sync["worker"]["p50_ms"],
        }
        result["sync"] = sync
        if args.ray:
            result["ray"] = await dispatch_overhead(root, args.runs)
    return result


def print_table(result: dict[str, Any]) -> None:
    print(
        f"\n(a) submit → claim → complete, {result['jobs']} jobs, {result['concurrency']} "
        "submitters, instant runner"
    )
    print(f"{'store':<12}{'submit s':>10}{'total s':>10}{'jobs/s':>10}")
    for name, row in result["store"].items():
        print(
            f"{name:<12}{row['submit_s']:>10.2f}{row['total_s']:>10.2f}{row['jobs_per_s']:>10.1f}"
        )
    pg, lite = result["store"]["postgresql"], result["store"]["sqlite"]
    print(f"PostgreSQL / SQLite jobs/s: {pg['jobs_per_s'] / lite['jobs_per_s']:.2f}")
    sync = result["sync"]
    print("\n(b) v1 sync latency on one PostgreSQL database (static engine)")
    print(f"{'through':<20}{'requests':>10}{'p50 ms':>10}{'p95 ms':>10}")
    for name in ("worker", "api-only", "api-only-polling"):
        row = sync[name]
        print(f"{name:<20}{row['requests']:>10}{row['p50_ms']:>10.1f}{row['p95_ms']:>10.1f}")
    added = sync["added_ms_p50"]
    print(
        f"API-only adds at p50: {added['relay']:.1f} ms with LISTEN/NOTIFY, "
        f"{added['polling']:.1f} ms polling alone"
    )
    if "ray" in result:
        ray = result["ray"]
        print(f"\n(c) {ray['runs']} warm static-image runs through the runner interface")
        print(f"{'runner':<12}{'p50 ms':>10}")
        print(f"{'local':<12}{ray['local_p50_ms']:>10.1f}")
        print(f"{'ray':<12}{ray['ray_p50_ms']:>10.1f}")
        print(f"Ray / local p50: {ray['ratio_p50']:.2f} (+{ray['added_ms_p50']:.1f} ms per job)")
        print(
            f"cold start from zero replicas: {ray['cold_start_s']:.2f} s for the first run "
            f"(startup_time {ray['cold_startup_time_s']:.2f} s); "
            f"ray start {ray['ray_start_s']:.1f} s"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sync", type=int, default=60, help="sync requests per replica")
    parser.add_argument("--runs", type=int, default=100, help="runs per runner in (c)")
    parser.add_argument("--no-ray", dest="ray", action="store_false", help="skip (c)")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results/queue.json")
    args = parser.parse_args(argv)
    result = asyncio.run(asyncio.wait_for(run(args), DEADLINE_S))
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
