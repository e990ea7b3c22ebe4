"""The embedded upload store: the files behind ``/v3/upload`` and ``file_id``.

Each file is ``<id>.bin`` with its metadata beside it in ``<id>.json``. Ids are random
UUIDs made here, and every lookup goes through the in-memory index, never through a
path built from what a client sent: path traversal is impossible by construction.
The store enforces a per-file cap, a total cap (uploads in flight included) and a
retention time; ``run_sweeper`` removes expired files in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from datetime import UTC, datetime

import aiofiles
import msgspec

from proxy.config import Files
from proxy.errors import InsufficientStorage, PayloadTooLarge

log = logging.getLogger("imagegate")

_encode = msgspec.json.encode
# A file without a record younger than this may be an upload still being written (by
# this process or another worker sharing the directory); older ones are debris.
ORPHAN_GRACE_S = 3600.0


class StoredFile(msgspec.Struct, frozen=True, kw_only=True):
    file_id: str
    file_name: str
    file_size: int
    file_mimetype: str
    purpose: str | None = None
    created_at: float
    expires_at: float
    # The client key that uploaded it, once client keys exist; None: anyone's.
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


class FileStore:
    def __init__(
        self,
        config: Files,
        directory: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.directory = directory
        self._clock = clock
        self._index: dict[str, StoredFile] = {}
        self._stored = 0  # bytes of the indexed files
        self._reserved = 0  # bytes of uploads still being written
        self._pending: set[str] = set()  # ids of uploads still being written

    @property
    def used_bytes(self) -> int:
        return self._stored + self._reserved

    def _path(self, file_id: str, ext: str) -> str:
        return os.path.join(self.directory, f"{file_id}.{ext}")

    def _add(self, record: StoredFile) -> None:
        self._index[record.file_id] = record
        self._stored += record.file_size

    def _drop(self, file_id: str) -> None:
        self._stored -= self._index.pop(file_id).file_size

    def path(self, record: StoredFile) -> str:
        return self._path(record.file_id, "bin")

    async def refresh(self) -> None:
        """Rebuild the index from the directory.

        The directory is the truth: worker processes sharing it each keep an index,
        and this brings one up to date with what the others wrote or deleted.
        """
        records = await asyncio.to_thread(_scan, self.directory)
        self._index, self._stored = {}, 0
        for record in records:
            self._add(record)

    async def load(self) -> None:
        """Index the files a previous run left; drop expired and orphaned ones."""
        await self.sweep()

    async def lookup(
        self, file_id: str, *, owner: str | None = None
    ) -> StoredFile | None:
        """``get``, falling back to the directory for a file another worker wrote."""
        if file_id not in self._index and _is_uuid(file_id):
            record = await asyncio.to_thread(_read_record, self.directory, file_id)
            if record is not None and file_id not in self._index:
                self._add(record)
        return self.get(file_id, owner=owner)

    def get(self, file_id: str, *, owner: str | None = None) -> StoredFile | None:
        record = self._index.get(file_id)
        if record is None or record.expires_at <= self._clock():
            return None
        if owner is not None and record.owner not in (None, owner):
            return None
        return record

    async def list(
        self, *, owner: str | None = None, purpose: str | None = None
    ) -> list[StoredFile]:
        await self.refresh()
        now = self._clock()
        return sorted(
            (
                r
                for r in self._index.values()
                if r.expires_at > now
                and (owner is None or r.owner in (None, owner))
                and (purpose is None or r.purpose == purpose)
            ),
            key=lambda r: (r.created_at, r.file_id),
        )

    async def save(
        self,
        chunks: AsyncIterable[bytes],
        *,
        file_name: str,
        mimetype: str,
        purpose: str | None,
        owner: str | None = None,
    ) -> StoredFile:
        """Stream ``chunks`` into a new file, enforcing the per-file and total caps."""
        file_id = str(uuid.uuid4())
        part = self._path(file_id, "part")
        size = 0
        self._pending.add(file_id)
        try:
            async with self._reservation() as reserve:
                async with aiofiles.open(part, "xb") as f:
                    async for chunk in chunks:
                        size += len(chunk)
                        self._check_size(size)
                        reserve(len(chunk))
                        await f.write(chunk)
                now = self._clock()
                record = StoredFile(
                    file_id=file_id,
                    file_name=file_name,
                    file_size=size,
                    file_mimetype=mimetype,
                    purpose=purpose,
                    created_at=now,
                    expires_at=now + self.config.retention_s,
                    owner=owner,
                )
                await _write_record(self._path(file_id, "json"), record)
                await asyncio.to_thread(os.replace, part, self.path(record))
                self._add(record)
        except BaseException:
            await asyncio.shield(
                asyncio.to_thread(_unlink, [part, self._path(file_id, "json")])
            )
            raise
        finally:
            self._pending.discard(file_id)
        return record

    def _check_size(self, size: int) -> None:
        if size > self.config.max_file_bytes:
            raise PayloadTooLarge(
                "the file is larger than the upload limit of "
                f"{self.config.max_file_bytes} bytes",
                param="file",
                code="payload_too_large",
            )

    async def set_purpose(self, record: StoredFile, purpose: str) -> StoredFile:
        updated = msgspec.structs.replace(record, purpose=purpose)
        await _write_record(self._path(record.file_id, "json"), updated)
        if record.file_id in self._index:
            self._index[record.file_id] = updated
        return updated

    @contextlib.asynccontextmanager
    async def _reservation(self) -> AsyncIterator[Callable[[int], None]]:
        held = 0

        def reserve(n: int) -> None:
            nonlocal held
            if self.used_bytes + n > self.config.max_total_bytes:
                raise InsufficientStorage(
                    "the upload store is full; delete files or try later",
                    code="upload_store_full",
                )
            held += n
            self._reserved += n

        try:
            yield reserve
        finally:
            self._reserved -= held

    async def delete(self, file_id: str, *, owner: str | None = None) -> bool:
        record = await self.lookup(file_id, owner=owner)
        if record is None:
            return False
        self._drop(file_id)
        await asyncio.to_thread(
            _unlink, [self.path(record), self._path(file_id, "json")]
        )
        return True

    async def sweep(self) -> int:
        """Remove expired files, and orphans old enough not to be uploads in flight
        (in this process or another); count the expired ones."""
        await self.refresh()
        now = self._clock()
        expired = [r for r in self._index.values() if r.expires_at <= now]
        paths: list[str] = []
        for record in expired:
            self._drop(record.file_id)
            paths += [self.path(record), self._path(record.file_id, "json")]
        await asyncio.to_thread(_unlink, paths)
        keep = set(self._index) | self._pending
        await asyncio.to_thread(_remove_orphans, self.directory, keep)
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


def _scan(directory: str) -> list[StoredFile]:
    records: list[StoredFile] = []
    for entry in os.scandir(directory):
        if not entry.name.endswith(".json"):
            continue
        try:
            with open(entry.path, "rb") as f:
                record = _record_decoder.decode(f.read())
        except (OSError, msgspec.DecodeError):
            continue
        if entry.name == f"{record.file_id}.json" and os.path.exists(
            os.path.join(directory, f"{record.file_id}.bin")
        ):
            records.append(record)
    return records


def _is_uuid(file_id: str) -> bool:
    try:
        return str(uuid.UUID(file_id)) == file_id
    except ValueError:
        return False


def _read_record(directory: str, file_id: str) -> StoredFile | None:
    # file_id is a canonical UUID (checked by the caller), so this is no path trick.
    try:
        with open(os.path.join(directory, f"{file_id}.json"), "rb") as f:
            record = _record_decoder.decode(f.read())
    except (OSError, msgspec.DecodeError):
        return None
    if record.file_id != file_id:
        return None
    if not os.path.exists(os.path.join(directory, f"{file_id}.bin")):
        return None
    return record


def _remove_orphans(directory: str, keep: set[str]) -> None:
    cutoff = time.time() - ORPHAN_GRACE_S
    for entry in os.scandir(directory):
        if entry.name.partition(".")[0] in keep:
            continue
        with contextlib.suppress(FileNotFoundError):
            if entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)


def _unlink(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
