"""The upload store in an S3-compatible bucket (``files.backend: s3``): every replica
sees the same files.

Layout under ``files.s3.prefix``: ``<owner dir>/<id>.bin`` holds the bytes (with its
content type, owner and expiry as object metadata) and ``<owner dir>/<id>.json`` the
record, written last: the record is what makes a file visible, so an upload whose
replica dies before it (a multipart upload never completed, or a ``.bin`` without its
record) is never listed nor served. A key's listing lists only its own prefix.

Uploads stream: bytes gather into one part of ``files.s3.part_bytes`` at a time (the
memory one upload holds, whatever its size); the first full part starts a multipart
upload, a smaller file is one PUT. Expiry is enforced on every read; the sweeper (every
``files.sweep_interval_s``, on each replica: deleting twice is harmless) removes
expired files and ``.bin`` objects left without a record for ``ORPHAN_GRACE_S``.
Multipart uploads a dead replica never completed are the bucket's to clean: give it
an ``AbortIncompleteMultipartUpload`` lifecycle rule (README, "Upload store").

Caps: the per-file cap, a key's share and file count (counted from its listing when
an upload starts, plus this replica's uploads in flight). ``files.max_total_bytes`` is
not enforced on a bucket: size the bucket (quota) instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import msgspec

from proxy.config_storage import S3Settings, UploadStoreConfig
from proxy.s3 import S3Client
from proxy.tempfiles import UploadSet
from proxy.upload_disk import ANONYMOUS, ORPHAN_GRACE_S, StoredFile, is_uuid, owner_dir
from proxy.upload_errors import (
    file_too_large,
    share_full,
    too_many_files,
    unknown_cursor,
)
from proxy.upload_store import Draft, Page

log = logging.getLogger("imagegate")
_decode = msgspec.json.Decoder(StoredFile).decode
_CHUNK = 256 * 1024


@dataclass
class ObjectDraft(Draft):
    """An upload on its way to the bucket: ``part`` is its ``.bin`` key."""

    upload_id: str | None = None
    etags: list[str] = field(default_factory=list)
    buffer: bytearray = field(default_factory=bytearray)


@dataclass
class _Writing:
    """One owner's uploads in flight on this replica."""

    count: int = 0
    size: int = 0


