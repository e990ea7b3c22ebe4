"""Temp files for uploaded parts, owned by an ``UploadSet`` that removes them all.

Every path out of a request (success, validation error, upstream error, client
disconnect, cancellation) passes through ``UploadSet.__aexit__``; the process-wide temp
directory is removed at shutdown as the last resort, and by the next start when the
process was killed before (``proxy.leftovers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from types import TracebackType

import aiofiles
from aiofiles.threadpool.binary import AsyncBufferedIOBase
from prometheus_client import Gauge

from proxy import leftovers
from proxy.metrics import adder


class TempDir:
    """Where the process keeps request file parts: its private directory for temp
    files, and its budget for parts held in memory instead (limits.spool_total_bytes).

    Bytes on disk are counted as uploads write and remove files, never by scanning the
    directory, so the figure (and its gauge) costs nothing to keep current.
    """

    def __init__(
        self,
        parent: str | None,
        gauge: Gauge | None = None,
        *,
        memory_budget: int = 0,
        memory_gauge: Gauge | None = None,
    ) -> None:
        # Named for this process: the next start removes it if this one is killed.
        self.path = leftovers.make_dir(parent, "imagegate-tmp.")
        self._bytes = 0
        self._gauge = None if gauge is None else adder(gauge)
        # The process's budget for file parts held in memory instead of on disk.
        self.memory_free = memory_budget
        self._memory_gauge = None if memory_gauge is None else adder(memory_gauge)

    def hold_memory(self, count: int) -> bool:
        """Reserve ``count`` bytes of the memory budget; False if it is spent."""
        if count > self.memory_free:
            return False
        self.memory_free -= count
        if self._memory_gauge is not None:
            self._memory_gauge(count)
        return True

    def release_memory(self, count: int) -> None:
        self.memory_free += count
        if self._memory_gauge is not None:
            self._memory_gauge(-count)

    def add(self, delta: int) -> None:
        self._bytes += delta
        if self._gauge is not None:
            self._gauge(delta)

    def bytes_on_disk(self) -> int:
        return self._bytes

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class UploadSet:
    """The temp files of one request; all removed when the ``async with`` ends."""

    def __init__(self, directory: str | TempDir) -> None:
        self._owner = directory if isinstance(directory, TempDir) else None
        self._dir = directory.path if isinstance(directory, TempDir) else directory
        self._paths: list[str] = []
        self._bytes = 0
        # Bytes of this request's file parts held in memory (limits.spool_bytes).
        self._spooled = 0

    def hold(self, count: int, limit: int) -> bool:
        """Whether ``count`` more bytes may stay in memory: within this request's
        ``limit`` and the process's budget, which lends them until ``close()``."""
        if self._spooled + count > limit:
            return False
        if self._owner is not None and not self._owner.hold_memory(count):
            return False
        self._spooled += count
        return True

    def release(self, count: int) -> None:
        """Give back held bytes that went to disk after all."""
        self._spooled -= count
        if self._owner is not None:
            self._owner.release_memory(count)

    def wrote(self, count: int) -> None:
        """Account ``count`` bytes written to one of this set's files."""
        self._bytes += count
        if self._owner is not None:
            self._owner.add(count)

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
        written, self._bytes = self._bytes, 0
        held, self._spooled = self._spooled, 0
        if self._owner is not None:
            if written:
                self._owner.add(-written)
            if held:
                self._owner.release_memory(held)


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
