"""The embedded upload store: the files behind ``/v3/upload`` and ``file_id``.

Each owner has a directory: ``key-<name>`` for a client key's files, ``anonymous`` for
files uploaded while no client keys were configured. In it each file is ``<id>.bin``
with its metadata beside it in ``<id>.json``, written once before the file appears.
Ids are random UUIDs made here, and every lookup goes through the in-memory index or
a path built from a canonical UUID, never from what a client sent: path traversal is
impossible by construction.

The directory is the truth: worker processes sharing it each keep an index per owner
and bring one owner's up to date (names only; records they have not seen yet are
read) before listing it or taking an upload for it, so a listing costs what its owner
holds, not what the store holds. The periodic sweep does the same for every owner,
removes expired files and leftovers of uploads that never finished, and, once client
keys are configured, anonymous files, which no key may reach.

The store enforces a per-file cap, a total cap and a per-key share (uploads in flight
included) and a retention time.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import time
import uuid
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass, field

import aiofiles

from proxy import leftovers
from proxy import upload_disk as disk
from proxy.config_storage import UploadStoreConfig
from proxy.errors import InsufficientStorage
from proxy.tempfiles import UploadSet
from proxy.upload_disk import ORPHAN_GRACE_S, StoredFile, owner_dir
from proxy.upload_errors import (
    file_too_large,
    share_full,
    too_many_files,
    unknown_cursor,
)

__all__ = ["ORPHAN_GRACE_S", "Draft", "Page", "StoredFile", "UploadStore", "owner_dir"]

log = logging.getLogger("imagegate")


@dataclass
class _Shelf:
    """One owner's indexed files, in listing order, and the bytes they hold."""

    files: dict[str, StoredFile] = field(default_factory=dict)
    order: list[tuple[float, str]] = field(default_factory=list)
    stored: int = 0
    reserved: int = 0  # bytes of this owner's uploads still being written
    writing: int = 0  # count of those uploads


@dataclass
class Draft:
    """An upload written to its ``.part`` file, not yet visible; its bytes stay
    reserved until ``publish`` or ``discard``."""

    file_id: str
    owner: str | None
    part: str
    file_name: str
    mimetype: str
    size: int = 0
    done: bool = False

    def record(self, purpose: str | None, now: float, retention_s: float) -> StoredFile:
        """The record that makes this upload visible, as every backend writes it."""
        return StoredFile(
            file_id=self.file_id,
            file_name=self.file_name,
            file_size=self.size,
            file_mimetype=self.mimetype,
            purpose=purpose,
            created_at=now,
            expires_at=now + retention_s,
            owner=self.owner,
        )


@dataclass(frozen=True)
class Page:
    files: list[StoredFile]
    has_more: bool


