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
import contextlib
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiofiles
import msgspec

from proxy import leftovers
from proxy.config import Files
from proxy.errors import InsufficientStorage, InvalidRequest, PayloadTooLarge

log = logging.getLogger("imagegate")

_encode = msgspec.json.encode
# A file without a record younger than this may be an upload still being written (by
# this process or another worker sharing the directory); older ones are debris.
ORPHAN_GRACE_S = 3600.0
ANONYMOUS = "anonymous"
_KEY_DIR = "key-"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_UUID_LEN = 36


class StoredFile(msgspec.Struct, frozen=True, kw_only=True):
    file_id: str
    file_name: str
    file_size: int
    file_mimetype: str
    purpose: str | None = None
    created_at: float
    expires_at: float
    # The client key that uploaded it; None: uploaded while no keys were configured.
    owner: str | None = None

    def public(self) -> dict[str, object]:
        """Eden AI's answer shape for one file."""
        return {
            "file_id": self.file_id,
            "file_name": self.file_name,
            "file_size": self.file_size,
            "file_mimetype": self.file_mimetype,
            "purpose": self.purpose,
            "metadata": {},
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
        }


_record_decoder = msgspec.json.Decoder(StoredFile)


def _iso(ts: float) -> str:
    return (
        datetime.fromtimestamp(ts, UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def owner_dir(owner: str | None) -> str:
    """The directory name of ``owner``'s files: owners are configured key names,
    whose pattern (``controls.KeyName``) makes them safe as a path component."""
    if owner is None:
        return ANONYMOUS
    if not _SAFE_NAME.match(owner):
        raise ValueError(f"not a key name: {owner!r}")
    return _KEY_DIR + owner


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


@dataclass(frozen=True)
class Page:
    files: list[StoredFile]
    has_more: bool


class FileStore:
    def __init__(
        self,
        config: Files,
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
        present, new = await asyncio.to_thread(_scan, self._dir(owner), owner, known)
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
        if file_id not in self._shelf(owner).files and _is_uuid(file_id):
            record = await asyncio.to_thread(
                _read_record, self._dir(owner), file_id, owner
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
                raise InvalidRequest(
                    f"'after' names no file of yours ({after!r}); use the "
                    "last_id of the previous page",
                    param="after",
                )
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
            raise InsufficientStorage(
                "this key holds the most files it may "
                f"(files.max_files_per_key = {self.config.max_files_per_key}); "
                "delete some first",
                param="file",
                code="upload_quota_exceeded",
            )

    def _reserve(self, draft: Draft, shelf: _Shelf, n: int) -> None:
        if draft.size + n > self.config.max_file_bytes:
            raise PayloadTooLarge(
                "the file is larger than the upload limit of "
                f"{self.config.max_file_bytes} bytes",
                param="file",
                code="payload_too_large",
            )
        if self.keyed and shelf.stored + shelf.reserved + n > self.config.key_bytes:
            raise InsufficientStorage(
                "this key's share of the upload store is full "
                f"(files.max_bytes_per_key = {self.config.key_bytes} bytes); "
                "delete files or try later",
                param="file",
                code="upload_quota_exceeded",
            )
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
        now = self._clock()
        record = StoredFile(
            file_id=draft.file_id,
            file_name=draft.file_name,
            file_size=draft.size,
            file_mimetype=draft.mimetype,
            purpose=purpose,
            created_at=now,
            expires_at=now + self.config.retention_s,
            owner=draft.owner,
        )
        try:
            await _write_record(self._record_path(record), record)
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
        await asyncio.shield(asyncio.to_thread(_unlink, paths))
        self._release(draft)

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
        await asyncio.to_thread(_unlink, paths)

    async def sweep(self) -> int:
        """Bring every owner's index up to date, remove expired files, anonymous ones
        once keys are configured, and debris; count the expired ones."""
        await asyncio.to_thread(_migrate, self.directory)
        owners = await asyncio.to_thread(_owners, self.directory)
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
        await asyncio.to_thread(_remove_orphans, dirs, keep)
        return len(expired)

    async def run_sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            try:
                await self.sweep()
            except OSError:
                log.exception("upload store sweep failed")


async def _write_record(path: str, record: StoredFile) -> None:
    async with aiofiles.open(path, "wb") as f:
        await f.write(_encode(record))


def _owners(directory: str) -> list[str | None]:
    """The owners with a directory in the store."""
    owners: list[str | None] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if entry.name == ANONYMOUS:
                owners.append(None)
            elif entry.name.startswith(_KEY_DIR):
                name = entry.name[len(_KEY_DIR) :]
                if _SAFE_NAME.match(name):
                    owners.append(name)
    return owners


def _scan(
    directory: str, owner: str | None, known: frozenset[str]
) -> tuple[set[str], list[StoredFile]]:
    """The ids of complete files in ``directory``, and the records of those not in
    ``known``."""
    bins: set[str] = set()
    jsons: set[str] = set()
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                stem, _, ext = entry.name.partition(".")
                if ext == "bin":
                    bins.add(stem)
                elif ext == "json":
                    jsons.add(stem)
    except FileNotFoundError:
        return set(), []
    present = bins & jsons
    new = [
        record
        for file_id in present - known
        if (record := _read_record(directory, file_id, owner)) is not None
    ]
    return present, new


def _is_uuid(file_id: str) -> bool:
    try:
        return str(uuid.UUID(file_id)) == file_id
    except ValueError:
        return False


def _read_record(directory: str, file_id: str, owner: str | None) -> StoredFile | None:
    # file_id is a canonical UUID or a name found in the directory: no path trick.
    try:
        with open(os.path.join(directory, f"{file_id}.json"), "rb") as f:
            record = _record_decoder.decode(f.read())
    except (OSError, msgspec.DecodeError):
        return None
    # A record in the wrong owner's directory is not that owner's file.
    if record.file_id != file_id or record.owner != owner:
        return None
    if not os.path.exists(os.path.join(directory, f"{file_id}.bin")):
        return None
    return record


def _remove_orphans(directories: list[str], keep: set[str]) -> None:
    """Remove files of ids not in ``keep`` once older than the grace period, and at
    once ``.part`` files whose writing process is known to be dead."""
    cutoff = time.time() - ORPHAN_GRACE_S
    for directory in directories:
        with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
            for entry in entries:
                stem, _, rest = entry.name.partition(".")
                if stem in keep or entry.is_dir(follow_symlinks=False):
                    continue
                crashed = rest.endswith(".part") and leftovers.is_dead(rest[:-5])
                with contextlib.suppress(FileNotFoundError):
                    if crashed or entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)


def _migrate(directory: str) -> None:
    """Move files of the flat layout (before owner directories) to their owner's."""
    with os.scandir(directory) as entries:
        names = [e.name for e in entries if e.name.endswith(".json")]
    for name in names:
        file_id = name[: -len(".json")]
        if not _is_uuid(file_id):
            continue
        try:
            with open(os.path.join(directory, name), "rb") as f:
                record = _record_decoder.decode(f.read())
        except (OSError, msgspec.DecodeError):
            continue
        if record.file_id != file_id:
            continue
        target = os.path.join(directory, owner_dir(record.owner))
        os.makedirs(target, 0o700, exist_ok=True)
        # The file before its record: a scan never sees a record without its file.
        for ext in ("bin", "json"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(
                    os.path.join(directory, f"{file_id}.{ext}"),
                    os.path.join(target, f"{file_id}.{ext}"),
                )


def _unlink(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
