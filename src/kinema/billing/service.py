"""Keys and credits as use cases: create, authenticate, revoke, grant, balance."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import Connection

from kinema.billing import repository as repo
from kinema.billing.keys import display_prefix, generate_key, hash_key, to_micros
from kinema.billing.repository import KeyRecord
from kinema.errors import Forbidden, NotFound, Unauthorized
from kinema.store.db import Database


@dataclass(frozen=True)
class NewKey:
    key: str
    """The secret itself: shown once, never stored."""
    record: KeyRecord


CACHED_KEYS = 10_000
"""At most this many authenticated keys are remembered (the least recently used go first)."""


class KeyService:
    def __init__(self, db: Database, secret: bytes, *, cache_s: float = 0.0) -> None:
        self._db = db
        self._secret = secret
        self._cache_s = cache_s
        self._cache: OrderedDict[str, tuple[float, KeyRecord]] = OrderedDict()
        """key hash → (read at, monotonic; the record): found keys only, so unknown keys
        cannot fill it."""

    async def create(
        self,
        *,
        name: str = "",
        credits: float = 0.0,
        rate_limit: str | None = None,
        models: list[str] | None = None,
    ) -> NewKey:
        key = generate_key()
        now = time.time()
        record = KeyRecord(
            id="key_" + uuid.uuid4().hex[:20],
            name=name,
            prefix=display_prefix(key),
            balance_micros=to_micros(credits),
            rate_limit=rate_limit,
            models=models,
            created_at=now,
            revoked_at=None,
        )

        def tx(conn: Connection) -> None:
            repo.insert_key(conn, record, hash_key(key, self._secret))
            if record.balance_micros:
                repo.grant(conn, record.id, record.balance_micros, now=now, note="initial credits")

        await self._db.write(tx)
        return NewKey(key=key, record=record)

    async def authenticate(self, key: str | None, model: str | None = None) -> KeyRecord:
        """The key's record; 401 when missing/unknown/revoked, 403 when not allowed ``model``."""
        if not key:
            raise Unauthorized("missing API key: send it in the x-api-key header")
        key_hash = hash_key(key, self._secret)
        record = await self._lookup(key_hash)
        if record is None:
            raise Unauthorized("invalid API key")
        if record.revoked_at is not None:
            raise Unauthorized("this API key has been revoked")
        if model is not None and not record.permits(model):
            raise Forbidden(f"this API key is not permitted to use {model}")
        return record

    async def _lookup(self, key_hash: str) -> KeyRecord | None:
        now = time.monotonic()
        cached = self._cache.get(key_hash)
        if cached is not None and now - cached[0] < self._cache_s:
            self._cache.move_to_end(key_hash)
            return cached[1]
        record = await self._db.read(lambda conn: repo.by_hash(conn, key_hash))
        if record is None or self._cache_s <= 0:
            self._cache.pop(key_hash, None)
            return record
        self._cache[key_hash] = (now, record)
        self._cache.move_to_end(key_hash)
        if len(self._cache) > CACHED_KEYS:
            self._cache.popitem(last=False)
        return record

    async def resolve(self, ref: str) -> KeyRecord:
        """A key by its secret, its id (``key_…``) or a unique display prefix (CLI use), with or
        without the ``…`` that ``kinema keys list`` shows after it."""
        ref = ref.strip().removesuffix("…").removesuffix("...")
        ref_hash = hash_key(ref, self._secret)

        def tx(conn: Connection) -> KeyRecord | None:
            record = repo.by_hash(conn, ref_hash) or repo.by_id(conn, ref)
            if record is None and len(ref) >= 6:
                matches = repo.by_prefix(conn, ref)
                record = matches[0] if len(matches) == 1 else None
            return record

        record = await self._db.read(tx)
        if record is None:
            raise NotFound(f"no API key matches {ref!r}")
        return record

    async def list(self) -> list[KeyRecord]:
        return await self._db.read(repo.all_keys)

    async def revoke(self, ref: str) -> KeyRecord:
        record = await self.resolve(ref)
        now = time.time()
        await self._db.write(lambda conn: repo.revoke(conn, record.id, now))
        self._forget(record.id)
        return record

    def _forget(self, key_id: str) -> None:
        """Drop a key changed by this process from the cache (other processes: key_cache_s)."""
        for key_hash in [h for h, (_, r) in self._cache.items() if r.id == key_id]:
            del self._cache[key_hash]

    async def add_credits(self, ref: str, credits: float, note: str = "operator grant") -> int:
        """Grant (or, negative, take) credits; returns the new balance in micro-credits."""
        record = await self.resolve(ref)
        amount, now = to_micros(credits), time.time()
        return await self._db.write(
            lambda conn: repo.grant(conn, record.id, amount, now=now, note=note)
        )

    async def balance(self, key_id: str) -> int:
        return await self._db.read(lambda conn: repo.balance(conn, key_id))
