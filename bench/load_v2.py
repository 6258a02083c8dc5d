"""Load benchmark: v2 submits from many concurrent clients against ``kinema serve --preset
static`` on 127.0.0.1, until every accepted job has settled.

Each client is one keep-alive connection sending one submit after another (the load generator
of tests/integration/test_load.py, ``tests.fixtures.load``). Every submit is a valid
``kling-3-image2image`` request (a 64×64 PNG in, JPEG out) unless ``--mixed``: then of every
ten, six valid, two invalid bodies, one unknown key, one unknown model. The key has credits for
every submit and a limit no burst reaches. After the run the books are read from the server's
SQLite file: every accepted request must be a job that ended COMPLETED with one reservation and
no refund, and balance = Σ ledger; the run fails (exit 1) otherwise.

Prints a table (submit latency p50/p99, submit throughput, jobs completed per second, answers by
status) and writes JSON (default bench/results/load_v2.json). Bounded: every submit by 30 s, the
submits by 300 s, the settling by 600 s.
Usage: python bench/load_v2.py [--submits 2000] [--clients 100] [--workers 1] [--mixed] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.load import read_books, submit_load, submits, wait_settled  # noqa: E402
from tests.fixtures.served import Server  # noqa: E402

KEY_NAME = "bench"


def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    server = Server(data_dir, "static")
    server.env["KINEMA_ENGINES__WORKERS"] = str(args.workers)
    server.key = server.cli(
        "keys", "create", "--name", KEY_NAME, "--credits", str(args.submits),
        "--rate-limit", "1000000/minute",
    )  # fmt: skip
    server.start()
    try:
        todo = submits(args.submits, server.key, mixed=args.mixed)
        t0 = time.monotonic()
        load = asyncio.run(
            asyncio.wait_for(submit_load(server.url, todo, clients=args.clients), 300)
        )
        left = wait_settled(data_dir, time.monotonic() + 600)
        settled_s = time.monotonic() - t0
        books = read_books(data_dir, KEY_NAME)
    finally:
        server.stop()
    accepted = load.accepted
    wrong = sum(a.status != s.expect for s, a in zip(todo, load.answers, strict=True))
    checks = {
        "no 5xx or missing answer": all(0 < a.status < 500 for a in load.answers),
        "every answer the one its request must get": wrong == 0,
        "every accepted request a COMPLETED job, no other job": left == 0
        and set(books.states) == set(accepted)
        and set(books.states.values()) <= {"COMPLETED"},
        "one reservation per job, no refund": books.moves
        == Counter({(job, "reserve"): 1 for job in accepted}),
        "balance = sum of the ledger": books.ledger_micros == books.balance_micros,
    }
    return {
        "submits": args.submits,
        "clients": args.clients,
        "workers": args.workers,
        "mixed": args.mixed,
        "submit_wall_s": round(load.wall_s, 2),
        "submits_per_s": round(load.per_s, 1),
        "p50_ms": round(load.percentile_ms(0.50), 1),
        "p99_ms": round(load.percentile_ms(0.99), 1),
        "valid_p50_ms": round(load.percentile_ms(0.50, "valid"), 1),
        "valid_p99_ms": round(load.percentile_ms(0.99, "valid"), 1),
        "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
        "completed": Counter(books.states.values())["COMPLETED"],
        "settled_s": round(settled_s, 2),
        "completed_per_s": round(len(accepted) / settled_s, 1),
        "checks": checks,
    }


def print_table(r: dict[str, Any]) -> None:
    mix = "mixed" if r["mixed"] else "all valid"
    rows = [
        (
            f"submits ({mix}) / clients / workers",
            f"{r['submits']} / {r['clients']} / {r['workers']}",
        ),
        ("submit latency p50 / p99 (ms)", f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f}"),
        (
            "valid submits' latency p50 / p99 (ms)",
            f"{r['valid_p50_ms']:.0f} / {r['valid_p99_ms']:.0f}",
        ),
        ("submits per second", f"{r['submits_per_s']:.0f} ({r['submit_wall_s']:.1f} s)"),
        ("answers by status", ", ".join(f"{k}: {v}" for k, v in r["statuses"].items())),
        ("jobs completed / settled after (s)", f"{r['completed']} / {r['settled_s']:.1f}"),
        ("jobs completed per second", f"{r['completed_per_s']:.0f}"),
    ]
    rows += [(name, "ok" if ok else "FAILED") for name, ok in r["checks"].items()]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submits", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1, help="engines.workers")
    parser.add_argument("--mixed", action="store_true", help="add invalid and refused submits")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load_v2.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kinema-load-") as tmp:
        result = run(args, Path(tmp))
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    if not all(result["checks"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
