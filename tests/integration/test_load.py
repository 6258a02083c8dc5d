"""Load, proved in CI: 2,000 v2 submits from 100 concurrent clients against ``kinema serve
--preset static`` on loopback, a mix of what clients send — of every ten, six valid, two invalid
bodies, one unknown key, one unknown model. No answer is a 5xx or missing, and each is the one
its own request must get (400 naming the field, 401, 404). The key's credits cover exactly
ADMITTED jobs, so exactly that many valid submits are accepted — concurrent reservations never
overdraw — and the rest are refused 406. Every accepted request is a job that ends COMPLETED,
no other job exists, and the books balance: one reservation per job, no refund, balance =
Σ ledger = 0. Submit latency p50/p99 is printed (``-s``)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.fixtures.load import read_books, submit_load, submits, wait_settled
from tests.fixtures.served import Server

# One served process of its own, on its own SQLite database.
pytestmark = [pytest.mark.integration, pytest.mark.embedded_only, pytest.mark.timeout(300)]

SUBMITS = 2000
CLIENTS = 100
VALID = SUBMITS * 6 // 10
ADMITTED = VALID - 100  # the last 100 valid ones find the credits spent
PRICE_MICROS = 35_000  # a 1K image (billing.image_price)
KEY_NAME = "load"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("load"), "static")
    credits = ADMITTED * PRICE_MICROS / 1_000_000
    server.key = server.cli(
        "keys", "create", "--name", KEY_NAME, "--credits", str(credits),
        "--rate-limit", "1000000/minute",
    )  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_two_thousand_concurrent_submits_are_all_accounted_for(server: Server) -> None:
    todo = submits(SUBMITS, server.key, mixed=True)
    t0 = time.monotonic()
    result = asyncio.run(asyncio.wait_for(submit_load(server.url, todo, clients=CLIENTS), 120))
    print(
        f"\n{SUBMITS} submits from {CLIENTS} clients in {result.wall_s:.1f} s "
        f"({result.per_s:.0f}/s): p50 {result.percentile_ms(0.5):.0f} ms, "
        f"p99 {result.percentile_ms(0.99):.0f} ms (valid ones: "
        f"{result.percentile_ms(0.5, 'valid'):.0f} / {result.percentile_ms(0.99, 'valid'):.0f}"
        f" ms); {dict(result.statuses)}"
    )
    assert len(result.answers) == SUBMITS
    wrong = Counter(
        (sub.kind, answer.status, answer.error[:80])
        for sub, answer in zip(todo, result.answers, strict=True)
        if answer.status != sub.expect and not (sub.kind == "valid" and answer.status == 406)
    )
    assert not wrong, wrong  # no 5xx, no lost answer, no request answered as another kind
    for sub, answer in zip(todo, result.answers, strict=True):
        if sub.kind.startswith("invalid:"):
            assert answer.error.startswith(sub.kind.removeprefix("invalid:")), answer.error
        if answer.status == 406:
            assert "credits" in answer.error, answer.error
    assert result.statuses[200] == ADMITTED and result.statuses[406] == VALID - ADMITTED
    accepted = result.accepted
    assert len(set(accepted)) == ADMITTED  # a request id each, none reused

    left = wait_settled(server.data_dir, time.monotonic() + 180)
    print(f"{ADMITTED} jobs settled {time.monotonic() - t0:.1f} s after the first submit")
    assert left == 0, f"{left} jobs still unsettled"
    books = read_books(server.data_dir, KEY_NAME)
    assert set(books.states) == set(accepted)  # none lost, none made up
    assert Counter(books.states.values()) == {"COMPLETED": ADMITTED}
    assert books.moves == {(job, "reserve"): 1 for job in accepted}  # no refund, no double
    assert books.ledger_micros == books.balance_micros == 0  # spent exactly, never overdrawn

    with httpx.Client(base_url=server.url, headers={"x-api-key": server.key}, timeout=30) as http:
        for rid in accepted[:: ADMITTED // 10]:  # what a client sees agrees with the books
            r = http.get(f"/v2/requests/{rid}")
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "COMPLETED"
            assert http.get(r.json()["output"]).status_code == 200
        assert http.get("/v1/get-user-credits").json()["credits"] == 0
