"""What ``GET /v3/upload`` costs the store as it fills: one key owns every file,
another owns none. Run: ``python -m bench.upload_listing [files]``.

The figures are the store's own (its directory scan and index), without HTTP.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import AsyncIterator

from proxy.config_storage import UploadStoreConfig
from proxy.upload_store import UploadStore


async def _one() -> AsyncIterator[bytes]:
    yield b"\x89PNG\r\n\x1a\n" + bytes(100)


async def _per_call_ms(store: UploadStore, owner: str, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await store.list(owner=owner)
    return (time.perf_counter() - start) / calls * 1000


async def main(files: int) -> None:
    with tempfile.TemporaryDirectory(prefix="imagegate-bench-") as directory:
        writer = UploadStore(UploadStoreConfig(), directory, keyed=True)
        for _ in range(files):
            await writer.save(
                _one(), file_name="", mimetype="image/png", purpose=None, owner="big"
            )
        # A fresh worker: it has indexed nothing yet.
        store = UploadStore(UploadStoreConfig(), directory, keyed=True)
        rows = [
            ("key owning nothing", await _per_call_ms(store, "empty", 200)),
            ("owner's first page, cold index", await _per_call_ms(store, "big", 1)),
            ("owner's first page, warm index", await _per_call_ms(store, "big", 20)),
        ]
    print(f"{files} stored files")
    for name, ms in rows:
        print(f"  {name:32} {ms:8.2f} ms")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
