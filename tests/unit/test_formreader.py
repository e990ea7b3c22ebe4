"""The streaming multipart reader and the body stream's cap and idle timer.

Bodies are fed in chosen chunkings (a delimiter split across reads is the case a
``find``-based reader must get right); the source stands in for aiohttp's
``request.content``, which hands out whatever arrived.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.bodystream import BodyStream, Pace
from proxy.errors import InvalidRequest, PayloadTooLarge, RequestTimeout
from proxy.formreader import FormReader, boundary_of

BOUNDARY = b"XyZ-boundary"


class Chunks:
    """Hands out the given chunks one per read, then end of body."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = list(chunks)

    async def readany(self) -> bytes:
        await asyncio.sleep(0)
        return self.chunks.pop(0) if self.chunks else b""


class Stalls:
    """Gives ``first`` and then never another byte."""

    def __init__(self, first: bytes) -> None:
        self.first: bytes | None = first

    async def readany(self) -> bytes:
        if self.first is not None:
            first, self.first = self.first, None
            return first
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


Parsed = tuple[str | None, str | None, str | None, bool, bytes]


async def parse(
    chunks: Sequence[bytes], boundary: bytes = BOUNDARY, *, cap: int = 1 << 30
) -> list[Parsed]:
    out: list[Parsed] = []
    async with BodyStream(Chunks(chunks), 5.0, cap) as body:
        reader = FormReader(body, boundary)
        while (part := await reader.next()) is not None:
            data = bytearray()
            while chunk := await reader.read():
                assert chunk, "read() hands out no empty chunk before the end"
                data += chunk
            out.append(
                (part.name, part.filename, part.charset, part.nested, bytes(data))
            )
    return out


def form(
    parts: Sequence[tuple[str, bytes, str]],
    boundary: bytes = BOUNDARY,
    *,
    preamble: bytes = b"",
    epilogue: bytes = b"",
) -> bytes:
    out = bytearray(preamble)
    for name, data, extra in parts:
        out += b"--" + boundary + b"\r\n"
        out += f'Content-Disposition: form-data; name="{name}"{extra}\r\n\r\n'.encode()
        out += data + b"\r\n"
    return bytes(out + b"--" + boundary + b"--\r\n" + epilogue)


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
# Bytes that look like the start of a delimiter without being one.
TRICKY = b"a\r\n--XyZ-boundar\r\n-\r\n--XyZ-boundarY\r\n--"
BODY = form(
    [
        ("model", b"openai/gpt-image-2", ""),
        ("prompt", "un chat \u00e9".encode(), ""),
        ("image", PNG, '; filename="cat.png"\r\nContent-Type: image/png'),
        ("image[]", TRICKY, '; filename="x.bin"'),
        ("empty", b"", ""),
    ],
    preamble=b"this preamble is ignored\r\n",
    epilogue=b"and so is this epilogue",
)
EXPECTED: list[Parsed] = [
    ("model", None, None, False, b"openai/gpt-image-2"),
    ("prompt", None, None, False, "un chat \u00e9".encode()),
    ("image", "cat.png", None, False, PNG),
    ("image[]", "x.bin", None, False, TRICKY),
    ("empty", None, None, False, b""),
]


async def test_one_chunk() -> None:
    assert await parse([BODY]) == EXPECTED


async def test_every_two_chunk_split() -> None:
    for at in range(1, len(BODY)):
        assert await parse([BODY[:at], BODY[at:]]) == EXPECTED, at


async def test_byte_by_byte() -> None:
    assert await parse([BODY[i : i + 1] for i in range(len(BODY))]) == EXPECTED


@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(
        st.tuples(
            st.sampled_from(["image", "image[]", "mask", "prompt", "n", "x[a][b]"]),
            st.binary(max_size=300)
            | st.sampled_from([TRICKY, b"\r\n--", b"--XyZ-boundary", b"\r\n\r\n"]),
        ),
        max_size=6,
    ),
    cuts=st.lists(st.integers(min_value=1, max_value=4000), max_size=12),
)
def test_any_form_in_any_chunking(
    parts: list[tuple[str, bytes]], cuts: list[int]
) -> None:
    body = form([(name, data, "") for name, data in parts])
    points = sorted({c for c in cuts if c < len(body)})
    chunks = [
        body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)
    ]
    got = asyncio.run(parse(chunks))
    assert got == [(name, None, None, False, data) for name, data in parts]


