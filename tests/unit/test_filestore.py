"""The upload store on its own, with a clock the test moves."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.config import Files
from proxy.errors import InsufficientStorage, PayloadTooLarge
from proxy.filestore import ORPHAN_GRACE_S, FileStore
from proxy.tasks import TaskGroup


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _write_old(path: Path) -> None:
    path.write_bytes(b"?")
    old = time.time() - ORPHAN_GRACE_S - 60
    os.utime(path, (old, old))


def _names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _store(tmp_path: Path, clock: Clock, **config: float) -> FileStore:
    return FileStore(Files(**config), str(tmp_path), clock=clock)  # type: ignore[arg-type]


async def test_save_get_list_and_owners(tmp_path: Path) -> None:
    clock = Clock()
    store = _store(tmp_path, clock)
    a = await store.save(
        _chunks(b"ab", b"cd"), file_name="a.png", mimetype="image/png", purpose=None
    )
    clock.now += 1
    b = await store.save(
        _chunks(b"x"), file_name="b.png", mimetype="image/png", purpose="p", owner="k1"
    )
    assert a.file_size == 4
    assert (tmp_path / f"{a.file_id}.bin").read_bytes() == b"abcd"
    assert store.used_bytes == 5
    # Until client keys exist, no owner means every file; an owner sees its own and
    # the unowned ones, never another key's.
    assert await store.list() == [a, b]
    assert await store.list(owner="k1") == [a, b]
    assert await store.list(owner="k2") == [a]
    assert await store.list(purpose="p") == [b]
    assert store.get(b.file_id, owner="k2") is None
    assert store.get(b.file_id, owner="k1") == b
    assert not await store.delete(b.file_id, owner="k2")
    assert await store.delete(b.file_id, owner="k1")
    assert store.used_bytes == 4
    assert store.get("no-such-id") is None


async def test_expiry_and_sweep(tmp_path: Path) -> None:
    clock = Clock()
    store = _store(tmp_path, clock, retention_s=10.0)
    old = await store.save(
        _chunks(b"1"), file_name="", mimetype="image/png", purpose=None
    )
    clock.now += 5
    new = await store.save(
        _chunks(b"2"), file_name="", mimetype="image/png", purpose=None
    )
    _write_old(tmp_path / "orphan.bin")
    (tmp_path / "in-flight.part").write_bytes(b"?")  # young: maybe another worker's
    clock.now += 6
    assert store.get(old.file_id) is None  # expired before any sweep
    assert await store.list() == [new]
    assert await store.sweep() == 1
    assert _names(tmp_path) == [
        f"{new.file_id}.bin",
        f"{new.file_id}.json",
        "in-flight.part",
    ]
    (tmp_path / "in-flight.part").unlink()
    # A restart indexes what is left and drops what expired meanwhile.
    again = _store(tmp_path, clock, retention_s=10.0)
    await again.load()
    assert await again.list() == [new]
    clock.now += 10
    later = _store(tmp_path, clock, retention_s=10.0)
    await later.load()
    assert await later.list() == []
    assert _names(tmp_path) == []


async def test_caps_leave_nothing_behind(tmp_path: Path) -> None:
    store = _store(tmp_path, Clock(), max_file_bytes=4, max_total_bytes=6)
    with pytest.raises(PayloadTooLarge):
        await store.save(
            _chunks(b"abc", b"de"), file_name="", mimetype="image/png", purpose=None
        )
    await store.save(_chunks(b"abcd"), file_name="", mimetype="image/png", purpose=None)
    with pytest.raises(InsufficientStorage):
        await store.save(
            _chunks(b"ab", b"cd"), file_name="", mimetype="image/png", purpose=None
        )
    assert store.used_bytes == 4
    assert len(_names(tmp_path)) == 2


async def test_sweeper_runs_in_the_background(tmp_path: Path) -> None:
    clock = Clock()
    store = _store(tmp_path, clock, retention_s=1.0, sweep_interval_s=0.01)
    await store.save(_chunks(b"1"), file_name="", mimetype="image/png", purpose=None)
    clock.now += 2
    group = TaskGroup()
    group.spawn(store.run_sweeper(), name="sweeper")
    try:
        for _ in range(200):
            if not _names(tmp_path):
                break
            await asyncio.sleep(0.01)
    finally:
        await group.close()
    assert _names(tmp_path) == []


async def test_workers_sharing_a_directory_see_each_other(tmp_path: Path) -> None:
    clock = Clock()
    one, two = _store(tmp_path, clock), _store(tmp_path, clock)
    await one.load()
    await two.load()
    record = await one.save(
        _chunks(b"img"), file_name="a.png", mimetype="image/png", purpose=None
    )
    # The other worker's index has not seen it; its lookup reads the directory.
    assert two.get(record.file_id) is None
    assert await two.lookup(record.file_id) == record
    assert await two.lookup("not-a-uuid") is None
    assert await two.lookup("00000000-0000-4000-8000-000000000000") is None
    assert await two.list() == [record]
    # A sweep by the other worker keeps it: it is in the directory's records.
    await two.sweep()
    assert await two.delete(record.file_id)
    assert await one.list() == []
    assert one.used_bytes == 0
    assert _names(tmp_path) == []
