"""The pure parts of ``proxy.idempotency`` and the in-memory store's bounds: expiry,
the oldest finished answers forgotten first, running claims never, the owner check."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from proxy.config import ConfigError, parse_config
from proxy.config_idempotency import IdempotencyConfig
from proxy.errors import InvalidRequest, Overloaded
from proxy.idempotency import (
    Answer,
    Keeper,
    Seen,
    Ticket,
    check_key,
    request_digest,
    store_key,
    worth_keeping,
)
from proxy.idempotency_memory import MemoryStore
from proxy.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answer(size: int) -> Answer:
    return Answer(200, [("Content-Type", "application/json")], b"x" * size)


async def kept(store: MemoryStore, key: str, size: int = 10, ttl: float = 60) -> None:
    assert await store.claim(key, "fp", "owner") is None
    await store.keep(key, "owner", Seen("fp", answer(size)), ttl)


def test_check_key() -> None:
    assert check_key(None) is None
    assert check_key("a" * 255) == "a" * 255
    assert check_key(" ~!") == " ~!"
    for bad in ("", "a" * 256, "\x7f", "é", "a\nb"):
        with pytest.raises(InvalidRequest) as caught:
            check_key(bad)
        assert caught.value.param == "Idempotency-Key"


def test_fingerprint_is_canonical() -> None:
    a = request_digest("POST", "/v3/x", "json", {"a": 1, "b": [1, 2]})
    assert a == request_digest("POST", "/v3/x", "json", {"b": [1, 2], "a": 1})
    assert a != request_digest("POST", "/v3/x", "json", {"a": 1, "b": [2, 1]})
    assert a != request_digest("POST", "/v1/x", "json", {"a": 1, "b": [1, 2]})
    assert a != request_digest("POST", "/v3/x", "form", {"a": 1, "b": [1, 2]})
    assert store_key("key a", "k") != store_key("key b", "k")
    # Long strings enter by their digest: still told apart by their bytes.
    long_a, long_b = "a" * 5000, "a" * 4999 + "b"
    assert request_digest("POST", "/", "json", {"i": [long_a]}) != request_digest(
        "POST", "/", "json", {"i": [long_b]}
    )
    assert request_digest(
        "POST", "/", "json", {"i": [long_a], "n": 1}
    ) == request_digest("POST", "/", "json", {"n": 1, "i": ["a" * 5000]})


@pytest.mark.parametrize(
    ("status", "kept"),
    [(200, True), (400, True), (404, True), (422, True), (408, False),
     (429, False), (500, False), (502, False), (503, False)],
)  # fmt: skip
def test_worth_keeping(status: int, kept: bool) -> None:
    assert worth_keeping(status) is kept


async def test_answers_expire_after_their_ttl() -> None:
    clock = Clock()
    store = MemoryStore(IdempotencyConfig(), clock)
    await kept(store, "k", ttl=60)
    clock.now += 59
    seen = await store.claim("k", "fp", "other")
    assert seen is not None
    assert seen.answer == answer(10)
    clock.now += 2
    assert await store.claim("k", "fp", "other") is None
    assert store.bytes == 0


async def test_the_oldest_finished_answers_go_first() -> None:
    store = MemoryStore(
        IdempotencyConfig(max_entries=3, max_bytes=100, max_answer_bytes=50)
    )
    await kept(store, "a", 40)
    await kept(store, "b", 40)
    await kept(store, "c", 10)
    assert (len(store), store.bytes) == (3, 90)
    await kept(store, "d", 40)  # over both bounds: a goes (entries), then b (bytes)
    assert await store.claim("a", "fp", "x") is None  # forgotten: claimable
    assert (len(store), store.bytes) == (3, 50)
    seen = await store.claim("c", "fp", "x")
    assert seen is not None
    assert seen.answer is not None


async def test_running_claims_are_never_forgotten() -> None:
    store = MemoryStore(IdempotencyConfig(max_entries=2))
    assert await store.claim("a", "fp", "o1") is None
    assert await store.claim("b", "fp", "o2") is None
    with pytest.raises(Overloaded) as caught:
        await store.claim("c", "fp", "o3")
    assert caught.value.code == "idempotency_store_full"
    running = await store.claim("a", "fp", "o4")
    assert running == Seen("fp")


async def test_only_the_owner_keeps_or_drops() -> None:
    store = MemoryStore(IdempotencyConfig())
    assert await store.claim("k", "fp", "owner") is None
    await store.drop("k", "intruder")
    await store.keep("k", "intruder", Seen("fp", answer(1)), 60)
    assert await store.claim("k", "fp", "x") == Seen("fp")
    await store.drop("k", "owner")
    assert await store.claim("k", "fp", "x") is None
    await store.keep("gone", "x", Seen("fp", answer(1)), 60)  # never claimed: ignored
    assert len(store) == 1


async def test_a_waiter_wakes_when_the_answer_is_kept() -> None:
    store = MemoryStore(IdempotencyConfig())
    assert await store.claim("k", "fp", "owner") is None
    waiting = asyncio.ensure_future(store.changed("k", 10))
    await asyncio.sleep(0)
    assert not waiting.done()
    await store.keep("k", "owner", Seen("fp", answer(1)), 60)
    await asyncio.wait_for(waiting, 1)
    await store.changed("absent", 10)  # nothing to wait for
    await store.changed("k", 0.01)  # finished: returns at once
    await store.close()
    assert len(store) == 0


async def test_a_failed_run_frees_its_key() -> None:
    store = MemoryStore(IdempotencyConfig())
    keeper = Keeper(IdempotencyConfig(), store, Metrics(CollectorRegistry()))
    ticket = await keeper.begin("key a", "k", "fp")
    assert isinstance(ticket, Ticket)
    with pytest.raises(RuntimeError):
        async with keeper.running(ticket):
            raise RuntimeError("boom")
    assert len(store) == 0
    await keeper.close()


def test_config_refuses_an_answer_cap_above_the_memory_cap() -> None:
    with pytest.raises(ConfigError, match="max_answer_bytes"):
        parse_config(
            b"providers: {openai: {}}\n"
            b"idempotency: {max_bytes: 1000, max_answer_bytes: 2000}\n"
        )


@pytest.mark.parametrize("stopping", [False, True], ids=["client-left", "shutdown"])
async def test_a_cancelled_caller_leaves_the_work_running_unless_stopping(
    stopping: bool,
) -> None:
    keeper = Keeper(IdempotencyConfig(), MemoryStore(IdempotencyConfig()),
                    Metrics(CollectorRegistry()))  # fmt: skip
    release, finished = asyncio.Event(), []

    async def work() -> str:
        await release.wait()
        finished.append(True)
        return "answer"

    caller = asyncio.ensure_future(keeper.to_the_end(work(), lambda: stopping))
    await asyncio.sleep(0)
    caller.cancel()
    await asyncio.sleep(0.01)
    assert caller.done() is stopping  # the client-left caller waits for the work
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert finished == ([] if stopping else [True])
    await keeper.close()
