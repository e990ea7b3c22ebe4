"""What an upload holds in memory while it waits for its client (issue 19): the
bytes it has go to its temp file first, so 1,000 half-sent uploads do not each
keep a block of up to 256 KiB."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from proxy.bodystream import BodyStream
from proxy.config import Limits
from proxy.formreader import FormReader, Part
from proxy.models import StoredImage
from proxy.parsing import Chunks, _stream_file, read_form
from proxy.tempfiles import UploadSet
from tests.images import sized_png

BOUNDARY = b"spoolboundary"


class SlowClient:
    """aiohttp's ``request.content`` for a client that sends ``first`` at once and
    the rest only when told: its buffer is empty while it waits."""

    def __init__(self, first: bytes, rest: bytes) -> None:
        self._buffer = [first]
        self._rest = rest
        self.waiting = asyncio.Event()
        self.go_on = asyncio.Event()

    async def readany(self) -> bytes:
        await asyncio.sleep(0)
        if self._buffer:
            return self._buffer.pop()
        self.waiting.set()
        await self.go_on.wait()
        rest, self._rest = self._rest, b""
        return rest


def _on_disk(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir())


async def test_an_upload_waiting_for_its_client_has_written_what_it_got(
    tmp_path: Path,
) -> None:
    image = sized_png(600 * 1024)
    head = (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
        b"openai/gpt-image-2\r\n--" + BOUNDARY + b"\r\n"
        b'Content-Disposition: form-data; name="prompt"\r\n\r\n'
        b"a hat\r\n--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="image";'
        b' filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
    )
    cut = 200 * 1024  # under the 256 KiB write block
    first = head + image[:cut]
    rest = image[cut:] + b"\r\n--" + BOUNDARY + b"--\r\n"
    client = SlowClient(first, rest)
    limits = Limits()
    async with UploadSet(str(tmp_path)) as uploads:

        async def to_disk(reader: Chunks, part: Part, name: str) -> StoredImage:
            return await _stream_file(reader, part, name, limits, uploads, 0)

        async with BodyStream(client, 10.0, 1 << 24) as body:
            reading = asyncio.ensure_future(
                read_form(FormReader(body, BOUNDARY), limits, to_disk)
            )
            await client.waiting.wait()
            # All the image bytes that came, but a delimiter's length kept back.
            assert _on_disk(tmp_path) >= cut - len(BOUNDARY) - 4
            client.go_on.set()
            form = await reading
        stored = form.images[0]
        assert stored.path is not None
        assert stored.size == len(image)
        assert await asyncio.to_thread(Path(stored.path).read_bytes) == image
    assert not os.listdir(tmp_path)