async def test_part_headers() -> None:
    body = (
        b"--B\r\n"  # an empty header block: no name
        b"\r\nno headers\r\n"
        b"--B  \t\r\n"  # transport padding after the delimiter
        b'content-disposition: form-data; name="t"\r\n'
        b"CONTENT-TYPE: text/plain; charset=ISO-8859-1\r\n"
        b"X-Other: 1\r\n\r\n"
        b"caf\xe9\r\n"
        b"--B\r\n"
        b"Content-Type: multipart/mixed; boundary=c\r\n"
        b"Content-Disposition: form-data; name=\"n\"; filename*=UTF-8''%E2%82%AC.png\r\n"
        b"\r\n--c--\r\n"
        b"--B--"
    )
    assert await parse([body], b"B") == [
        (None, None, None, False, b"no headers"),
        ("t", None, "ISO-8859-1", False, b"caf\xe9"),
        ("n", "\u20ac.png", None, True, b"--c--"),
    ]


async def test_skipping_an_unread_part() -> None:
    async with BodyStream(Chunks([BODY[:50], BODY[50:]]), 5.0, 1 << 20) as body:
        reader = FormReader(body, BOUNDARY)
        names = []
        while (part := await reader.next()) is not None:
            names.append(part.name)
    assert names == [p[0] for p in EXPECTED]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "ends before the closing boundary"),
        (b"no delimiter at all", "ends before the closing boundary"),
        (form([("a", b"x", "")])[:-8], "ends before the closing boundary"),
        (b'--B\nContent-Disposition: form-data; name="a"\n\nx\n--B--\n', "CRLF"),
        (b"--B\r\nno colon here\r\n\r\nx\r\n--B--", "invalid part header line"),
        (b"--B\r\n : v\r\n\r\nx\r\n--B--", "invalid part header line"),
        (b"--B\r\nX-Big: " + b"h" * 20_000 + b"\r\n\r\nx\r\n--B--", "headers are over"),
        (b"--Bjunk\r\n\r\nx\r\n--B--", "unexpected bytes after a boundary"),
        (b"--B\r\n\r\nunterminated", "ends before the closing boundary"),
    ],
)
async def test_malformed(body: bytes, reason: str) -> None:
    boundary = BOUNDARY if body.startswith(b"--XyZ") else b"B"
    with pytest.raises(InvalidRequest, match=reason):
        await parse([body], boundary)


@pytest.mark.parametrize(
    ("header", "boundary"),
    [
        ("multipart/form-data; boundary=abc", b"abc"),
        ("multipart/form-data;boundary=abc;charset=utf-8", b"abc"),
        ('multipart/form-data; charset=x; BOUNDARY="a b:c"', b"a b:c"),
        ('multipart/form-data; boundary="a\\(b"', b"a(b"),
        ("multipart/form-data; boundary=" + "x" * 70, b"x" * 70),
    ],
)
def test_boundary_of(header: str, boundary: bytes) -> None:
    assert boundary_of(header) == boundary


@pytest.mark.parametrize(
    "header",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=" + "x" * 71,
        'multipart/form-data; boundary="ends in space "',
        "multipart/form-data; boundary=\u00e9",
        'multipart/form-data; boundary=""',
        'multipart/form-data; boundary="a;b"',
    ],
)
def test_bad_boundary(header: str) -> None:
    with pytest.raises(InvalidRequest, match="boundary"):
        boundary_of(header)


async def test_cap_on_the_bytes_read() -> None:
    with pytest.raises(PayloadTooLarge, match="limit of 100 bytes"):
        await parse([b"x" * 60, b"x" * 60], cap=100)


def test_cap_on_the_declared_length() -> None:
    with pytest.raises(PayloadTooLarge):
        BodyStream(Chunks([]), 5.0, 100, length=101)


async def _read_all(body: BodyStream) -> bytes:
    got = b""
    while chunk := await body.read():
        got += chunk
    return got


async def test_a_stalled_body_times_out() -> None:
    stalls = Stalls(b"--B\r\n")

    async def read() -> None:
        async with BodyStream(stalls, 0.05, 1 << 20) as body:
            await _read_all(body)

    with pytest.raises(RequestTimeout, match=r"stalled for over 0\.05 s"):
        await read()
    assert stalls.first is None  # the first chunk was read; the wait for more timed out


async def test_time_spent_by_the_proxy_is_not_idleness() -> None:
    # Reads are instant; the proxy itself takes longer than the timeout in between
    # (a slow disk, say): that is not the client stalling.
    async with BodyStream(Chunks([b"a", b"b", b"c"]), 0.05, 1 << 20) as body:
        got = b""
        while chunk := await body.read():
            got += chunk
            await asyncio.sleep(0.12)
    assert got == b"abc"