class ObjectStore:
    def __init__(
        self,
        config: UploadStoreConfig,
        client: S3Client,
        *,
        keyed: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert config.s3 is not None
        self.config = config
        self.settings: S3Settings = config.s3
        self.client = client
        self.keyed = keyed
        self._clock = clock
        self._root = self.settings.prefix.strip("/")
        # Records are written once and never change: a cache by owner prefix, then key,
        # pruned to what each listing finds (so bounded by what the bucket holds).
        self._records: dict[str, dict[str, StoredFile]] = {}
        self._writing: dict[str | None, _Writing] = {}

    def _dir(self, owner: str | None) -> str:
        base = owner_dir(owner)
        return f"{self._root}/{base}/" if self._root else f"{base}/"

    def _key(self, owner: str | None, file_id: str, ext: str) -> str:
        return f"{self._dir(owner)}{file_id}.{ext}"

    def _cache(self, key: str) -> dict[str, StoredFile]:
        return self._records.setdefault(key.rpartition("/")[0], {})

    def _prune(self, names: set[str]) -> None:
        """Forget cached records the listing of the whole store lacks."""
        for prefix, cache in list(self._records.items()):
            for key in [k for k in cache if k not in names]:
                del cache[key]
            if not cache:
                del self._records[prefix]

    async def load(self) -> None:
        """Nothing to index: the bucket is read when asked. A first sweep runs
        with the sweeper."""

    async def _record(
        self, key: str, owner: str | None, file_id: str
    ) -> StoredFile | None:
        record = self._cache(key).get(key)
        if record is None:
            data = await self.client.read(key)
            if data is None:
                return None
            try:
                record = _decode(data)
            except msgspec.DecodeError:
                return None
            if record.file_id != file_id or record.owner != owner:
                return None
            self._cache(key)[key] = record
        return record

    async def lookup(
        self, file_id: str, *, owner: str | None = None
    ) -> StoredFile | None:
        """``owner``'s live file ``file_id``, read from the bucket (another replica
        may have deleted it: the cache alone would not know)."""
        if (owner is None and self.keyed) or not is_uuid(file_id):
            return None
        key = self._key(owner, file_id, "json")
        self._cache(key).pop(key, None)
        record = await self._record(key, owner, file_id)
        if record is None or record.expires_at <= self._clock():
            return None
        return record

    async def _owned(self, owner: str | None) -> list[StoredFile]:
        """``owner``'s complete files (a record and its bytes), oldest first."""
        entries = await self.client.list(self._dir(owner))
        names = {e.key for e in entries}
        cache = self._records.get(self._dir(owner).rstrip("/"), {})
        for key in [k for k in cache if k not in names]:
            del cache[key]
        found: list[StoredFile] = []
        for entry in entries:
            stem, _, ext = entry.key.rpartition("/")[2].partition(".")
            if ext != "json" or entry.key[:-4] + "bin" not in names:
                continue
            record = await self._record(entry.key, owner, stem)
            if record is not None:
                found.append(record)
        found.sort(key=lambda r: (r.created_at, r.file_id))
        return found

    async def list(
        self,
        *,
        owner: str | None = None,
        purpose: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Page:
        if owner is None and self.keyed:
            return Page([], False)
        now = self._clock()
        files = [r for r in await self._owned(owner) if r.expires_at > now]
        start = 0
        if after is not None:
            ids = [r.file_id for r in files]
            if after not in ids:
                raise unknown_cursor(after)
            start = ids.index(after) + 1
        chosen = [r for r in files[start:] if purpose in (None, r.purpose)]
        return Page(chosen[:limit], len(chosen) > limit)

    async def write(
        self,
        chunks: AsyncIterable[bytes],
        *,
        file_name: str,
        mimetype: str,
        owner: str | None = None,
    ) -> Draft:
        writing = self._writing.setdefault(owner, _Writing())
        stored = 0
        if self.keyed:
            owned = await self._owned(owner)
            stored = sum(r.file_size for r in owned)
            if len(owned) + writing.count >= self.config.max_files_per_key:
                raise too_many_files(self.config)
        file_id = str(uuid.uuid4())
        draft = ObjectDraft(
            file_id, owner, self._key(owner, file_id, "bin"), file_name, mimetype
        )
        writing.count += 1
        try:
            async for chunk in chunks:
                self._reserve(draft, writing, stored, len(chunk))
                draft.buffer += chunk
                if len(draft.buffer) >= self.settings.part_bytes:
                    await self._flush(draft)
            if draft.upload_id is None:
                await self.client.put(
                    draft.part, bytes(draft.buffer), self._meta(draft)
                )
            else:
                if draft.buffer:
                    await self._flush(draft)
                await self.client.complete(draft.part, draft.upload_id, draft.etags)
            draft.buffer = bytearray()
        except BaseException:
            await self.discard(draft)
            raise
        return draft

    def _meta(self, draft: Draft) -> dict[str, str]:
        expires = self._clock() + self.config.retention_s
        return {
            "Content-Type": draft.mimetype,
            "x-amz-meta-owner": draft.owner or ANONYMOUS,
            "x-amz-meta-expires-at": str(int(expires)),
        }

    async def _flush(self, draft: ObjectDraft) -> None:
        if draft.upload_id is None:
            draft.upload_id = await self.client.start_multipart(
                draft.part, self._meta(draft)
            )
        body, draft.buffer = bytes(draft.buffer), bytearray()
        number = len(draft.etags) + 1
        draft.etags.append(
            await self.client.put_part(draft.part, draft.upload_id, number, body)
        )

    def _reserve(self, draft: Draft, writing: _Writing, stored: int, n: int) -> None:
        if draft.size + n > self.config.max_file_bytes:
            raise file_too_large(self.config)
        if self.keyed and stored + writing.size + n > self.config.key_bytes:
            raise share_full(self.config)
        draft.size += n
        writing.size += n

    def _release(self, draft: Draft) -> None:
        if draft.done:
            return
        draft.done = True
        writing = self._writing[draft.owner]
        writing.count -= 1
        writing.size -= draft.size

    async def publish(self, draft: Draft, purpose: str | None) -> StoredFile:
        """Write ``draft``'s record: from now on the file is visible everywhere."""
        record = draft.record(purpose, self._clock(), self.config.retention_s)
        key = self._key(draft.owner, draft.file_id, "json")
        try:
            headers = {"Content-Type": "application/json"}
            await self.client.put(key, msgspec.json.encode(record), headers)
        except BaseException:
            await self.discard(draft)
            raise
        self._release(draft)
        self._cache(key)[key] = record
        return record

    async def discard(self, draft: Draft) -> None:
        """Remove what ``draft`` wrote (best effort: the sweeper and the bucket's
        lifecycle rule catch what a dead store leaves) and give back its share."""
        self._release(draft)
        try:
            await asyncio.shield(self._undo(draft))
        except Exception:
            log.warning("upload store: an abandoned upload awaits the sweeper")

    async def _undo(self, draft: Draft) -> None:
        if isinstance(draft, ObjectDraft) and draft.upload_id is not None:
            await self.client.abort(draft.part, draft.upload_id)
        await self.client.delete(draft.part)

    async def delete(self, file_id: str, *, owner: str | None = None) -> bool:
        record = await self.lookup(file_id, owner=owner)
        if record is None:
            return False
        await self._remove([record])
        return True

    async def _remove(self, records: Sequence[StoredFile]) -> None:
        for record in records:
            # The record first: the file is gone for everyone at once.
            key = self._key(record.owner, record.file_id, "json")
            self._cache(key).pop(key, None)
            await self.client.delete(key)
            await self.client.delete(self._key(record.owner, record.file_id, "bin"))

    async def materialize(self, record: StoredFile, uploads: UploadSet) -> str:
        """A temp file of the request holding ``record``'s bytes, streamed from the
        bucket; FileNotFoundError when they are gone."""
        key = self._key(record.owner, record.file_id, "bin")
        async with self.client.call("GET", key, ok=(200, 404)) as resp:
            if resp is None:
                raise FileNotFoundError(record.file_id)
            path, f = await uploads.new_file()
            try:
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    await f.write(chunk)
                    uploads.wrote(len(chunk))
            finally:
                await asyncio.shield(f.close())
        return path

    async def input_url(self, record: StoredFile) -> str | None:
        ttl = self.settings.presign_inputs_s
        if ttl is None:
            return None
        key = self._key(record.owner, record.file_id, "bin")
        return await self.client.presign(key, ttl)

    async def sweep(self) -> int:
        """Remove expired files, anonymous ones once keys are configured, and bytes
        left without a record; count the expired ones."""
        root = f"{self._root}/" if self._root else ""
        entries = await self.client.list(root)
        names = {e.key for e in entries}
        self._prune(names)
        now = self._clock()
        expired: list[StoredFile] = []
        for entry in entries:
            head, _, name = entry.key.rpartition("/")
            stem, _, ext = name.partition(".")
            owner_name = head.rpartition("/")[2]
            owner = None if owner_name == ANONYMOUS else owner_name[4:]
            if ext == "bin" and entry.key[:-3] + "json" not in names:
                await self._orphan(entry.key, now)
            elif ext == "json" and is_uuid(stem):
                record = await self._record(entry.key, owner, stem)
                if record is None:
                    continue
                if record.expires_at <= now or (self.keyed and owner is None):
                    expired.append(record)
        await self._remove(expired)
        return len(expired)

    async def _orphan(self, key: str, now: float) -> None:
        async with self.client.call("HEAD", key, ok=(200, 404)) as resp:
            if resp is None:
                return
            modified = resp.headers.get("Last-Modified")
        if (
            modified
            and parsedate_to_datetime(modified).timestamp() < now - ORPHAN_GRACE_S
        ):
            await self.client.delete(key)

    async def run_sweeper(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.warning("upload store sweep failed; the next one will retry")
            await asyncio.sleep(self.config.sweep_interval_s)
