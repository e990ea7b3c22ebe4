"""Header dimensions of PNG, JPEG and WebP, and the decode slots of ``PixelGate``."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
from pathlib import Path

import pytest
from PIL import Image

from proxy.errors import InvalidRequest
from proxy.models import StoredImage
from proxy.pixels import HEAD_BYTES, PixelGate, dimensions
from tests.images import jpeg_like, png, sized_png, webp_like


def _saved(fmt: str, size: tuple[int, int] = (300, 77), **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (9, 8, 7)).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (_saved("PNG"), "png"),
        (_saved("JPEG"), "jpeg"),
        (_saved("JPEG", progressive=True), "jpeg progressive"),
        (_saved("JPEG", exif=b"Exif\0\0" + bytes(60_000)), "jpeg with exif"),
        (_saved("WEBP"), "webp lossy (VP8)"),
        (_saved("WEBP", lossless=True), "webp lossless (VP8L)"),
        (_saved("WEBP", exif=b"Exif\0\0abc"), "webp extended (VP8X)"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_dimensions_match_what_pillow_reads(data: bytes, kind: str) -> None:
    assert dimensions(data[:HEAD_BYTES]) == Image.open(io.BytesIO(data)).size


def test_animated_webp_gives_its_canvas() -> None:
    frames = [Image.new("RGB", (120, 40), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:])
    assert buf.getvalue()[12:16] == b"VP8X"
    assert dimensions(buf.getvalue()) == (120, 40)


def test_jpeg_frame_header_past_the_head_is_unknown() -> None:
    data = _saved("JPEG", icc_profile=bytes(100_000))
    assert dimensions(data) == (300, 77)
    assert dimensions(data[:HEAD_BYTES]) is None


def test_jpeg_last_frame_header_before_the_scan_wins() -> None:
    # Pillow takes the last SOF it meets, so a small first one must not hide it.
    def sof(w: int, h: int) -> bytes:
        body = struct.pack(">BHHB", 8, h, w, 1) + b"\x01\x11\x00"
        return b"\xff\xc0" + struct.pack(">H", len(body) + 2) + body

    # A fill byte and a standalone (restart) marker between them are skipped.
    data = b"\xff\xd8" + sof(10, 10) + b"\xff\xff\xd0" + sof(13000, 13000) + b"\xff\xda"
    assert dimensions(data) == (13000, 13000)


@pytest.mark.parametrize(
    "head",
    [b"", b"junk", jpeg_like(), webp_like(), b"\x89PNG\r\n\x1a\n", b"\xff\xd8\x00"],
)
def test_unknown_headers_give_none(head: bytes) -> None:
    assert dimensions(head) is None


async def test_check_stored_reads_the_header_of_a_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(sized_png(100))  # a 2x2 IHDR, then filler
    gate = PixelGate(max_pixels=3)
    with pytest.raises(InvalidRequest) as exc:
        await gate.check_stored(
            StoredImage("image/png", 100, "b", path=str(path)), param="image"
        )
    assert exc.value.code == "image_too_large"
    assert "2x2" in exc.value.message
    await PixelGate(max_pixels=4).check_stored(
        StoredImage("image/png", 1, "b", data=png(2, 2)), param="image"
    )


async def test_run_holds_at_most_max_decodes_threads() -> None:
    gate = PixelGate(max_decodes=2)
    release = threading.Event()
    lock = threading.Lock()
    running = [0, 0]  # now, peak

    def work() -> int:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        release.wait(5)
        with lock:
            running[0] -= 1
        return 7

    tasks = [asyncio.ensure_future(gate.run(work)) for _ in range(5)]
    for _ in range(100):
        await asyncio.sleep(0.01)
        if running[0] == 2:
            break
    await asyncio.sleep(0.05)  # time for a third to start, were it allowed
    assert running == [2, 2]
    release.set()
    assert await asyncio.gather(*tasks) == [7] * 5
    assert running[1] == 2


async def test_a_cancelled_request_keeps_the_slot_until_its_thread_ends() -> None:
    gate = PixelGate(max_decodes=1)
    release = threading.Event()
    started = threading.Event()
    second_ran = threading.Event()

    def slow() -> None:
        started.set()
        release.wait(5)

    first = asyncio.ensure_future(gate.run(slow))
    assert await asyncio.to_thread(started.wait, 5)
    first.cancel()
    second = asyncio.ensure_future(gate.run(second_ran.set))
    await asyncio.sleep(0.05)
    assert not second_ran.is_set()  # the cancelled decode still runs
    release.set()
    await second
    assert second_ran.is_set()
    assert first.cancelled()
