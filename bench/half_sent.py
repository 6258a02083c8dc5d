"""Open N connections to a running ``kinema serve`` that each send half a request head, and
report when and how the server ends them. Run against a server on 127.0.0.1, e.g.
``kinema --data-dir /tmp/k serve --preset static --port 18765 &`` then
``.venv/bin/python bench/half_sent.py 18765 1000``."""

from __future__ import annotations

import asyncio
import sys
import time


async def half_sent(port: int) -> tuple[float, bytes]:
    """(seconds until the server closed the connection, the start of its answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        await writer.drain()
        start = time.monotonic()
        answer = await asyncio.wait_for(reader.read(), 60)
        return time.monotonic() - start, answer[:12]
    finally:
        writer.close()


async def main(port: int, count: int) -> None:
    results = await asyncio.gather(*(half_sent(port) for _ in range(count)), return_exceptions=True)
    done = [r for r in results if not isinstance(r, BaseException)]
    if not done:
        print(f"{count} half-sent requests: none ended ({results[0]!r})")
        return
    times = [t for t, _ in done]
    answers = sorted({a.decode(errors="replace") for _, a in done})
    print(
        f"{count} half-sent requests: {len(done)} ended by the server after "
        f"{min(times):.1f}-{max(times):.1f} s, answers {answers}, "
        f"{len(results) - len(done)} not ended within 60 s"
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
