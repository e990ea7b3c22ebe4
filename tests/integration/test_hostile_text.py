"""Text that is not valid Unicode, and charsets that are not text encodings.

Each case sends the attack over a raw socket (the SDKs and aiohttp refuse to build
these requests) and checks the answer is a 400 naming the field, with one JSON
access-log line and nothing on stderr.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
import pytest
from aiohttp.test_utils import TestServer

from proxy.logs import JsonFormatter
from tests.conftest import CLIENT_KEY, StartProxy
from tests.fakes.openai import FakeOpenAI
from tests.gateway import key_entry
from tests.images import png

B = b"hostileboundary"


def part(name: str, body: bytes, *, headers: bytes = b"") -> bytes:
    return (
        b"--" + B + b'\r\nContent-Disposition: form-data; name="' + name.encode()
        + b'"\r\n' + headers + b"\r\n" + body + b"\r\n"
    )  # fmt: skip


def image_part(disposition: bytes = b'name="image"; filename="a.png"') -> bytes:
    return (
        b"--" + B + b"\r\nContent-Disposition: form-data; " + disposition
        + b"\r\nContent-Type: image/png\r\n\r\n" + png() + b"\r\n"
    )  # fmt: skip


def edit_form(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + B + b"--\r\n"


async def exchange(
    proxy: TestServer,
    path: str,
    body: bytes,
    *,
    content_type: bytes = b"multipart/form-data; boundary=" + B,
    extra: bytes = b"",
) -> tuple[int, dict[str, object]]:
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    try:
        writer.write(
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            + b"Content-Type: " + content_type + b"\r\n" + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )  # fmt: skip
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        payload = await asyncio.wait_for(reader.readexactly(length), 10)
    finally:
        writer.close()
    return int(head.split(b" ", 2)[1]), msgspec.json.decode(payload)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    fmt = JsonFormatter()
    return [
        msgspec.json.decode(fmt.format(r))
        for r in caplog.records
        if r.name == "imagegate.access"
    ]


def assert_refused(
    status: int,
    body: dict[str, object],
    param: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    code: int = 400,
) -> None:
    assert status == code, body
    error = body["error"]
    assert isinstance(error, dict)
    assert error["param"] == param, error
    (line,) = access_lines(caplog)
    assert line["status"] == code
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert capfd.readouterr().err == ""


@pytest.fixture
async def logged_proxy(
    start_proxy: StartProxy,
    fake_openai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> TestServer:
    caplog.set_level(logging.INFO, logger="imagegate.access")
    return await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        server={"log_prompts": True},
    )


ESCAPED_SURROGATE = b"\\ud800"


@pytest.mark.parametrize(
    ("field", "charset"),
    [
        ("model", "unicode_escape"),
        ("prompt", "raw_unicode_escape"),
        ("prompt", "utf-7"),
        ("prompt", "rot13"),
        ("prompt", "hex"),
        ("user", "UTF-16"),
        ("prompt", "nonexistent-codec"),
    ],
)
async def test_multipart_text_charset_must_be_a_text_encoding(
    logged_proxy: TestServer,
    fake_openai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    field: str,
    charset: str,
) -> None:
    fields = {"model": b"openai/gpt-image-2", "prompt": b"edit"}
    fields[field] = ESCAPED_SURROGATE
    parts = [
        part(
            name,
            value,
            headers=(
                b"Content-Type: text/plain; charset=" + charset.encode() + b"\r\n"
                if name == field
                else b""
            ),
        )
        for name, value in fields.items()
    ]
    status, body = await exchange(
        logged_proxy, "/v3/images/edits", edit_form(*parts, image_part())
    )
    assert_refused(status, body, field, caplog, capfd)
    assert fake_openai.received == []


async def test_form_charset_field_must_be_a_text_encoding(
    logged_proxy: TestServer,
    fake_openai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    form = edit_form(
        part("_charset_", b"unicode_escape"),
        part("model", b"openai/gpt-image-2"),
        part("prompt", ESCAPED_SURROGATE),
        image_part(),
    )
    status, body = await exchange(logged_proxy, "/v3/images/edits", form)
    assert_refused(status, body, "_charset_", caplog, capfd)
    assert fake_openai.received == []


@pytest.mark.parametrize("charset", ["ISO-8859-1", "latin1", "us-ascii", "UTF8"])
async def test_real_text_charsets_are_accepted(
    logged_proxy: TestServer, fake_openai: FakeOpenAI, charset: str
) -> None:
    text = "caf\xe9" if "ascii" not in charset else "cafe"
    form = edit_form(
        part("model", b"openai/gpt-image-2"),
        part(
            "prompt",
            text.encode(
                "latin-1" if "8859" in charset or "latin" in charset else "utf-8"
            ),
            headers=b"Content-Type: text/plain; charset=" + charset.encode() + b"\r\n",
        ),
        image_part(),
    )
    status, body = await exchange(logged_proxy, "/v3/images/edits", form)
    assert status == 200, body
    assert fake_openai.last.fields["prompt"] == [text]


@pytest.mark.parametrize(
    "disposition",
    [
        b"name=\"file\"; filename*=unicode_escape''%5Cud800.png",
        b"name=\"file\"; filename*=raw_unicode_escape''%5Cud800.png",
        b"name=\"file\"; filename*=utf-7''%2B2AA-.png",
    ],
)
async def test_upload_filename_must_be_valid_text(
    logged_proxy: TestServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    disposition: bytes,
) -> None:
    status, body = await exchange(
        logged_proxy, "/v3/upload", edit_form(image_part(disposition))
    )
    assert_refused(status, body, "file", caplog, capfd)


async def test_upload_extended_filename_in_utf8_is_kept(
    logged_proxy: TestServer,
) -> None:
    disposition = b"name=\"file\"; filename*=UTF-8''caf%C3%A9.png"
    status, body = await exchange(
        logged_proxy, "/v3/upload", edit_form(image_part(disposition))
    )
    assert status == 200, body
    assert body["file_name"] == "caf\xe9.png"


async def test_edit_part_name_must_be_valid_text(
    logged_proxy: TestServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    form = edit_form(
        part("model", b"openai/gpt-image-2"),
        part("prompt", b"x"),
        image_part(b"name*=unicode_escape''%5Cudc00; filename=\"a.png\""),
    )
    status, body = await exchange(logged_proxy, "/v3/images/edits", form)
    assert_refused(status, body, "name", caplog, capfd)


@pytest.mark.parametrize(
    ("path", "doc", "param"),
    [
        ("/v3/images/generations",
         b'{"model": "openai/gpt-image-2.5-sunburst", "prompt": "\\ud800"}', "prompt"),
        ("/v3/images/generations",
         b'{"model": "openai/gpt-\\udfff", "prompt": "x"}', "model"),
        ("/v3/images/generations",
         b'{"model": "openai/gpt-image-2.5-sunburst", "prompt": "x", "metadata": {"a": "\\uDBFFz"}}',
         "metadata.a"),
        ("/v3/images/edits",
         b'{"model": "openai/gpt-image-2.5-sunburst", "prompt": "x", "images": '
         b'[{"image_url": "\\ud83d"}]}', "images[0].image_url"),
        ("/v3/images/generations",
         b'{"model": "openai/gpt-image-2.5-sunburst", "prompt": "x", "metadata": {"\\udc00": 1}}',
         "metadata"),
    ],
)  # fmt: skip
async def test_json_lone_surrogate_names_the_field(
    logged_proxy: TestServer,
    fake_openai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    path: str,
    doc: bytes,
    param: str,
) -> None:
    status, body = await exchange(
        logged_proxy, path, doc, content_type=b"application/json"
    )
    assert_refused(status, body, param, caplog, capfd)
    assert fake_openai.received == []


async def test_json_surrogate_pairs_and_escaped_backslashes_are_text(
    logged_proxy: TestServer, fake_openai: FakeOpenAI
) -> None:
    doc = b'{"model": "openai/gpt-image-2.5-sunburst", "prompt": "\\ud83d\\ude00 \\\\ud800"}'
    status, body = await exchange(
        logged_proxy, "/v3/images/generations", doc, content_type=b"application/json"
    )
    assert status == 200, body
    assert fake_openai.last.json is not None
    assert fake_openai.last.json["prompt"] == "\U0001f600 \\ud800"


@pytest.mark.parametrize(
    "header",
    [
        b"Authorization: Bearer igk-\xff\xfe\r\n",
        b"Authorization: Bearer \xc3\x28\r\n",
        b"x-api-key: \xed\xa0\x80\r\n",
        b"api-key: \x80\r\n",
    ],
)
async def test_undecodable_key_bytes_are_an_invalid_key(
    start_proxy: StartProxy,
    fake_openai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    header: bytes,
) -> None:
    caplog.set_level(logging.INFO, logger="imagegate.access")
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        keys={"team": key_entry(CLIENT_KEY)},
    )
    doc = msgspec.json.encode({"model": "openai/gpt-image-2.5-sunburst", "prompt": "x"})
    status, body = await exchange(
        proxy,
        "/v3/images/generations",
        doc,
        content_type=b"application/json",
        extra=header,
    )
    assert status == 401, body
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == "invalid_api_key"
    (line,) = access_lines(caplog)
    assert line["status"] == 401
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert capfd.readouterr().err == ""
    assert fake_openai.received == []


@pytest.mark.parametrize(
    "content_type", [b"application/\xff", b"text/\xc3\x28; charset=\xff"]
)
async def test_undecodable_content_type_is_a_415(
    logged_proxy: TestServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    content_type: bytes,
) -> None:
    status, body = await exchange(
        logged_proxy, "/v3/images/edits", b"{}", content_type=content_type
    )
    assert status == 415, body
    (line,) = access_lines(caplog)
    assert line["status"] == 415
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert capfd.readouterr().err == ""
