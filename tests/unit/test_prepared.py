"""Prepared statements: on SQLite the driver route reads and writes exactly what SQLAlchemy's
``Connection.execute`` does, for every statement on the request path."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, bindparam, create_engine, select, update

from kinema.billing import repository as billing
from kinema.jobs import repository as repo
from kinema.jobs.models import Lease, NewJob, Status
from kinema.jobs.spec import dump_spec
from kinema.runners.base import RunProgress
from kinema.store.db import upgrade
from kinema.store.prepared import Prepared
from kinema.store.tables import api_keys, jobs
from tests.fixtures.specs import image_spec

pytestmark = pytest.mark.unit


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Connection]:
    engine = create_engine(f"sqlite:///{tmp_path}/p.db")
    with engine.connect() as connection:
        upgrade(connection)
        connection.commit()
        connection.execute(
            api_keys.insert().values(
                id="k1", prefix="kin_", key_hash="h", created_at=1.0, models=["m"]
            )
        )
        yield connection
    engine.dispose()


def _new(job_id: str, **extra: Any) -> NewJob:
    fields: dict[str, Any] = {
        "id": job_id,
        "key_id": "k1",
        "model": "kling-3-image2image",
        "spec": image_spec("x", prompt="é"),
        "price_micros": 35_000,
        "sync": True,
        "idempotency_key": None,
        "request_hash": "ab" * 32,
    }
    return NewJob(**{**fields, **extra})


def test_rows_match_sqlalchemy_both_ways(conn: Connection) -> None:
    repo.insert_job(conn, _new("j1"), now=1.0, expires_at=9.0)  # written by the driver route
    through_sa = conn.execute(select(jobs).where(jobs.c.id == "j1")).one()
    prepared = Prepared(select(jobs).where(jobs.c.id == bindparam("job"))).first(
        conn, {"job": "j1"}
    )
    assert tuple(prepared) == tuple(through_sa)
    assert prepared.params == dump_spec(image_spec("x", prompt="é"))
    assert prepared.sync is True and prepared.cancel_requested is False  # booleans, not 0/1
    assert repo.get(conn, "j1") == repo._job(through_sa)


def test_scalar_column_defaults_are_applied(conn: Connection) -> None:
    billing._LEDGER.rows(
        conn,
        {"key_id": "k1", "kind": "grant", "amount_micros": 5, "balance_after_micros": 5,
         "created_at": 2.0},
    )  # fmt: skip
    row = conn.exec_driver_sql("SELECT note, job_id FROM credit_ledger").one()
    assert tuple(row) == ("", None)


def test_reserve_claim_finish_through_the_driver(conn: Connection) -> None:
    billing.grant(conn, "k1", 50_000, now=1.0, note="")
    assert billing.reserve(conn, "k1", "j1", 35_000, now=2.0) == 15_000
    assert billing.reserve(conn, "k1", "j2", 35_000, now=2.0) is None  # not covered: untouched
    assert billing.balance(conn, "k1") == billing.ledger_sum(conn, "k1") == 15_000
    now = time.time()
    repo.insert_job(conn, _new("j1"), now=now, expires_at=now + 60)
    assert repo.has_runnable(conn, now=now, max_attempts=3)
    (claimed,) = repo.claim(conn, owner="o", limit=4, now=now, lease_s=30, max_attempts=3)
    assert (claimed.status, claimed.attempts, claimed.lease_owner) == (Status.PROCESSING, 1, "o")
    assert not repo.has_runnable(conn, now=now, max_attempts=3)
    progress = RunProgress(0.5, "decoding", 0.25)
    assert repo.renew_lease(conn, "j1", "o", until=now + 60, progress=progress) is False
    assert repo.renew_lease(conn, "j1", "other", until=now + 60, progress=None) is None
    running = repo.get(conn, "j1")
    assert running is not None
    assert (running.progress, running.phase, running.phase_progress) == (0.5, "decoding", 0.25)
    done = repo.finish(
        conn,
        "j1",
        status=Status.COMPLETED,
        now=now,
        owner="o",
        expected=(Status.PROCESSING,),
        unless_cancelled=True,
        output_metadata={"seed": 7},
    )
    assert done is not None and done.status is Status.COMPLETED and done.progress == 0.5
    assert done.output_metadata == {"seed": 7} and done.finished_at == now
    again = repo.finish(
        conn, "j1", status=Status.FAILED, now=now, owner=None, expected=(Status.PROCESSING,)
    )
    assert again is None  # a final job is never settled twice


def test_claimed_insert_and_abandoned_scan(conn: Connection) -> None:
    now = time.time()
    lease = Lease(owner="o", expires_at=now - 1)
    repo.insert_job(conn, _new("j1"), now=now, expires_at=now + 60, lease=lease)
    assert repo.abandoned(conn, now=now, max_attempts=2) == []
    assert [j.id for j in repo.abandoned(conn, now=now, max_attempts=1)] == ["j1"]


def test_expanding_parameters_are_refused_and_set_columns_come_from_params(
    conn: Connection,
) -> None:
    expanding = Prepared(select(jobs.c.id).where(jobs.c.status.in_(bindparam("s", expanding=True))))
    with pytest.raises(ValueError, match="expanding"):
        expanding.rows(conn, {"s": ["QUEUED"]})
    set_revoked = Prepared(update(api_keys).where(api_keys.c.id == bindparam("b_id")))
    conn.execute(api_keys.insert().values(id="k2", prefix="p", key_hash="h2", created_at=1.0))
    assert set_revoked.rows(conn, {"b_id": "k2", "revoked_at": 3.0}) == []
    assert conn.execute(select(api_keys.c.revoked_at).where(api_keys.c.id == "k2")).scalar() == 3.0
