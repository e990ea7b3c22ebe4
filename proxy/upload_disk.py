"""The upload store's files on disk: records, owner directories and debris.

Blocking helpers for ``proxy.upload_store``, which calls them in threads (except the
pure ones). Each owner has a directory (``key-<name>``, ``anonymous``); in it a file is
``<id>.bin`` with its record ``<id>.json``, and an upload still being written is
``<id>.<process tag>.part``.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from datetime import UTC, datetime

import aiofiles
import msgspec

from proxy import leftovers

_encode = msgspec.json.encode
# A file without a record younger than this may be an upload still being written (by
# this process or another worker sharing the directory); older ones are debris.
ORPHAN_GRACE_S = 3600.0
ANONYMOUS = "anonymous"
_KEY_DIR = "key-"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


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


async def write_record(path: str, record: StoredFile) -> None:
    async with aiofiles.open(path, "wb") as f:
        await f.write(_encode(record))


def owners(directory: str) -> list[str | None]:
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


def scan(
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
        if (record := read_record(directory, file_id, owner)) is not None
    ]
    return present, new


def is_uuid(file_id: str) -> bool:
    try:
        return str(uuid.UUID(file_id)) == file_id
    except ValueError:
        return False


def read_record(directory: str, file_id: str, owner: str | None) -> StoredFile | None:
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


def remove_orphans(directories: list[str], keep: set[str]) -> None:
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


def migrate(directory: str) -> None:
    """Move files of the flat layout (before owner directories) to their owner's."""
    with os.scandir(directory) as entries:
        names = [e.name for e in entries if e.name.endswith(".json")]
    for name in names:
        file_id = name[: -len(".json")]
        if not is_uuid(file_id):
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


def unlink(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
