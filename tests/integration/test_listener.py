"""The gateway's listening site (``proxy.listener``) on uvloop, as ``serve()`` runs it.

uvloop accepts one connection per turn of the event loop: when each turn serves
thousands of uploads, a burst of clients waited seconds in the kernel's accept
queue (issue 19). The site accepts every waiting connection at each wake-up.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket

import pytest
import uvloop
from aiohttp import web

from proxy import listener
from proxy.listener import AcceptingSite

WAITING = 40
TURNS = 5


async def _turns_to_accept(make_site: type[web.BaseSite] | None) -> int:
    """Connections accepted within ``TURNS`` turns of the loop after ``WAITING``
    clients connected while the loop was busy elsewhere."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site: web.BaseSite
    if make_site is None:
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=128)
    else:
        site = AcceptingSite(runner, "127.0.0.1", 0, backlog=128)
    await site.start()
    port = site.port
    clients = []
    try:
        # Non-blocking connects: the kernel completes each handshake and queues the
        # connection for accept() without the loop taking a turn.
        for _ in range(WAITING):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            clients.append(sock)
        for _ in range(TURNS):
            await asyncio.sleep(0)
        assert runner.server is not None
        return len(runner.server.connections)
    finally:
        for sock in clients:
            sock.close()
        await runner.cleanup()


def test_uvloop_alone_accepts_one_connection_per_turn() -> None:
    # The behaviour the site works around; if uvloop changes it, this says so.
    assert uvloop.run(_turns_to_accept(None)) <= TURNS


def test_the_site_accepts_every_waiting_connection_within_a_few_turns() -> None:
    assert uvloop.run(_turns_to_accept(AcceptingSite)) == WAITING


def test_a_wake_up_accepts_one_batch_and_makes_its_transports_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch is bounded (what it starts must fit a short turn), and each connection
    accepted has its protocol and transport before ``_accept`` returns: no task, no
    turn in between."""
    monkeypatch.setattr(listener, "ACCEPT_BATCH", 8)

    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        made: list[asyncio.BaseTransport] = []

        class Counting(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                made.append(transport)

        protocols: list[Counting] = []

        def factory() -> Counting:
            protocols.append(Counting())
            return protocols[-1]

        with socket.socket() as real:
            real.bind(("127.0.0.1", 0))
            real.listen(64)
            real.setblocking(False)
            clients = [socket.create_connection(real.getsockname()) for _ in range(20)]
            listeners = listener._Listeners(loop, [])
            counts = []
            for _ in range(3):
                listener._accept(loop, real, factory, listeners)
                counts.append(len(protocols))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            counts.append(len(made))
            for transport in made:
                transport.close()
            for client in clients:
                client.close()
            await listeners.wait_closed()
        return counts

    assert uvloop.run(scenario()) == [8, 16, 20, 20]


def test_a_connection_that_fails_to_set_up_is_closed_and_the_batch_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> tuple[int, list[bytes]]:
        loop = asyncio.get_running_loop()
        made: list[asyncio.BaseTransport] = []
        calls = 0

        class Counting(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                made.append(transport)

        def factory() -> Counting:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("broken protocol")
            return Counting()

        with socket.socket() as real:
            real.bind(("127.0.0.1", 0))
            real.listen(8)
            real.setblocking(False)
            clients = [socket.create_connection(real.getsockname()) for _ in range(3)]
            listener._accept(loop, real, factory, listener._Listeners(loop, []))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            # The first client's connection was closed: it reads end of file.
            reads = []
            for client in clients:
                client.settimeout(0.2)
                try:
                    reads.append(client.recv(1))
                except TimeoutError:
                    reads.append(b"open")
                client.close()
            for transport in made:
                transport.close()
        return len(made), reads

    with caplog.at_level(logging.ERROR, logger="imagegate"):
        made, reads = uvloop.run(scenario())
    assert (made, reads) == (2, [b"", b"open", b"open"])
    assert "cannot set up a connection" in caplog.text


def test_the_site_serves_and_stops_listening_on_stop() -> None:
    async def scenario() -> tuple[bytes, bool]:
        async def hello(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = AcceptingSite(runner, "127.0.0.1", 0, backlog=16)
        await site.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = await reader.read()
        writer.close()
        port = site.port
        await runner.cleanup()
        try:
            await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return reply, True
        return reply, False

    reply, refused = uvloop.run(scenario())
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert reply.endswith(b"ok")
    assert refused


class _Refusing:
    """A listening socket's stand-in whose accept() fails with the given errors."""

    def __init__(self, real: socket.socket, errors: list[int]) -> None:
        self.real = real
        self.errors = errors

    def fileno(self) -> int:
        return self.real.fileno()

    def accept(self) -> tuple[socket.socket, object]:
        code = self.errors.pop(0) if self.errors else errno.EAGAIN
        if code == errno.EAGAIN:
            raise BlockingIOError(code, "try again")
        raise OSError(code, os.strerror(code))


def test_out_of_descriptors_pauses_accepting_then_resumes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(listener, "_RETRY_S", 0.01)

    async def scenario() -> tuple[bool, bool, str, str]:
        loop = asyncio.get_running_loop()
        with socket.socket() as real:
            real.bind(("127.0.0.1", 0))
            real.listen()
            real.setblocking(False)
            listeners = listener._Listeners(loop, [])
            # An aborted handshake is skipped; running out of descriptors pauses.
            fake = _Refusing(real, [errno.ECONNABORTED, errno.EMFILE])
            loop.add_reader(real.fileno(), lambda: None)
            listener._accept(loop, fake, None, listeners)  # type: ignore[arg-type]
            paused = not loop.remove_reader(real.fileno())
            await asyncio.sleep(0.05)
            resumed = loop.remove_reader(real.fileno())
            assert listeners.is_serving()
            assert listeners.get_loop() is loop
            listeners.close()
            listeners.close()  # once is enough
            await listeners.wait_closed()
            await listeners.start_serving()
            with pytest.raises(NotImplementedError):
                await listeners.serve_forever()
            return paused, resumed, fake.errors.__repr__(), str(listeners.is_serving())

    with caplog.at_level(logging.WARNING, logger="imagegate"):
        # asyncio's loop: its remove_reader says whether a reader was registered.
        paused, resumed, left, serving = asyncio.run(scenario())
    assert (paused, resumed, left, serving) == (True, True, "[]", "False")
    assert "cannot accept connections" in caplog.text


def test_a_taken_port_fails_the_start_and_leaves_no_socket() -> None:
    async def scenario() -> str:
        app = web.Application()
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            site = AcceptingSite(runner, "127.0.0.1", taken.getsockname()[1], backlog=8)
            assert site.name.startswith("http://127.0.0.1:")
            try:
                await site.start()
            except OSError as exc:
                return errno.errorcode[exc.errno or 0]
            finally:
                await runner.cleanup()
        return "started"

    assert uvloop.run(scenario()) == "EADDRINUSE"