async def test_outside_cancellation_is_not_turned_into_a_timeout() -> None:
    async def read_forever() -> None:
        async with BodyStream(Stalls(b""), 10.0, 1 << 20) as body:
            await body.read()
            await body.read()

    # asyncio.timeout cancels the task from outside the stream: its own TimeoutError
    # comes out only if the stream let the cancellation through untouched.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await read_forever()


class Buffered:
    """Like aiohttp's ``request.content``: chunks already received wait in
    ``_buffer`` (and keep its socket paused while they are many) until read."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self._buffer = list(chunks)
        self.reads = 0

    async def readany(self) -> bytes:
        self.reads += 1
        chunks, self._buffer = self._buffer, []
        return b"".join(chunks)


async def test_buffered_bytes_stay_buffered_until_a_turn_is_free() -> None:
    turns = asyncio.Semaphore(1)
    await turns.acquire()  # another body's chunk is being handled
    pace = Pace(grace_s=10.0, min_rate=1, turn=turns)
    source = Buffered([b"first", b"second"])
    async with BodyStream(source, 10.0, 1 << 20, pace=pace) as body:
        read = asyncio.ensure_future(body.read())
        for _ in range(5):
            await asyncio.sleep(0)
        # Not taken out of aiohttp's buffer: taken, they waited here while the
        # socket read on, and 1,000 waiting uploads held their bodies whole.
        assert not read.done()
        assert source.reads == 0
        turns.release()
        assert await read == b"firstsecond"
        assert turns.locked()
    assert not turns.locked()


async def test_a_chunk_waits_for_a_turn_and_a_stall_holds_none() -> None:
    turns = asyncio.Semaphore(1)
    await turns.acquire()  # another body's chunk is being handled
    pace = Pace(grace_s=10.0, min_rate=1, turn=turns)
    stalls = Stalls(b"first")
    async with BodyStream(stalls, 10.0, 1 << 20, pace=pace) as body:
        first = asyncio.ensure_future(body.read())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not first.done()  # arrived, waiting for the turn
        turns.release()
        assert await first == b"first"
        assert turns.locked()  # held while the chunk is handled
        second = asyncio.ensure_future(body.read())
        for _ in range(5):
            await asyncio.sleep(0)
        # Waiting for the client's next bytes: the turn is someone else's to take.
        assert not turns.locked()
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
    assert not turns.locked()


async def test_a_handed_out_chunk_is_not_kept_by_the_reader() -> None:
    head = (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="image"; '
        b'filename="a.png"\r\n\r\n'
    )
    big = bytes(300_000)
    source = Chunks([head, big, b"\r\n--" + BOUNDARY + b"--\r\n"])
    async with BodyStream(source, 5.0, 1 << 30) as body:
        reader = FormReader(body, BOUNDARY)
        assert await reader.next() is not None
        view = await reader.read()
        assert view.obj is big
        del view
        # Only our own name for it (and getrefcount's argument) is left: a body
        # waiting for its client keeps no chunk it already handed out.
        assert sys.getrefcount(big) == 2
        data = b""
        while chunk := await reader.read():
            data += chunk
        assert data == big[len(big) - len(BOUNDARY) - 3 :]


async def test_a_part_without_headers_in_any_two_chunk_split() -> None:
    body = (
        b"--XyZ-boundary\r\n\r\nno headers\r\n"
        + b'--XyZ-boundary\r\nContent-Disposition: form-data; name="n"\r\n\r\n1\r\n'
        + b"--XyZ-boundary--\r\n"
    )
    expected = [
        (None, None, None, False, b"no headers"),
        ("n", None, None, False, b"1"),
    ]
    for at in range(1, len(body)):
        assert await parse([body[:at], body[at:]]) == expected, at


async def test_a_chunk_after_a_split_delimiter_is_not_copied() -> None:
    # The socket's chunk ended inside a delimiter (its CRLF); the next one carries the
    # rest and the image: the image is handed out as a view of that chunk, not of a
    # copy of it joined to the bytes before.
    image = PNG * 64
    second = (
        b'--XyZ-boundary\r\nContent-Disposition: form-data; name="image"\r\n\r\n'
        + image
    )
    chunks = [b"a preamble\r\n", second, b"\r\n--XyZ-boundary--\r\n"]
    async with BodyStream(Chunks(chunks), 5.0, 1 << 30) as body:
        reader = FormReader(body, BOUNDARY)
        part = await reader.next()
        assert part is not None
        assert part.name == "image"
        chunk = await reader.read()
        assert chunk.obj is second
