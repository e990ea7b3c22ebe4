"""A burst of requests arriving together (issue 19): probes answered while the
burst's requests wait to start (``proxy.admission``), refusals decided at the head,
an answered request's unread body discarded within ``LINGER_S``, and a connection
read head first until its request reads its body (``proxy.listener.HeadFirst``)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec
import pytest
import uvloop
from aiohttp import web

from proxy import admission, handlers, listener
from proxy.app import create_app
from proxy.backpressure import STARTS_PER_TURN, Pressure
from proxy.errors import Overloaded
from proxy.listener import AcceptingSite, release
from proxy.state import PRESSURE
from tests.conftest import StartProxy, build_config
from tests.fakes.openai import FakeOpenAI
from tests.fakes.registry import UPSTREAM_KEY
from tests.gateway import Gate, generate

BURST = 3 * STARTS_PER_TURN
GENERATION = msgspec.json.encode({"model": "openai/gpt-image-2", "prompt": "a hat"})


def _post(path: str, body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
        f"\r\nContent-Length: {size}\r\n\r\n"
    ).encode() + body


async def _connected(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def test_healthz_is_answered_before_a_burst_of_heads_has_started(
    start_proxy: StartProxy,
    held: tuple[FakeOpenAI, Gate],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started_before: list[int] = []
    answer = handlers.healthz

    async def healthz(request: web.Request) -> web.StreamResponse:
        started_before.append(request.app[PRESSURE].inflight)
        return await answer(request)

    # Probed as the app routes it (create_app takes the handler from the module).
    monkeypatch.setattr(handlers, "healthz", healthz)
    fake, _ = held
    proxy = await start_proxy({"openai": {"base_url": fake.url}})  # type: ignore[attr-defined]
    port = proxy.port
    assert port is not None
    loop = asyncio.get_running_loop()
    socks = [await _connected(port) for _ in range(BURST + 1)]
    try:
        # Every head sent in the same turn of the client's loop, the probe's last:
        # the server reads them together.
        for sock in socks[:-1]:
            sock.send(_post("/v3/images/generations", GENERATION))
        socks[-1].send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = await asyncio.wait_for(loop.sock_recv(socks[-1], 65536), 10)
        assert reply.startswith(b"HTTP/1.1 200")
        # Without the gate every generation had started (the probe's task ran last
        # of the turn): now at most one turn's starts were ahead of it.
        assert started_before[0] <= STARTS_PER_TURN
        for _ in range(200):
            if proxy.app[PRESSURE].inflight == BURST:
                break
            await asyncio.sleep(0.01)
        assert proxy.app[PRESSURE].inflight == BURST  # the rest start in later turns
    finally:
        for sock in socks:
            sock.close()


async def test_a_refusal_behind_queued_requests_is_decided_at_its_head(
    start_proxy: StartProxy,
    held: tuple[FakeOpenAI, Gate],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started_before: list[int] = []
    overloaded = Pressure._overloaded

    def refuse(pressure: Pressure, what: str) -> Overloaded:
        started_before.append(pressure.inflight)
        return overloaded(pressure, what)

    monkeypatch.setattr(Pressure, "_overloaded", refuse)
    fake, _ = held
    proxy = await start_proxy(
        {"openai": {"base_url": fake.url}},  # type: ignore[attr-defined]
        backpressure={"max_inflight": BURST, "max_inflight_share": 1},
    )
    port = proxy.port
    assert port is not None
    loop = asyncio.get_running_loop()
    socks = [await _connected(port) for _ in range(BURST + 1)]
    try:
        for sock in socks:
            sock.send(_post("/v3/images/generations", GENERATION))
        # The last is one over max_inflight: refused although most of the others had
        # not started yet (they count while queued), never admitted ahead of them.
        reply = await asyncio.wait_for(loop.sock_recv(socks[-1], 65536), 10)
        assert reply.startswith(b"HTTP/1.1 503")
        assert b'"overloaded"' in reply
        # Refused in the turn it arrived, not after the others' starts.
        assert started_before == [STARTS_PER_TURN]
        assert proxy.app[PRESSURE].inflight + proxy.app[PRESSURE].waiting == BURST
    finally:
        for sock in socks:
            sock.close()


async def _refused_upload(
    proxy_port: int, first: bytes, rest: bytes | None
) -> tuple[bytes, bytes]:
    """A refused edit: its head and ``first`` sent, its 503 read, then ``rest`` and a
    probe on the same connection (or nothing, ``rest`` None); what came back."""
    loop = asyncio.get_running_loop()
    sock = await _connected(proxy_port)
    try:
        size = len(first) + (len(rest) if rest is not None else 1 << 20)
        await loop.sock_sendall(sock, _post("/v3/images/edits", first, size))
        answer = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
        if rest is None:
            more = b""
            while chunk := await asyncio.wait_for(loop.sock_recv(sock, 65536), 10):
                more += chunk
            return answer, more
        await loop.sock_sendall(sock, rest)
        await loop.sock_sendall(
            sock, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )
        more = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
        return answer, more
    finally:
        sock.close()


async def _one_in_flight(
    start_proxy: StartProxy, held: tuple[FakeOpenAI, Gate]
) -> tuple[int, asyncio.Task[Any]]:
    fake, gate = held
    proxy = await start_proxy(
        {"openai": {"base_url": fake.url}},  # type: ignore[attr-defined]
        backpressure={"max_inflight": 1},
    )
    first = asyncio.ensure_future(generate(proxy, None))
    for _ in range(200):
        if gate.arrived:
            break
        await asyncio.sleep(0.01)
    assert proxy.port is not None
    return proxy.port, first


async def test_a_refused_upload_gets_its_503_and_its_connection_serves_on(
    start_proxy: StartProxy, held: tuple[FakeOpenAI, Gate]
) -> None:
    port, first = await _one_in_flight(start_proxy, held)
    # The client reads the 503 after sending part of its body, then sends the rest:
    # the body is discarded (in body turns) and the connection kept, as aiohttp's
    # own lingering did.
    answer, more = await _refused_upload(port, b"x" * 65536, b"y" * (1 << 20))
    assert answer.startswith(b"HTTP/1.1 503")
    assert more.startswith(b"HTTP/1.1 200")
    held[1].open()
    await first


async def test_a_refused_upload_that_stalls_is_closed_after_the_linger(
    start_proxy: StartProxy,
    held: tuple[FakeOpenAI, Gate],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(admission, "LINGER_S", 0.3)
    port, first = await _one_in_flight(start_proxy, held)
    start = asyncio.get_running_loop().time()
    answer, more = await _refused_upload(port, b"x" * 1024, None)
    assert answer.startswith(b"HTTP/1.1 503")
    assert more == b""  # closed: the body never came
    assert asyncio.get_running_loop().time() - start < 5  # aiohttp lingered 10 s
    held[1].open()
    await first


async def _head_first(release_it: bool) -> tuple[int, int]:
    """Bytes of a 1 MiB body read before the handler released it, and after."""
    seen: list[int] = []

    async def upload(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)  # turns enough for any read to have happened
        seen.append(request.content.total_bytes)
        if release_it:
            release(request.transport)
        body = await request.read()
        seen.append(len(body))
        return web.Response(text="ok")

    app = web.Application(client_max_size=2 << 20)
    app.router.add_post("/", upload)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = AcceptingSite(runner, "127.0.0.1", 0, backlog=8)
    await site.start()
    loop = asyncio.get_running_loop()
    try:
        sock = await _connected(site.port)
        body = b"z" * (1 << 20)
        sending = loop.create_task(loop.sock_sendall(sock, _post("/", body)))
        reply = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
        await sending
        sock.close()
        assert reply.startswith(b"HTTP/1.1 200")
    finally:
        await runner.cleanup()
    return seen[0], seen[1]


@pytest.mark.parametrize("run", [uvloop.run, asyncio.run], ids=["uvloop", "asyncio"])
def test_a_connection_reads_only_its_head_until_its_request_reads_its_body(
    run: Callable[[Coroutine[Any, Any, tuple[int, int]]], tuple[int, int]],
) -> None:
    before, after = run(_head_first(release_it=True))
    assert before <= listener.HEAD_READ
    assert after == 1 << 20


def test_a_request_that_never_releases_its_body_reads_it_after_hold_max(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # aiohttp answering by itself (a malformed head) never reaches the middleware.
    monkeypatch.setattr(listener, "HOLD_MAX_S", 0.5)
    before, after = uvloop.run(_head_first(release_it=False))
    assert before <= listener.HEAD_READ
    assert after == 1 << 20


def test_a_kept_alive_connection_reads_its_next_request_at_once(
    temp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Requests without a body never release their connection by reading it: the
    # answer does, or the next request would wait HOLD_MAX_S.
    monkeypatch.setattr(listener, "HOLD_MAX_S", 30.0)
    config = build_config(temp_root, {"openai": {"base_url": "http://127.0.0.1:9/v1"}})

    async def scenario() -> tuple[list[bytes], float]:
        app = create_app(config, environ={"OPENAI_API_KEY": UPSTREAM_KEY})
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = AcceptingSite(runner, "127.0.0.1", 0, backlog=8)
        await site.start()
        loop = asyncio.get_running_loop()
        start = loop.time()
        answers = []
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
            for path in ("/healthz", "/v3/images/models", "/healthz"):
                writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r")[0])
                await reader.readexactly(length)
                answers.append(head.split(b"\r\n")[0])
            writer.close()
        finally:
            await runner.cleanup()
        return answers, loop.time() - start

    answers, took = uvloop.run(scenario())
    assert answers == [b"HTTP/1.1 200 OK"] * 3
    assert took < 5


@pytest.mark.parametrize("run", [uvloop.run, asyncio.run], ids=["uvloop", "asyncio"])
def test_pipelined_requests_with_an_unread_body_are_answered_in_order(
    temp_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    run: Callable[[Coroutine[Any, Any, list[bytes]]], list[bytes]],
) -> None:
    # Heads sent in one write, one of them a GET whose body nobody reads, another
    # split across writes at its end: each answered once, in order, with no wait
    # for the release fallback.
    monkeypatch.setattr(listener, "HOLD_MAX_S", 30.0)
    config = build_config(temp_root, {"openai": {"base_url": "http://127.0.0.1:9/v1"}})

    async def scenario() -> list[bytes]:
        app = create_app(config, environ={"OPENAI_API_KEY": UPSTREAM_KEY})
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = AcceptingSite(runner, "127.0.0.1", 0, backlog=8)
        await site.start()
        answers = []
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
            body = b"b" * 40_000
            writer.write(
                b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Length: %d\r\n\r\n%s"
                % (len(body), body)
                + b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r"
            )
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.write(b"\nGET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            async with asyncio.timeout(10):
                for _ in range(4):
                    head = await reader.readuntil(b"\r\n\r\n")
                    lower = head.lower()
                    length = int(lower.split(b"content-length: ")[1].split(b"\r")[0])
                    await reader.readexactly(length)
                    answers.append(head.split(b"\r\n")[0])
            writer.close()
        finally:
            await runner.cleanup()
        return answers

    assert run(scenario()) == [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 404 Not Found",
    ]
