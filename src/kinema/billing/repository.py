"""SQL for keys and the credit ledger. Every function takes an open connection so that callers
compose them into one transaction (reserve + insert job).

Statements on the request path are built once with bound parameters and run as
:class:`~kinema.store.prepared.Prepared` (on SQLite, straight on the driver)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Connection, bindparam, exists, func, insert, select, update

from kinema.store.prepared import Prepared
from kinema.store.tables import api_keys, credit_ledger


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    prefix: str
    balance_micros: int
    rate_limit: str | None
    models: list[str] | None
    created_at: float
    revoked_at: float | None

    def permits(self, model: str) -> bool:
        return self.models is None or model in self.models


def _record(row: Any) -> KeyRecord:
    return KeyRecord(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        balance_micros=row.balance_micros,
        rate_limit=row.rate_limit,
        models=row.models,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def insert_key(conn: Connection, record: KeyRecord, key_hash: str) -> None:
    conn.execute(
        insert(api_keys).values(
            id=record.id,
            name=record.name,
            prefix=record.prefix,
            key_hash=key_hash,
            balance_micros=0,
            rate_limit=record.rate_limit,
            models=record.models,
            created_at=record.created_at,
        )
    )


_BY_HASH = Prepared(select(api_keys).where(api_keys.c.key_hash == bindparam("hash")))
_AMOUNT = bindparam("amount", type_=BigInteger)
_MOVE = (
    update(api_keys)
    .where(api_keys.c.id == bindparam("key"))
    .values(balance_micros=api_keys.c.balance_micros + _AMOUNT)
    .returning(api_keys.c.balance_micros)
)
_MOVE_COVERED = Prepared(_MOVE.where(api_keys.c.balance_micros + _AMOUNT >= 0))
_MOVE_ANY = Prepared(_MOVE)
_LEDGER = Prepared(insert(credit_ledger))


def by_hash(conn: Connection, key_hash: str) -> KeyRecord | None:
    row = _BY_HASH.first(conn, {"hash": key_hash})
    return _record(row) if row else None


def by_id(conn: Connection, key_id: str) -> KeyRecord | None:
    row = (conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
    return _record(row) if row else None


def by_prefix(conn: Connection, prefix: str) -> list[KeyRecord]:
    # autoescape: the "_" of every key's "kin_" is a LIKE wildcard otherwise.
    rows = conn.execute(
        select(api_keys).where(api_keys.c.prefix.startswith(prefix, autoescape=True))
    )
    return [_record(r) for r in rows]


def all_keys(conn: Connection) -> list[KeyRecord]:
    rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at))
    return [_record(r) for r in rows]


def revoke(conn: Connection, key_id: str, now: float) -> bool:
    result = conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return result.rowcount == 1


def balance(conn: Connection, key_id: str) -> int:
    value = conn.scalar(select(api_keys.c.balance_micros).where(api_keys.c.id == key_id))
    return int(value or 0)


def _move(
    conn: Connection,
    key_id: str,
    amount: int,
    *,
    kind: str,
    now: float,
    job_id: str | None = None,
    note: str = "",
    require_cover: bool = False,
) -> int | None:
    """Add ``amount`` (negative to take) to the balance and append the ledger row.
    With ``require_cover`` the move happens only if the balance stays ≥ 0; returns None if not."""
    stmt = _MOVE_COVERED if require_cover else _MOVE_ANY
    row = stmt.first(conn, {"key": key_id, "amount": amount})
    if row is None:
        return None
    after = int(row[0])
    _LEDGER.rows(
        conn,
        {
            "key_id": key_id,
            "job_id": job_id,
            "kind": kind,
            "amount_micros": amount,
            "balance_after_micros": after,
            "note": note,
            "created_at": now,
        },
    )
    return after


def grant(conn: Connection, key_id: str, amount: int, *, now: float, note: str) -> int:
    after = _move(conn, key_id, amount, kind="grant", now=now, note=note)
    if after is None:
        raise LookupError(key_id)
    return after


def reserve(conn: Connection, key_id: str, job_id: str, amount: int, *, now: float) -> int | None:
    """Take the price of a job; None when the balance cannot cover it."""
    return _move(conn, key_id, -amount, kind="reserve", job_id=job_id, now=now, require_cover=True)


def refund(
    conn: Connection, key_id: str, job_id: str, amount: int, *, now: float, note: str
) -> int | None:
    """Give a job's reservation back, once: a second refund of the same job does nothing."""
    already = conn.scalar(
        select(exists().where(credit_ledger.c.job_id == job_id, credit_ledger.c.kind == "refund"))
    )
    if already:
        return None
    return _move(conn, key_id, amount, kind="refund", job_id=job_id, now=now, note=note[:200])


def ledger_sum(conn: Connection, key_id: str) -> int:
    """Sum of every ledger row of a key; equals the balance (a test checks the invariant)."""
    value = conn.scalar(
        select(func.coalesce(func.sum(credit_ledger.c.amount_micros), 0)).where(
            credit_ledger.c.key_id == key_id
        )
    )
    return int(value or 0)
