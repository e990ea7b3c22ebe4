"""Temp files for uploaded parts, owned by an ``UploadSet`` that removes them all.

Every path out of a request (success, validation error, upstream error, client
disconnect, cancellation) passes through ``UploadSet.__aexit__``; the process-wide temp
directory is removed at shutdown as the last resort.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
from types import TracebackType

import aiofiles
from aiofiles.threadpool.binary import AsyncBufferedIOBase


class TempDir:
    """The process's private directory for request temp files."""

    def __init__(self, parent: str | None) -> None:
        self.path = tempfile.mkdtemp(prefix="imagegate-", dir=parent)

    def bytes_on_disk(self) -> int:
        total = 0
        for entry in os.scandir(self.path):
            try:
                total += entry.stat().st_size
            except FileNotFoundError:  # removed while we looked
                continue
        return total

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class UploadSet:
    """The temp files of one request; all removed when the ``async with`` ends."""

    def __init__(self, directory: str) -> None:
        self._dir = directory
        self._paths: list[str] = []

    async def __aenter__(self) -> UploadSet:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def new_file(self) -> tuple[str, AsyncBufferedIOBase]:
        """Create a temp file, registered for removal before it is opened."""
        # The name is registered before the file exists, so a cancellation at any
        # point cannot leave an unregistered file behind.
        path = os.path.join(self._dir, f"{secrets.token_hex(16)}.part")
        self._paths.append(path)
        return path, await aiofiles.open(path, "xb")

    async def link(self, source: str) -> str:
        """A private copy of ``source`` (a hard link where possible), removed on exit.

        A stored upload may expire or be deleted while a request still needs it; the
        request's own link keeps the bytes until the request is done.
        """
        path = os.path.join(self._dir, f"{secrets.token_hex(16)}.part")
        self._paths.append(path)
        await asyncio.to_thread(_link_or_copy, source, path)
        return path

    async def close(self) -> None:
        paths, self._paths = self._paths, []
        if paths:
            # Shielded: a second cancellation must not leave files behind.
            await asyncio.shield(asyncio.to_thread(_unlink_all, paths))


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        shutil.copyfile(source, target)  # another filesystem, or no hard links
