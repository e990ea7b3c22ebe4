"""Micro-benchmark: what an ``Idempotency-Key`` adds to a request's CPU.

The fingerprint of a JSON edit carrying a 1.5 MB data URL, the SHA-256 a multipart
file part pays per MiB as it streams in, and one claim, keep and replay of a 1.5 MB
answer in the in-memory store. Seconds on a shared machine are noisy: run it under
``perf stat -e instructions`` for counts (``--only`` picks one part).

    PYTHONPATH=. .venv/bin/python -m bench.idempotency [--only json|file|store]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import timeit

from prometheus_client import CollectorRegistry

from proxy.config_idempotency import IdempotencyConfig
from proxy.idempotency import Answer, Keeper, Ticket, request_digest
from proxy.idempotency_memory import MemoryStore
from proxy.metrics import Metrics

RUNS = 200


def _json() -> float:
    url = "data:image/png;base64," + base64.b64encode(os.urandom(1_100_000)).decode()
    body = {
        "model": "openai/gpt-image-2",
        "prompt": "a hat",
        "images": [{"image_url": url}],
    }
    return (
        timeit.timeit(
            lambda: request_digest("POST", "/v3/images/edits", "json", body),
            number=RUNS,
        )
        / RUNS
    )


def _file() -> float:
    chunk = os.urandom(64 * 1024)

    def one_mib() -> None:
        sha = hashlib.sha256()
        for _ in range(16):
            sha.update(memoryview(chunk))
        sha.hexdigest()

    return timeit.timeit(one_mib, number=RUNS) / RUNS


def _store() -> float:
    config = IdempotencyConfig()
    keeper = Keeper(config, MemoryStore(config), Metrics(CollectorRegistry()))
    answer = Answer(200, [("Content-Type", "application/json")], os.urandom(1_500_000))

    async def cycle(i: int) -> None:
        ticket = await keeper.begin("key bench", f"k{i}", "fp")
        assert isinstance(ticket, Ticket)
        await keeper.finish(ticket, answer)
        replay = await keeper.begin("key bench", f"k{i}", "fp")
        assert replay is answer

    async def run() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(RUNS):
            await cycle(i)
        return (loop.time() - start) / RUNS

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["json", "file", "store"])
    only = parser.parse_args().only
    parts = {"json": _json, "file": _file, "store": _store}
    labels = {
        "json": "fingerprint, JSON edit with a 1.5 MB data URL",
        "file": "SHA-256 of 1 MiB of a file part, in 64 KiB chunks",
        "store": "memory store: claim, keep and replay a 1.5 MB answer",
    }
    for name, part in parts.items():
        if only in (None, name):
            print(f"{labels[name]}: {part() * 1e6:.0f} us")


if __name__ == "__main__":
    main()
