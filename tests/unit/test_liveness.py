"""Replica liveness on one machine: a process's lock on its id ends with the process, however it
ends, and only ids of the replica form are ever judged."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kinema.jobs.liveness import (
    FileLiveness,
    NoLiveness,
    PostgresLiveness,
    lock_key,
    new_id,
    open_liveness,
)
from tests.conftest import make_settings

HOLD = """
import asyncio, sys, time
from pathlib import Path
from kinema.jobs.liveness import FileLiveness
asyncio.run(FileLiveness(Path(sys.argv[1]), sys.argv[2]).start())
print("held", flush=True)
time.sleep(120)
"""
"""A process that takes its replica lock and then only sleeps (the test kills it)."""


def _holder(directory: Path, replica: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(directory), replica],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _end(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


async def test_a_killed_replica_is_dead_at_once_and_a_running_one_never(tmp_path: Path) -> None:
    directory = tmp_path / "kinema.db.replicas"
    me = FileLiveness(directory, new_id())
    await me.start()
    other, killed = new_id(), new_id()
    running, victim = _holder(directory, other), _holder(directory, killed)
    try:
        assert await me.dead([other, killed, me.id]) == set()
        os.kill(victim.pid, signal.SIGKILL)
        _end(victim)
        begun = time.monotonic()
        assert await me.dead([other, killed, me.id]) == {killed}
        assert time.monotonic() - begun < 1.0
        assert not (directory / killed).exists()  # judged once, then forgotten
        assert await me.dead([killed]) == {killed}  # still dead: no file, no lock
        assert (directory / other).exists()
    finally:
        _end(running)
        await me.close()
    assert not (directory / me.id).exists()  # a clean stop removes its own file


async def test_only_ids_of_the_replica_form_are_judged(tmp_path: Path) -> None:
    me = FileLiveness(tmp_path, new_id())
    await me.start()
    try:
        never_started = new_id()
        unjudged = ["dispatcher-0123456789ab", new_id(judged=False), "replica-xyz", ""]
        assert await me.dead([never_started, *unjudged]) == {never_started}
    finally:
        await me.close()
    assert await NoLiveness(new_id(judged=False)).dead([new_id()]) == set()


async def test_a_replica_cannot_take_a_lock_someone_holds(tmp_path: Path) -> None:
    replica = new_id()
    holder = _holder(tmp_path, replica)
    try:
        with pytest.raises(BlockingIOError):
            await FileLiveness(tmp_path, replica).start()
    finally:
        _end(holder)


def test_lock_keys_are_signed_64_bit_and_distinct() -> None:
    assert lock_key("replica-ffffffffffffffff") == -1
    assert lock_key("replica-7fffffffffffffff") == 2**63 - 1
    assert lock_key("replica-0000000000000000") == 0
    assert lock_key("process-0000000000000000") is None
    assert lock_key("replica-0000000000000000x") is None
    keys = {lock_key(new_id()) for _ in range(1000)}
    assert len(keys) == 1000 and all(k is not None and -(2**63) <= k < 2**63 for k in keys)


def test_the_store_decides_the_liveness(tmp_path: Path) -> None:
    db = tmp_path / "data" / "kinema.db"
    on_file = open_liveness(make_settings(tmp_path, database={"url": f"sqlite:///{db}"}))
    assert isinstance(on_file, FileLiveness) and lock_key(on_file.id) is not None
    assert on_file._dir == tmp_path / "data" / "kinema.db.replicas"
    memory = open_liveness(make_settings(tmp_path, database={"url": "sqlite:///:memory:"}))
    assert isinstance(memory, NoLiveness) and lock_key(memory.id) is None
    pg = open_liveness(make_settings(tmp_path, database={"url": "postgresql+asyncpg://u@h/db"}))
    assert isinstance(pg, PostgresLiveness)
    off = open_liveness(
        make_settings(tmp_path, database={"url": f"sqlite:///{db}"}, jobs={"liveness": False})
    )
    # A process that holds no lock is never taken for a stopped replica by the others.
    assert isinstance(off, NoLiveness) and lock_key(off.id) is None


async def test_replicas_in_one_process_judge_each_other(tmp_path: Path) -> None:
    """A hundred replicas in one process (apps sharing a database file): each lock is its own."""
    me = FileLiveness(tmp_path, new_id())
    await me.start()
    others = [FileLiveness(tmp_path, new_id()) for _ in range(100)]
    await asyncio.gather(*(o.start() for o in others))
    try:
        assert await me.dead([o.id for o in others]) == set()
        await others[0].close()
        assert await me.dead([o.id for o in others]) == {others[0].id}
    finally:
        await asyncio.gather(*(o.close() for o in others[1:]), me.close())
