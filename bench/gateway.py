"""Gateway benchmark: what Kinema's HTTP + jobs + billing path adds on top of generation.

In one run, on loopback:
  (a) v1 round trip with the zero-cost ``static-image`` engine vs that engine alone (the same
      engine + conform + encode work, called in-process): the added milliseconds at p50/p95.
      Sequential requests on one keep-alive connection from the standard library's http.client
      (the leanest client, so the figure is the server's); for scale, the same client's round
      trip to a bare FastAPI endpoint that answers a PNG of the same size (the HTTP floor), and
      to a bare endpoint that hands each request to a helper process over a pipe, which works
      (spins) as long as the engine does before it answers (the floor for a request that waits
      on another process for that long: the same process hop, and the same wake-ups of idle
      processes, which cost this 2-vCPU VM far more than a back-to-back request does);
  (b) v2 submit throughput (requests/s at a fixed concurrency) vs a bare FastAPI endpoint that
      does one SQLite insert per request, both served by uvicorn the same way. Kinema is measured
      as an API-only replica (engines.workers = 0: generation runs elsewhere, as on a GPU
      cluster) and as the embedded default (its worker generating on the same 2 cores).

Prints a table and writes JSON (default bench/results/gateway.json). Bounded in count and time.
Usage: python bench/gateway.py [--requests 300] [--concurrency 16] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SLUG = "kling-3-image2image"
DEADLINE_S = 300  # hard bound on the whole run
OUTPUT_PNG_BYTES = 3041  # the static engine's 1024x576 PNG of the flat test image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def small_png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 30, 200)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_kinema(
    data_dir: Path, port: int, workers: int = 1, src: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``kinema serve`` on the static engine, and a key for it. ``src``: run that source tree's
    package instead of the installed one (on PYTHONPATH, which comes before the editable
    install, for the API process and its workers alike)."""
    env = {
        **os.environ,
        "KINEMA_RATE_LIMIT__DEFAULT": "1000000/minute",
        "KINEMA_ENGINES__WORKERS": str(workers),
        **({"PYTHONPATH": str(src)} if src else {}),
    }
    base = [sys.executable, "-m", "kinema", "--data-dir", str(data_dir)]
    key = subprocess.run(
        [*base, "keys", "create", "--credits", "1000000"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    proc = subprocess.Popen(
        [*base, "serve", "--preset", "static", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, key


def start_bare(data_dir: Path, port: int, png_size: int, work_s: float) -> subprocess.Popen[bytes]:
    code = BARE_APP.format(
        db=str(data_dir / "bare.db"),
        port=port,
        png_size=png_size,
        helper=HELPER,
        work_line=f"{work_s:.6f}\n".encode(),
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


HELPER = """
import sys, time
for line in sys.stdin:
    t = time.perf_counter()
    end = t + float(line)
    while time.perf_counter() < end:
        pass
    sys.stdout.write(f"{time.perf_counter() - t:.6f}\\n")
    sys.stdout.flush()
"""
"""The bare app's stand-in worker: spins as long as asked, answers how long it took."""

BARE_APP = """
import aiosqlite, asyncio, sys, uuid, time, uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
app = FastAPI()
state = {{}}
@app.on_event("startup")
async def up():
    db = await aiosqlite.connect({db!r})
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=NORMAL")
    await db.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, body TEXT, t REAL)")
    state["db"] = db
@app.post("/v2/{{slug}}")
async def submit(slug: str, request: Request):
    body = await request.body()
    rid = str(uuid.uuid4())
    db = state["db"]
    await db.execute("INSERT INTO jobs VALUES (?, ?, ?)", (rid, body.decode(), time.time()))
    await db.commit()
    return {{"request_id": rid, "status": "QUEUED"}}
PNG = bytes({png_size})
@app.post("/v1/{{slug}}")
async def sync(slug: str, request: Request):
    await request.body()
    return Response(PNG, media_type="image/png", headers={{"x-generation-time": "0.000"}})
HELPER = {helper!r}
@app.on_event("startup")
async def helper():
    state["helper"] = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HELPER, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
@app.post("/v1-worker/{{slug}}")
async def via_worker(slug: str, request: Request):
    await request.body()
    helper = state["helper"]
    helper.stdin.write({work_line!r})
    await helper.stdin.drain()
    took = (await helper.stdout.readline()).decode().strip()
    return Response(PNG, media_type="image/png", headers={{"x-generation-time": took}})
@app.get("/healthz")
async def health():
    return {{"status": "ok"}}
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning")
"""


async def wait_healthy(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url + "/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not become healthy")


def engine_alone(image_b64: str, n: int) -> list[float]:
    """The static engine + conform + encode + store, called directly (what x-generation-time
    covers)."""
    from kinema.engines.base import Task
    from kinema.engines.registry import LoadOptions, load_engine
    from kinema.jobs.spec import ImageSpec
    from kinema.runners.execute import execute
    from kinema.runners.protocol import RunTask
    from kinema.storage.blobs import LocalBlobs

    engine = load_engine("static-image", LoadOptions(models_dir=Path(tempfile.mkdtemp())))
    with tempfile.TemporaryDirectory() as tmp:
        spec = ImageSpec(
            prompt="x",
            aspect_ratio="16:9",
            resolution="1K",
            width=1024,
            height=576,
            output_format="png",
            seed=0,
            image="inputs/bench/00-image",
        )
        task = RunTask(job_id="bench", spec=spec, inline={spec.image: base64.b64decode(image_b64)})
        blobs = LocalBlobs(Path(tmp))
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            execute({Task.IMAGE_TO_IMAGE: engine}, task, blobs, lambda _p, _w: None)
            times.append(time.perf_counter() - t0)
    return times


def v1_round_trips(
    port: int, key: str, image_b64: str, n: int, path: str = f"/v1/{SLUG}"
) -> tuple[list[float], list[float], list[str]]:
    """``n`` sequential sync calls on one keep-alive connection: round trips, the server's
    ``x-generation-time`` and ``x-request-id`` (empty from the bare app) for each."""
    body = json.dumps({"image_url": image_b64, "prompt": "x"})
    headers = {"x-api-key": key, "content-type": "application/json"}
    totals, gen, ids = [], [], []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            totals.append(time.perf_counter() - t0)
            if response.status != 200:
                raise RuntimeError(f"v1 call answered {response.status}")
            gen.append(float(response.getheader("x-generation-time") or 0))
            ids.append(response.getheader("x-request-id") or "")
    finally:
        conn.close()
    return totals, gen, ids


def generation_times(port: int, key: str, ids: list[str]) -> list[float]:
    """Each Kinema request's inference time as recorded (``metrics.inference_time`` of its
    result), read after the timed calls: ``x-generation-time`` is rounded to the millisecond,
    which against a 2 ms overhead would bias the added time whenever the engine's times cluster
    within a millisecond."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    try:
        for request_id in ids:
            conn.request("GET", f"/v2/requests/{request_id}", headers={"x-api-key": key})
            response = conn.getresponse()
            result = json.loads(response.read())
            if response.status != 200:
                raise RuntimeError(f"result of {request_id} answered {response.status}")
            times.append(float(result["metrics"]["inference_time"]))
    finally:
        conn.close()
    return times


async def submit_throughput(url: str, key: str, image_b64: str, n: int, conc: int) -> float:
    body = {"image_url": image_b64, "prompt": "x"}
    remaining = n
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=conc)) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                r = await client.post(f"{url}/v2/{SLUG}", json=body, headers={"x-api-key": key})
                r.raise_for_status()

        for _ in range(min(20, n)):  # warm-up
            await client.post(f"{url}/v2/{SLUG}", json=body, headers={"x-api-key": key})
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        return n / (time.perf_counter() - t0)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    image = small_png()
    alone = engine_alone(image, args.v1_requests)
    with tempfile.TemporaryDirectory() as tmp:
        kport, bport = free_port(), free_port()
        aport = free_port()
        kinema, key = start_kinema(Path(tmp) / "kinema", kport)
        api_only, akey = start_kinema(Path(tmp) / "api-only", aport, workers=0)
        work_s = statistics.median(alone)
        bare = start_bare(Path(tmp), bport, png_size=OUTPUT_PNG_BYTES, work_s=work_s)
        procs = (kinema, api_only, bare)
        try:
            kurl, burl = f"http://127.0.0.1:{kport}", f"http://127.0.0.1:{bport}"
            aurl = f"http://127.0.0.1:{aport}"
            await asyncio.gather(wait_healthy(kurl), wait_healthy(burl), wait_healthy(aurl))
            v1_round_trips(bport, "-", image, 10)  # warm-up
            floor, _, _ = v1_round_trips(bport, "-", image, args.v1_requests)
            via = f"/v1-worker/{SLUG}"
            v1_round_trips(bport, "-", image, 10, via)
            v1_round_trips(kport, key, image, 10)
            # Alternating blocks, so that both see the same phases of a drifting VM.
            totals, header_gen, ids, w_totals, w_gen = [], [], [], [], []
            block = max(1, args.v1_requests // 4)
            for _ in range(4):
                t, g, i = v1_round_trips(kport, key, image, block)
                totals += t
                header_gen += g
                ids += i
                t, g, _ = v1_round_trips(bport, "-", image, block, via)
                w_totals += t
                w_gen += g
            gen = generation_times(kport, key, ids)
            n, c = args.requests, args.concurrency
            bare_rps = await submit_throughput(burl, "-", image, n, c)
            api_rps = await submit_throughput(aurl, akey, image, n, c)
            kinema_rps = await submit_throughput(kurl, key, image, n, c)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=30)
    added = [t - g for t, g in zip(totals, gen, strict=True)]
    worker_floor = [t - g for t, g in zip(w_totals, w_gen, strict=True)]
    ms = 1000.0
    return {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "v1": {
            "requests": args.v1_requests,
            "http_floor_p50_ms": statistics.median(floor) * ms,
            "engine_alone_p50_ms": statistics.median(alone) * ms,
            "round_trip_p50_ms": statistics.median(totals) * ms,
            "round_trip_p95_ms": percentile(totals, 0.95) * ms,
            "generation_p50_ms": statistics.median(gen) * ms,
            "added_by_header_p50_ms": statistics.median(
                [t - g for t, g in zip(totals, header_gen, strict=True)]
            )
            * ms,
            "added_p50_ms": statistics.median(added) * ms,
            "added_p95_ms": percentile(added, 0.95) * ms,
            "worker_floor_p50_ms": statistics.median(worker_floor) * ms,
            "kinema_own_p50_ms": (statistics.median(added) - statistics.median(worker_floor)) * ms,
            "target_added_p50_ms": 3.0,
        },
        "v2_submit": {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "bare_rps": bare_rps,
            "kinema_api_only_rps": api_rps,
            "kinema_embedded_rps": kinema_rps,
            "ratio_api_only": api_rps / bare_rps,
            "ratio_embedded": kinema_rps / bare_rps,
            "target_ratio": 0.5,
        },
    }


def print_table(result: dict[str, Any]) -> None:
    v1, v2 = result["v1"], result["v2_submit"]
    rows = [
        ("v1 HTTP floor (bare FastAPI, same PNG) p50 (ms)", f"{v1['http_floor_p50_ms']:.2f}", ""),
        ("v1 engine alone p50 (ms)", f"{v1['engine_alone_p50_ms']:.2f}", ""),
        ("v1 round trip p50 (ms)", f"{v1['round_trip_p50_ms']:.2f}", ""),
        ("v1 generation (metrics.inference_time) p50 (ms)", f"{v1['generation_p50_ms']:.2f}", ""),
        ("v1 added by the gateway p50 (ms)", f"{v1['added_p50_ms']:.2f}", "target ≤ 3"),
        (
            "v1 added, from x-generation-time (whole ms) p50 (ms)",
            f"{v1['added_by_header_p50_ms']:.2f}",
            "",
        ),
        ("v1 added by the gateway p95 (ms)", f"{v1['added_p95_ms']:.2f}", ""),
        (
            "v1 floor with a worker hop (bare FastAPI + pipe helper) p50 (ms)",
            f"{v1['worker_floor_p50_ms']:.2f}",
            "",
        ),
        (
            "v1 Kinema's own part (added − that floor) p50 (ms)",
            f"{v1['kinema_own_p50_ms']:.2f}",
            "",
        ),
        (
            f"v2 submit, bare FastAPI+SQLite insert (req/s, c={v2['concurrency']})",
            f"{v2['bare_rps']:.0f}",
            "",
        ),
        ("v2 submit, Kinema API-only replica (req/s)", f"{v2['kinema_api_only_rps']:.0f}", ""),
        ("v2 submit, Kinema embedded, worker busy (req/s)", f"{v2['kinema_embedded_rps']:.0f}", ""),
        ("v2 submit ratio API-only / bare", f"{v2['ratio_api_only']:.2f}", "target ≥ 0.50"),
        ("v2 submit ratio embedded / bare", f"{v2['ratio_embedded']:.2f}", ""),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--v1-requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gateway.json")
    args = parser.parse_args()
    result = asyncio.run(asyncio.wait_for(run(args), DEADLINE_S))
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
