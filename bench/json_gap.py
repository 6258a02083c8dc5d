"""The event loop's longest stop while a 100 MB JSON body (one inline image) is parsed: on the
loop, ``json.loads`` on a thread, and ``kinema.api.validation.preparse`` on a thread (what
``read_body`` does from 1 MB). Run: ``.venv/bin/python bench/json_gap.py`` (needs ~1 GB)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Awaitable, Callable

from kinema.api.validation import preparse

RAW = json.dumps(
    {"image_url": base64.b64encode(os.urandom(75_000_000)).decode(), "prompt": "x"}
).encode()
CHUNKS = [RAW[i : i + 65536] for i in range(0, len(RAW), 65536)]


async def gap(work: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """(seconds the work took, longest gap between two 1 ms ticks meanwhile)."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.05)
    start = time.perf_counter()
    await work()
    took = time.perf_counter() - start
    done.set()
    await ticker
    return took, max(gaps)


async def main() -> None:
    async def on_loop() -> object:
        return json.loads(b"".join(CHUNKS))

    async def loads_on_thread() -> object:
        return await asyncio.to_thread(lambda: json.loads(b"".join(CHUNKS)))

    async def preparse_on_thread() -> object:
        return await asyncio.to_thread(preparse, CHUNKS)

    for name, work in [
        ("json.loads on the loop", on_loop),
        ("json.loads on a thread", loads_on_thread),
        ("preparse on a thread", preparse_on_thread),
    ]:
        runs = [await gap(work) for _ in range(3)]
        took = max(r[0] for r in runs) * 1e3
        longest = max(r[1] for r in runs) * 1e3
        print(f"{name:24s} took {took:5.0f} ms, longest loop gap {longest:5.0f} ms (worst of 3)")


if __name__ == "__main__":
    asyncio.run(main())
