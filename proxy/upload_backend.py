"""What the upload store is to the rest of the gateway, whichever backend holds the
bytes: ``proxy.upload_store.UploadStore`` (a local directory, ``files.backend:
local``) or ``proxy.upload_objects.ObjectStore`` (an S3-compatible bucket every
replica shares, ``files.backend: s3``)."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Protocol

from proxy.tempfiles import UploadSet
from proxy.upload_store import Draft, Page, StoredFile


class FileStore(Protocol):
    # With client keys configured anonymous files belong to no one.
    keyed: bool

    async def load(self) -> None: ...

    async def lookup(
        self, file_id: str, *, owner: str | None = None
    ) -> StoredFile | None: ...

    async def list(
        self,
        *,
        owner: str | None = None,
        purpose: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Page: ...

    async def write(
        self,
        chunks: AsyncIterable[bytes],
        *,
        file_name: str,
        mimetype: str,
        owner: str | None = None,
    ) -> Draft:
        """Stream ``chunks`` to the store, enforcing the caps; invisible until
        ``publish``, removed by ``discard``."""
        ...

    async def publish(self, draft: Draft, purpose: str | None) -> StoredFile: ...

    async def discard(self, draft: Draft) -> None: ...

    async def delete(self, file_id: str, *, owner: str | None = None) -> bool: ...

    async def materialize(self, record: StoredFile, uploads: UploadSet) -> str:
        """A path in the request's temp files holding ``record``'s bytes (removed
        with the request); FileNotFoundError when the file is gone."""
        ...

    async def input_url(self, record: StoredFile) -> str | None:
        """A URL a provider may fetch ``record`` from, when the store offers one."""
        ...

    async def run_sweeper(self) -> None: ...
