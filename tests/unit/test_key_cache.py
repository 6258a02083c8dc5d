"""Authenticated keys are reused for ``billing.key_cache_s``: changes made by another process
apply within that time, changes made by this process at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kinema.billing.service import KeyService
from kinema.errors import Unauthorized
from kinema.store.db import Database, open_database

pytestmark = pytest.mark.unit
SECRET = b"s" * 32


async def _database(tmp_path: Path) -> Database:
    db = open_database(f"sqlite:///{tmp_path}/k.db")
    await db.migrate()
    return db


async def test_a_key_revoked_elsewhere_stops_working_within_the_cache_time(
    tmp_path: Path,
) -> None:
    db = await _database(tmp_path)
    api = KeyService(db, SECRET, cache_s=0.2)
    cli = KeyService(db, SECRET)  # another process, e.g. `kinema keys revoke`
    new = await cli.create(credits=1)
    assert (await api.authenticate(new.key)).id == new.record.id
    await cli.revoke(new.record.id)
    await api.authenticate(new.key)  # still cached
    await asyncio.sleep(0.25)
    with pytest.raises(Unauthorized, match="revoked"):
        await api.authenticate(new.key)
    await db.dispose()


async def test_a_key_revoked_by_this_process_stops_working_at_once(tmp_path: Path) -> None:
    db = await _database(tmp_path)
    keys = KeyService(db, SECRET, cache_s=60)
    new = await keys.create(credits=1)
    await keys.authenticate(new.key)
    await keys.revoke(new.record.id)
    with pytest.raises(Unauthorized, match="revoked"):
        await keys.authenticate(new.key)
    await db.dispose()


async def test_without_a_cache_every_request_reads_the_key(tmp_path: Path) -> None:
    db = await _database(tmp_path)
    api = KeyService(db, SECRET, cache_s=0)
    cli = KeyService(db, SECRET)
    new = await cli.create(credits=1)
    await api.authenticate(new.key)
    await cli.revoke(new.record.id)
    with pytest.raises(Unauthorized, match="revoked"):
        await api.authenticate(new.key)
    with pytest.raises(Unauthorized, match="invalid"):
        await api.authenticate("kin_unknown")
    await db.dispose()