class UploadStore:
    def __init__(
        self,
        config: UploadStoreConfig,
        directory: str,
        *,
        keyed: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.directory = directory
        # With client keys configured anonymous files belong to no one.
        self.keyed = keyed
        self._clock = clock
        self._shelves: dict[str | None, _Shelf] = {}
        self._stored = 0  # bytes of the indexed files
        self._reserved = 0  # bytes of uploads still being written
        self._pending: set[str] = set()  # ids of uploads still being written
        self._made: set[str | None] = set()  # owners whose directory exists
        # Names this process's .part files so a successor can tell they are debris.
        self._part_suffix: str | None = None

    @property
    def used_bytes(self) -> int:
        return self._stored + self._reserved

    def _dir(self, owner: str | None) -> str:
        return os.path.join(self.directory, owner_dir(owner))

    def path(self, record: StoredFile) -> str:
        return os.path.join(self._dir(record.owner), f"{record.file_id}.bin")

    def _shelf(self, owner: str | None) -> _Shelf:
        shelf = self._shelves.get(owner)
        if shelf is None:
            shelf = self._shelves[owner] = _Shelf()
        return shelf

    def _add(self, record: StoredFile) -> None:
        shelf = self._shelf(record.owner)
        if record.file_id in shelf.files:
            return
        shelf.files[record.file_id] = record
        bisect.insort(shelf.order, (record.created_at, record.file_id))
        shelf.stored += record.file_size
        self._stored += record.file_size

    def _drop(self, owner: str | None, file_id: str) -> StoredFile | None:
        shelf = self._shelf(owner)
        record = shelf.files.pop(file_id, None)
        if record is not None:
            key = (record.created_at, record.file_id)
            del shelf.order[bisect.bisect_left(shelf.order, key)]
            shelf.stored -= record.file_size
            self._stored -= record.file_size
        return record

    async def _sync(self, owner: str | None) -> None:
        """Bring ``owner``'s index up to date with the directory.

        Only ids indexed before the scan began are dropped when missing, so a file
        this process publishes meanwhile is not lost from its own index.
        """
        known = frozenset(self._shelf(owner).files)
        present, new = await asyncio.to_thread(
            disk.scan, self._dir(owner), owner, known
        )
        for file_id in known - present:
            self._drop(owner, file_id)
        for record in new:
            self._add(record)

    async def load(self) -> None:
        """Index the files a previous run left; drop expired, orphaned and crashed
        uploads' files, and anonymous ones once keys are configured."""
        await self.sweep()

    async def lookup(
        self, file_id: str, *, owner: str | None = None
    ) -> StoredFile | None:
        """``get``, falling back to the directory for a file another worker wrote."""
        if file_id not in self._shelf(owner).files and disk.is_uuid(file_id):
            record = await asyncio.to_thread(
                disk.read_record, self._dir(owner), file_id, owner
            )
            if record is not None:
                self._add(record)
        return self.get(file_id, owner=owner)

    def get(self, file_id: str, *, owner: str | None = None) -> StoredFile | None:
        """``owner``'s file ``file_id`` unless expired; None is the anonymous owner."""
        if owner is None and self.keyed:
            return None
        record = self._shelf(owner).files.get(file_id)
        if record is None or record.expires_at <= self._clock():
            return None
        return record

    async def list(
        self,
        *,
        owner: str | None = None,
        purpose: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Page:
        """``owner``'s live files oldest first, up to ``limit`` after file ``after``.

        The cost is that of the owner's own files: other owners' are never read.
        """
        if owner is None and self.keyed:
            return Page([], False)
        await self._sync(owner)
        shelf = self._shelf(owner)
        start = 0
        if after is not None:
            cursor = shelf.files.get(after)
            if cursor is None:
                raise unknown_cursor(after)
            start = bisect.bisect_right(shelf.order, (cursor.created_at, after))
        now, found = self._clock(), list[StoredFile]()
        for i in range(start, len(shelf.order)):
            record = shelf.files[shelf.order[i][1]]
            if record.expires_at <= now or purpose not in (None, record.purpose):
                continue
            if len(found) == limit:
                return Page(found, True)
            found.append(record)
        return Page(found, False)

    async def save(
        self,
        chunks: AsyncIterable[bytes],
        *,
        file_name: str,
        mimetype: str,
        purpose: str | None,
        owner: str | None = None,
    ) -> StoredFile:
        """Stream ``chunks`` into a new file, enforcing the caps, and publish it."""
        draft = await self.write(
            chunks, file_name=file_name, mimetype=mimetype, owner=owner
        )
        return await self.publish(draft, purpose)

    async def write(
        self,
        chunks: AsyncIterable[bytes],
        *,
        file_name: str,
        mimetype: str,
        owner: str | None = None,
    ) -> Draft:
        """Stream ``chunks`` into a new ``.part`` file, enforcing the per-file and
        total caps and the owner's share; nothing is visible until ``publish``."""
        shelf = self._shelf(owner)
        if self.keyed:
            # Other workers' uploads count too: the owner's share is exact at start.
            await self._sync(owner)
            self._check_count(shelf)
        if self._part_suffix is None:
            tag = await asyncio.to_thread(leftovers.process_tag)
            self._part_suffix = f".{tag}.part" if tag else ".part"
        file_id = str(uuid.uuid4())
        path = os.path.join(self._dir(owner), file_id + self._part_suffix)
        draft = Draft(file_id, owner, path, file_name, mimetype)
        self._pending.add(file_id)
        shelf.writing += 1
        try:
            if owner not in self._made:
                await asyncio.to_thread(os.makedirs, self._dir(owner), 0o700, True)
                self._made.add(owner)
            async with aiofiles.open(path, "xb") as f:
                async for chunk in chunks:
                    self._reserve(draft, shelf, len(chunk))
                    await f.write(chunk)
        except BaseException:
            await self.discard(draft)
            raise
        return draft

    def _check_count(self, shelf: _Shelf) -> None:
        if len(shelf.files) + shelf.writing >= self.config.max_files_per_key:
            raise too_many_files(self.config)

    def _reserve(self, draft: Draft, shelf: _Shelf, n: int) -> None:
        if draft.size + n > self.config.max_file_bytes:
            raise file_too_large(self.config)
        if self.keyed and shelf.stored + shelf.reserved + n > self.config.key_bytes:
            raise share_full(self.config)
        if self.used_bytes + n > self.config.max_total_bytes:
            raise InsufficientStorage(
                "the upload store is full; delete files or try later",
                code="upload_store_full",
            )
        draft.size += n
        shelf.reserved += n
        self._reserved += n

    def _release(self, draft: Draft) -> None:
        if draft.done:
            return
        draft.done = True
        shelf = self._shelf(draft.owner)
        shelf.reserved -= draft.size
        shelf.writing -= 1
        self._reserved -= draft.size
        self._pending.discard(draft.file_id)

    async def publish(self, draft: Draft, purpose: str | None) -> StoredFile:
        """Write ``draft``'s record and make the file visible, all or nothing."""
        record = draft.record(purpose, self._clock(), self.config.retention_s)
        try:
            await disk.write_record(self._record_path(record), record)
            await asyncio.to_thread(os.replace, draft.part, self.path(record))
        except BaseException:
            await self.discard(draft)
            raise
        self._release(draft)
        self._add(record)
        return record

    async def discard(self, draft: Draft) -> None:
        """Remove ``draft``'s files and give back its reservation."""
        record = os.path.join(self._dir(draft.owner), f"{draft.file_id}.json")
        paths = [draft.part, record]
        # Shielded: a second cancellation must not leave the files behind.
        await asyncio.shield(asyncio.to_thread(disk.unlink, paths))
        self._release(draft)

    async def materialize(self, record: StoredFile, uploads: UploadSet) -> str:
        return await uploads.link(self.path(record))

    async def input_url(self, record: StoredFile) -> str | None:
        return None  # a local file has no URL a provider could fetch

    def _record_path(self, record: StoredFile) -> str:
        return os.path.join(self._dir(record.owner), f"{record.file_id}.json")

    async def delete(self, file_id: str, *, owner: str | None = None) -> bool:
        record = await self.lookup(file_id, owner=owner)
        if record is None:
            return False
        await self._remove([record])
        return True

    async def _remove(self, records: Sequence[StoredFile]) -> None:
        paths: list[str] = []
        for record in records:
            self._drop(record.owner, record.file_id)
            paths += [self.path(record), self._record_path(record)]
        await asyncio.to_thread(disk.unlink, paths)

    async def sweep(self) -> int:
        """Bring every owner's index up to date, remove expired files, anonymous ones
        once keys are configured, and debris; count the expired ones."""
        await asyncio.to_thread(disk.migrate, self.directory)
        owners = await asyncio.to_thread(disk.owners, self.directory)
        for owner in owners:
            await self._sync(owner)
        now = self._clock()
        expired = [
            r for s in self._shelves.values() for r in s.files.values()
            if r.expires_at <= now
        ]  # fmt: skip
        await self._remove(expired)
        if self.keyed and (unreachable := list(self._shelf(None).files.values())):
            log.warning(
                "upload store: removing anonymous files no client key may use",
                extra={"files": len(unreachable)},
            )
            await self._remove(unreachable)
        keep = self._pending | {i for s in self._shelves.values() for i in s.files}
        dirs = [self.directory, *(self._dir(owner) for owner in owners)]
        await asyncio.to_thread(disk.remove_orphans, dirs, keep)
        return len(expired)

    async def run_sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            try:
                await self.sweep()
            except OSError:
                log.exception("upload store sweep failed")
