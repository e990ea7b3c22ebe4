"""Large buffers are freed off the event loop (``proxy.freeing``): a held answer's once
sent (``proxy.held``), a kept answer's once the memory store forgets it; freeing 256
MiB on the loop was its longest step. The pages go back to the kernel in a worker
thread, and only from a buffer nothing else holds. A large join for the store, and
an answer packed for the bucket and unpacked from it, copy the same bytes."""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import mmap
import os
import threading
from collections.abc import Callable

import aiohttp
import msgspec
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from proxy import freeing, held
from proxy.config_idempotency import IdempotencyConfig
from proxy.idempotency import Answer, Seen, packed, unpacked
from proxy.idempotency_memory import MemoryStore
from proxy.tasks import TaskGroup

MiB = 1024 * 1024


FREED_IN: list[int] = []  # the threads Tracked objects were freed in


class Tracked(bytes):
    """Bytes that say which thread freed them."""

    def __del__(self) -> None:
        FREED_IN.append(threading.get_ident())


async def _until(done: Callable[[], object]) -> None:
    for _ in range(1000):
        if done():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("not done in 5 s")


def test_drop_pages_zeroes_only_whole_pages_inside_the_buffer() -> None:
    assert freeing._ADVISE is not None
    data = bytes([1]) * (5 * mmap.PAGESIZE + 123)
    start = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    assert start is not None
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE - start
    end = (start + len(data)) // mmap.PAGESIZE * mmap.PAGESIZE - start
    freeing._drop_pages(freeing._ADVISE, data)
    assert data[first:end] == bytes(end - first)  # given back: zero pages now
    assert data[:first] == bytes([1]) * first
    assert data[end:] == bytes([1]) * (len(data) - end)


async def test_release_frees_in_a_worker_thread_once_the_last_holder_lets_go() -> None:
    FREED_IN.clear()
    content = os.urandom(held.WHOLE + 1)
    other = [Tracked(content)]
    freeing.release([other[0]])
    await asyncio.sleep(0.05)  # still held elsewhere: untouched
    assert FREED_IN == []
    assert other[0] == content
    other.clear()
    await _until(lambda: FREED_IN)
    assert threading.get_ident() not in FREED_IN  # (_until: not empty)


async def test_a_buffer_held_past_the_wait_is_left_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(freeing, "RELEASE_WAIT_S", 0.02)
    content = os.urandom(held.WHOLE + 1)
    kept = bytes(content)  # as the idempotency store keeps an answer
    freeing.release([kept])
    await _until(lambda: len(freeing._releasing) == 0)
    assert kept == content


async def test_a_held_response_s_body_is_freed_off_the_loop_once_sent(
    aiohttp_server: AiohttpServer,
) -> None:
    FREED_IN.clear()
    content = os.urandom(held.WHOLE + 3 * held.PIECE + 5)

    async def pieces(request: web.Request) -> web.StreamResponse:
        body = Tracked(content)
        return held.HeldResponse([b"[", memoryview(body)[1:], b"]"])

    app = web.Application()
    app.router.add_get("/", pieces)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as s, s.get(server.make_url("/")) as r:
        got = await r.read()
    assert got == b"[" + content[1:] + b"]"
    await _until(lambda: FREED_IN)
    assert threading.get_ident() not in FREED_IN  # (_until: not empty)


async def test_a_held_response_gives_the_loop_a_turn_between_pieces(
    aiohttp_server: AiohttpServer,
) -> None:
    # A client taking every piece at once never made write() wait to drain: the
    # whole body went out in one step of the loop. Each piece now sees a turn of
    # the ticker (another task on the loop) since the one before.
    turns = [0]
    seen: list[int] = []
    content = os.urandom(held.WHOLE + 4 * held.PIECE)

    class Watched(held.HeldResponse):
        async def write(self, data: bytes | bytearray | memoryview) -> None:
            seen.append(turns[0])
            await super().write(data)

    async def ticker() -> None:
        while True:
            turns[0] += 1
            await asyncio.sleep(0)

    async def answer(request: web.Request) -> web.StreamResponse:
        return Watched([content])

    app = web.Application()
    app.router.add_get("/", answer)
    server = await aiohttp_server(app)
    background = TaskGroup()
    background.spawn(ticker(), name="ticker")
    try:
        async with aiohttp.ClientSession() as s, s.get(server.make_url("/")) as r:
            got = await r.read()
    finally:
        await background.close()
    assert got == content
    assert len(seen) == len(content) // held.PIECE
    assert all(b > a for a, b in itertools.pairwise(seen))


async def test_a_large_join_copies_the_pieces_byte_for_byte() -> None:
    body = os.urandom(held.WHOLE + 3 * held.PIECE + 17)
    pieces: list[held.Piece] = [
        memoryview(body)[: held.PIECE + 5],
        b"",
        memoryview(body)[held.PIECE + 5 : -9],
        b',"provider":"x"}',
        body[-9:],
    ]
    got = await held.joined(pieces)
    assert type(got) is bytes
    assert got == b"".join(pieces)
    assert hash(got) == hash(b"".join(pieces))  # a plain bytes, as joined


async def test_a_large_answer_the_memory_store_forgets_is_freed_off_the_loop() -> None:
    FREED_IN.clear()
    size = freeing.LARGE + 1
    store = MemoryStore(IdempotencyConfig(max_bytes=size + 10, max_answer_bytes=size))
    for key in ("first", "second"):  # room for one: the first is forgotten
        assert await store.claim(key, "fp", "owner") is None
        body = Tracked(os.urandom(size))
        await store.keep(key, "owner", Seen("fp", Answer(200, [], body)), 60)
        del body
    assert await store.claim("first", "fp", "again") is None  # forgotten
    await _until(lambda: FREED_IN)
    assert threading.get_ident() not in FREED_IN  # (_until: not empty)


@pytest.mark.parametrize("size", [10, freeing.LARGE + 1, freeing.LARGE + 70_000])
async def test_a_spilled_answer_packs_and_unpacks_as_msgspec_does(size: int) -> None:
    answer = Answer(200, [("Content-Type", "application/json")], os.urandom(size))
    stored = await packed(answer)
    assert stored == msgspec.msgpack.encode(answer)
    back = await unpacked(stored)
    assert back == answer
    assert type(back.body) is bytes


async def test_a_large_stored_answer_that_is_not_one_fails_as_before() -> None:
    stored = msgspec.msgpack.encode([200, [], "x" * (freeing.LARGE + 1)])
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.msgpack.decode(stored, type=Answer)
    with pytest.raises(msgspec.ValidationError) as ours:
        await unpacked(stored)
    assert str(ours.value) == str(caught.value)
