"""The upload store on its own, with a clock the test moves."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from proxy.config_storage import UploadStoreConfig
from proxy.errors import InsufficientStorage, InvalidRequest, PayloadTooLarge
from proxy.tasks import TaskGroup
from proxy.upload_store import ORPHAN_GRACE_S, StoredFile, UploadStore


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
    """The files under ``path``, as paths relative to it."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


async def _listed(store: UploadStore, **query: Any) -> list[StoredFile]:
    return (await store.list(**query)).files


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _store(
    tmp_path: Path, clock: Clock, *, keyed: bool = False, **config: float
) -> UploadStore:
    settings = UploadStoreConfig(**config)  # type: ignore[arg-type]
    return UploadStore(settings, str(tmp_path), keyed=keyed, clock=clock)


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
    assert (tmp_path / "anonymous" / f"{a.file_id}.bin").read_bytes() == b"abcd"
    assert (tmp_path / "key-k1" / f"{b.file_id}.bin").read_bytes() == b"x"
    assert store.used_bytes == 5
    # Each owner sees only its own files; None is the anonymous owner, not everyone.
    assert await _listed(store) == [a]
    assert await _listed(store, owner="k1") == [b]
    assert await _listed(store, owner="k2") == []
    assert await _listed(store, owner="k1", purpose="p") == [b]
    assert await _listed(store, purpose="p") == []
    assert store.get(b.file_id, owner="k2") is None
    assert store.get(b.file_id) is None
    assert store.get(b.file_id, owner="k1") == b
    assert not await store.delete(b.file_id, owner="k2")
    assert not await store.delete(b.file_id)
    assert await store.delete(b.file_id, owner="k1")
    assert store.used_bytes == 4
    assert store.get("no-such-id") is None
    # Owners are configured key names; anything else is refused, never a path.
    with pytest.raises(ValueError, match="not a key name"):
        await store.save(
            _chunks(b"y"),
            file_name="",
            mimetype="image/png",
            purpose=None,
            owner="../x",
        )
    assert _names(tmp_path) == [
        f"anonymous/{a.file_id}.bin",
        f"anonymous/{a.file_id}.json",
    ]


async def test_pages_follow_upload_order(tmp_path: Path) -> None:
    clock = Clock()
    store = _store(tmp_path, clock, retention_s=100.0)
    saved = []
    for i in range(5):
        clock.now += 1
        saved.append(
            await store.save(
                _chunks(b"i"),
                file_name="",
                mimetype="image/png",
                purpose="odd" if i % 2 else None,
                owner="k",
            )
        )
    page = await store.list(owner="k", limit=2)
    assert (page.files, page.has_more) == (saved[:2], True)
    page = await store.list(owner="k", limit=2, after=saved[1].file_id)
    assert (page.files, page.has_more) == (saved[2:4], True)
    page = await store.list(owner="k", limit=2, after=saved[3].file_id)
    assert (page.files, page.has_more) == (saved[4:], False)
    assert await _listed(store, owner="k", purpose="odd") == [saved[1], saved[3]]
    with pytest.raises(InvalidRequest) as exc:
        await store.list(owner="other", after=saved[0].file_id)
    assert exc.value.param == "after"
    # An expired file is no longer listed, yet still a cursor until it is swept.
    clock.now = saved[0].expires_at
    page = await store.list(owner="k", after=saved[0].file_id)
    assert page.files == saved[1:]


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
    assert await _listed(store) == [new]
    assert await store.sweep() == 1
    assert _names(tmp_path) == [
        f"anonymous/{new.file_id}.bin",
        f"anonymous/{new.file_id}.json",
        "in-flight.part",
    ]
    (tmp_path / "in-flight.part").unlink()
    # A restart indexes what is left and drops what expired meanwhile.
    again = _store(tmp_path, clock, retention_s=10.0)
    await again.load()
    assert await _listed(again) == [new]
    clock.now += 10
    later = _store(tmp_path, clock, retention_s=10.0)
    await later.load()
    assert await _listed(later) == []
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
    assert await _listed(two) == [record]
    # A sweep by the other worker keeps it: it is in the directory's records.
    await two.sweep()
    assert await two.delete(record.file_id)
    assert await _listed(one) == []
    assert one.used_bytes == 0
    assert _names(tmp_path) == []


async def test_files_of_the_flat_layout_move_to_their_owner(tmp_path: Path) -> None:
    # Before owner directories every file lay in the store's root.
    clock = Clock()
    old = _store(tmp_path / "staging", clock)
    mine = await old.save(
        _chunks(b"k"), file_name="", mimetype="image/png", purpose=None, owner="k"
    )
    anyone = await old.save(
        _chunks(b"a"), file_name="", mimetype="image/png", purpose=None
    )
    for record, sub in ((mine, "key-k"), (anyone, "anonymous")):
        for ext in ("bin", "json"):
            name = f"{record.file_id}.{ext}"
            (tmp_path / "staging" / sub / name).rename(tmp_path / name)
    store = _store(tmp_path, clock, keyed=True)
    await store.load()
    assert await _listed(store, owner="k") == [mine]
    # Anonymous files are nobody's once keys are configured: removed.
    assert await _listed(store) == []
    assert store.get(anyone.file_id) is None
    assert [n for n in _names(tmp_path) if not n.startswith("staging")] == [
        f"key-k/{mine.file_id}.bin",
        f"key-k/{mine.file_id}.json",
    ]
