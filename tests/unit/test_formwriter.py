"""Forms built by ``proxy.formwriter`` as a server reads them.

Each form is sent by aiohttp's client to an aiohttp test server that parses it with
aiohttp's own multipart reader (an independent implementation) and records the
framing headers: the length must be declared, never chunked, and match the bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.formwriter import Form
from proxy.models import StoredImage

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64


async def _echo(request: web.Request) -> web.Response:
    parts: list[dict[str, Any]] = []
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        assert isinstance(part, aiohttp.BodyPartReader)
        data = await part.read()
        parts.append(
            {
                "disposition": part.headers["Content-Disposition"],
                "type": part.headers.get("Content-Type"),
                "size": len(data),
                "data": data.decode("latin-1"),
            }
        )
    return web.json_response(
        {
            "length": request.headers.get("Content-Length"),
            "te": request.headers.get("Transfer-Encoding"),
            "read": request.content.total_bytes,
            "type": request.headers["Content-Type"],
            "parts": parts,
        }
    )


async def _send(form: Form) -> dict[str, Any]:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/", _echo)
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        answers: list[dict[str, Any]] = []
        for _ in range(2):  # a form makes a fresh payload per send: a retry works
            async with session.post(server.make_url("/"), data=form.payload()) as r:
                assert r.status == 200
                answers.append(await r.json())
    assert answers[0] == answers[1]
    return answers[0]


def _image(data: bytes) -> StoredImage:
    return StoredImage(content_type="image/png", size=len(data), filename="", data=data)


async def test_small_form_in_memory() -> None:
    form = Form()
    form.add_field("model", "gpt-image-2")
    form.add_field("prompt", "un chat \u00e9")
    form.add_file("image[]", _image(PNG), "image.png")
    got = await _send(form)
    assert got["te"] is None
    assert int(got["length"]) == got["read"]
    assert got["type"] == form.content_type
    assert [p["disposition"] for p in got["parts"]] == [
        'form-data; name="model"',
        'form-data; name="prompt"',
        'form-data; name="image[]"; filename="image.png"',
    ]
    assert got["parts"][1]["data"].encode("latin-1").decode() == "un chat \u00e9"
    assert got["parts"][2]["type"] == "image/png"
    assert got["parts"][2]["data"].encode("latin-1") == PNG


async def test_files_on_disk_and_large_forms_stream(tmp_path: Path) -> None:
    big = PNG * 40  # over the one-buffer size: written segment by segment
    path = tmp_path / "image"
    path.write_bytes(big)
    form = Form()
    form.add_field("n", "2")
    form.add_file(
        "image",
        StoredImage(
            content_type="image/png", size=len(big), filename="", path=str(path)
        ),
        "image.png",
    )
    form.add_file("mask", _image(big), "mask.png")
    got = await _send(form)
    assert got["te"] is None
    assert int(got["length"]) == got["read"]
    assert [p["size"] for p in got["parts"]] == [1, len(big), len(big)]
    assert got["parts"][1]["data"].encode("latin-1") == big


async def test_names_are_escaped_as_browsers_do() -> None:
    form = Form()
    form.add_field('a"b\r\nX-Injected: 1', "v")
    form.add_file('i"', _image(PNG), 'x"\n.png')
    got = await _send(form)
    assert [p["disposition"] for p in got["parts"]] == [
        'form-data; name="a%22b%0D%0AX-Injected: 1"',
        'form-data; name="i%22"; filename="x%22%0A.png"',
    ]
