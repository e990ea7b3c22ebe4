"""The in-flight benchmark's load: C clients connecting at once, one edit each.

``python -m bench.inflight_client URL BODY CTYPE CLIENTS TIMEOUT OUT``. Each client is
one raw asyncio connection (uvloop): it connects, sends one request (the head, then the
body in 256 KiB writes at the pace the socket takes them), reads the whole reply
(Content-Length, chunked or until close) and closes. All C connect at the same moment;
the open-file limit is raised to its hard limit first.

OUT gets JSON: one row per client, ``[connect_start, connected, first_byte, done,
status, error, reply_bytes, local_port]`` with times on ``time.monotonic()``
(system-wide on Linux, so comparable with the harness's own samples and the gateway's
accept log, which names connections by this port), status 0 and an error kind
(``reset``, ``refused``, ``timeout``, ``eof``, ``other:<name>``) when no reply came.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

WRITE_BLOCK = 256 * 1024
Row = tuple[float, float, float, float, int, str, int, int]


def raise_nofile() -> int:
    """Lift the soft open-file limit to the hard one; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, asyncio.IncompleteReadError | EOFError):
        return "eof"
    return f"other:{type(exc).__name__}"


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> int:
    """Read the reply's body as its head frames it; the body's length."""
    length, chunked = None, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if length is not None:
        await reader.readexactly(length)
        return length
    if not chunked:
        return len(await reader.read())
    total = 0
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        await reader.readexactly(size + 2)
        total += size
        if size == 0:
            return total


async def one(
    host: str, port: int, request: bytes, body: memoryview, limit_s: float
) -> Row:
    start = time.monotonic()
    connected = first = 0.0
    local = 0
    try:
        async with asyncio.timeout(limit_s):
            reader, writer = await asyncio.open_connection(host, port)
            connected = time.monotonic()
            local = writer.get_extra_info("sockname")[1]

            # The head goes out now, in the step that saw the connection made: in a
            # task it waited behind the other clients' 256 KiB body writes in this
            # loop's turn, and at C = 2,000 reached the gateway up to 3.5 s after
            # its accept (bench/turns.py's heads.jsonl).
            writer.write(request)

            async def send() -> None:
                for at in range(0, len(body), WRITE_BLOCK):
                    writer.write(body[at : at + WRITE_BLOCK])
                    await writer.drain()

            # The reply is read while the body goes out: a refusal (503) may come
            # before the body's end, and the body's failed writes then do not count.
            sending = asyncio.ensure_future(send())
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                first = time.monotonic()
                status = int(head.split(b" ", 2)[1])
                size = await _read_body(reader, head)
            except BaseException:
                if sending.done() and sending.exception() is not None:
                    raise sending.exception() from None  # type: ignore[misc]
                raise
            finally:
                sending.cancel()
                writer.transport.abort()
                with contextlib.suppress(BaseException):
                    await sending
    except Exception as exc:  # every failure is a counted kind, never a crash
        return (start, connected, first, time.monotonic(), 0, error_kind(exc), 0, local)
    return (start, connected, first, time.monotonic(), status, "", size, local)


def request_head(url: str, length: int, content_type: str) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
        "User-Agent: imagegate-bench\r\n\r\n"
    )
    return host, port, head.encode("ascii")


async def burst(
    url: str, body: bytes, content_type: str, clients: int, limit_s: float
) -> list[Row]:
    host, port, head = request_head(url, len(body), content_type)
    view = memoryview(body)
    return await asyncio.gather(
        *(one(host, port, head, view, limit_s) for _ in range(clients))
    )


def main(argv: list[str]) -> int:
    url, body_path, content_type, clients, timeout, out = argv
    raise_nofile()
    body = Path(body_path).read_bytes()
    try:
        import uvloop
    except ImportError:  # plain asyncio works too, with more client CPU
        rows = asyncio.run(burst(url, body, content_type, int(clients), float(timeout)))
    else:
        rows = uvloop.run(burst(url, body, content_type, int(clients), float(timeout)))
    Path(out).write_bytes(msgspec.json.encode(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
