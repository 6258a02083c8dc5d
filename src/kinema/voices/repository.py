"""SQL for voice samples."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, insert, select

from kinema.store.tables import voices


@dataclass(frozen=True)
class Voice:
    id: str
    key_id: str
    name: str
    sample_key: str
    container: str
    duration_s: float
    created_at: float


def insert_voice(conn: Connection, voice: Voice) -> None:
    conn.execute(insert(voices).values(**voice.__dict__))


def owned(conn: Connection, key_id: str, ids: list[str]) -> set[str]:
    """Which of ``ids`` exist and belong to ``key_id``."""
    rows = conn.execute(select(voices.c.id).where(voices.c.key_id == key_id, voices.c.id.in_(ids)))
    return set(rows.scalars())
