"""A/B of the v1 gateway overhead between two versions of Kinema, in one run.

Starts one server per version (``--a`` / ``--b``: a git ref, checked out into a temporary
worktree, or ``.`` for the working tree) and sends sequential sync requests to both in
alternating blocks, so that both see the same phases of a drifting machine; prints the added
milliseconds (round trip − the recorded inference time) of each and their difference, and writes
JSON. An A/A run (the same version twice) shows the noise floor: on the project's 2-vCPU VM,
differences under ~0.15 ms at 600 requests each are noise. Bounded in count and time.

Usage: python bench/gateway_ab.py --a HEAD --b . [--requests 600] [--block 25]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway import (
    ROOT,
    free_port,
    generation_times,
    small_png,
    start_kinema,
    v1_round_trips,
    wait_healthy,
)

DEADLINE_S = 600
"""The request loop stops after this long, whatever the count."""


@contextlib.contextmanager
def source(ref: str) -> Iterator[Path]:
    """The ``src`` directory of ``ref``: the working tree for ".", else a temporary worktree."""
    if ref == ".":
        yield ROOT / "src"
        return
    tree = Path(tempfile.mkdtemp(prefix="kinema-ab-"))
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), ref],
        check=True,
        capture_output=True,
    )
    try:
        yield tree / "src"
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(tree, ignore_errors=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    image = small_png()
    with source(args.a) as src_a, source(args.b) as src_b, tempfile.TemporaryDirectory() as tmp:
        ports = [free_port(), free_port()]
        servers = [
            start_kinema(Path(tmp) / name, port, src=src)
            for src, name, port in zip((src_a, src_b), "ab", ports, strict=True)
        ]
        try:

            async def up() -> None:
                await asyncio.gather(*(wait_healthy(f"http://127.0.0.1:{p}") for p in ports))

            asyncio.run(up())
            added: list[list[float]] = [[], []]
            trips: list[list[float]] = [[], []]
            request_ids: list[list[str]] = [[], []]
            for (_, key), port in zip(servers, ports, strict=True):
                v1_round_trips(port, key, image, 20)  # warm-up
            deadline = time.monotonic() + DEADLINE_S
            for block in range(max(1, args.requests // args.block)):
                if time.monotonic() > deadline:
                    break
                order = (0, 1) if block % 2 == 0 else (1, 0)
                for i in order:
                    totals, _, ids = v1_round_trips(ports[i], servers[i][1], image, args.block)
                    trips[i] += totals
                    request_ids[i] += ids
            for i, ((_, key), port) in enumerate(zip(servers, ports, strict=True)):
                gen = generation_times(port, key, request_ids[i])
                added[i] = [t - g for t, g in zip(trips[i], gen, strict=True)]
        finally:
            for proc, _ in servers:
                proc.terminate()
                proc.wait(timeout=30)
    a, b = (statistics.median(x) * 1000 for x in added)
    return {
        "a": args.a,
        "b": args.b,
        "requests_each": len(added[0]),
        "a_added_p50_ms": a,
        "b_added_p50_ms": b,
        "b_minus_a_ms": b - a,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", default="HEAD", help="git ref, or . for the working tree")
    parser.add_argument("--b", default=".", help="git ref, or . for the working tree")
    parser.add_argument("--requests", type=int, default=600, help="per version")
    parser.add_argument("--block", type=int, default=25)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gateway_ab.json")
    args = parser.parse_args()

    result = run(args)
    rows = [
        (f"A ({result['a']}) v1 added p50 (ms)", f"{result['a_added_p50_ms']:.3f}"),
        (f"B ({result['b']}) v1 added p50 (ms)", f"{result['b_added_p50_ms']:.3f}"),
        ("B − A (ms)", f"{result['b_minus_a_ms']:+.3f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>8}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
