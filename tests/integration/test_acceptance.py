"""What acceptance runs caught: header merging, malformed HTTP, limit errors' params."""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import re
import sys
import zlib
from pathlib import Path
from typing import Any

import msgspec
import openai
import pytest
from aiohttp import ClientSession, FormData, web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from proxy.app import create_app
from tests.conftest import UPSTREAM_KEY, StartProxy, build_config
from tests.fakes.openai import FakeOpenAI, Reply
from tests.images import png
from tests.observability.procs import require_binary

CLIENT_TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


async def test_client_header_never_doubles_one_the_gateway_sets(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url, "organization": "org-gateway"}}  # type: ignore[attr-defined]
    )
    body = {
        "model": "openai/gpt-image-2",
        "prompt": "a hat",
        "images": [{"image_url": _data_url(png())}],
        # Other spellings of headers the gateway sets itself (a client's
        # OpenAI-Organization is refused outright: test_edits_json.py).
        "extra_headers": {
            "TraceParent": "00-11111111111111111111111111111111-2222222222222222-01",
            "X-Tenant": "t1",
        },
    }
    async with (
        ClientSession() as s,
        s.post(
            proxy.make_url("/v3/images/edits"),
            json=body,
            headers={"traceparent": CLIENT_TRACE},
        ) as r,
    ):
        assert r.status == 200, await r.text()
    sent = fake_openai.last.headers
    lowered = [name.lower() for name in sent]
    assert len(lowered) == len(set(lowered)), sorted(sent)
    assert sent["OpenAI-Organization"] == "org-gateway"
    assert sent["traceparent"].split("-")[1] == CLIENT_TRACE.split("-")[1]
    assert sent["X-Tenant"] == "t1"


@pytest.mark.parametrize(
    ("files", "param"),
    [
        ({"image": png(64, 64)}, "image"),
        ({"image": png(), "mask": png(64, 64, alpha=0)}, "mask"),
        ({"image": png(), "user": "u" * 65}, "user"),
    ],
)
async def test_oversized_parts_name_their_param(
    start_proxy: StartProxy,
    fake_openai: FakeOpenAI,
    files: dict[str, Any],
    param: str,
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        limits={"max_file_bytes": 1024, "max_field_bytes": 64},
    )
    async with openai.AsyncOpenAI(
        base_url=str(proxy.make_url("/v3")), api_key="unused", max_retries=0
    ) as client:
        with pytest.raises(openai.APIStatusError) as exc:
            await client.images.edit(model="openai/gpt-image-2", prompt="p", **files)
    assert exc.value.status_code == 413
    assert exc.value.code == "payload_too_large"
    assert exc.value.param == param
    assert not fake_openai.received


async def _raw(proxy: TestServer, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_malformed_http_is_a_400_and_a_warning_not_an_error(
    proxy: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    long_url = b"GET /healthz?x=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    long_header = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + b"b" * 9000 + b"\r\n\r\n"
    )
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    many_headers = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"
    with caplog.at_level(logging.INFO, logger="aiohttp.server"):
        for raw in (long_url, long_header, many_headers):
            reply = await _raw(proxy, raw)
            assert reply.split(b" ", 2)[1] == b"400", reply[:100]
    server_lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert [r.levelno for r in server_lines] == [logging.WARNING] * 3
    assert all(not r.exc_info for r in server_lines)
    assert not any("aaaa" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v3/images/edits", "application/json"),
        ("/v3/images/generations", "application/json"),
        ("/v3/images/edits", "multipart/form-data; boundary=b0und"),
        ("/v3/upload", "multipart/form-data; boundary=b0und"),
    ],
)
async def test_undecodable_content_encoding_is_a_400(
    proxy: TestServer,
    caplog: pytest.LogCaptureFixture,
    path: str,
    content_type: str,
) -> None:
    # Not deflate data: the body cannot be decoded, which is the client's fault.
    garbage = b"\xff\xfe\xfd not deflate at all" * 64
    headers = {"Content-Type": content_type, "Content-Encoding": "deflate"}
    async with (
        ClientSession() as s,
        s.post(proxy.make_url(path), data=garbage, headers=headers) as r,
    ):
        assert r.status == 400, await r.text()
        error = (await r.json())["error"]
        # aiohttp drops the connection after this answer: the client must not reuse it.
        assert r.headers["Connection"] == "close"
    assert error["type"] == "invalid_request_error"
    assert "content-encoding" in error["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def _readme_block(repo_root: Path, lang: str, marker: str) -> str:
    blocks: list[str] = re.findall(
        rf"```{lang}\n(.*?)```", (repo_root / "README.md").read_text(), re.S
    )
    return next(b for b in blocks if marker in b)


def _example_images(where: Path) -> None:
    (where / "room.png").write_bytes(png(16, 16, seed=1))
    (where / "lamp.png").write_bytes(png(16, 16, seed=2))
    (where / "mask.png").write_bytes(png(16, 16, alpha=0))


async def test_readme_python_example_runs(
    proxy: TestServer, repo_root: Path, tmp_path: Path
) -> None:
    code = _readme_block(repo_root, "python", "images.edit").replace(
        "http://127.0.0.1:8080", str(proxy.make_url("")).rstrip("/")
    )
    await asyncio.to_thread(_example_images, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert out.decode().split()[1:] == ["0.03037", "openai"]


async def test_readme_json_curl_example_works(
    proxy: TestServer, repo_root: Path, tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    # The shell evaluates the example as written; a stand-in curl hands back its
    # arguments, which are then sent the way curl would send them.
    script = _readme_block(repo_root, "sh", "application/json")
    stub = 'curl() { printf "%s\\0" "$@"; }\n'
    await asyncio.to_thread(_example_images, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", stub + script, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    args = out.decode().split("\0")[:-1]
    url = args[args.index("-s") + 1]
    header = args[args.index("-H") + 1]
    name, _, value = header.partition(": ")
    async with (
        ClientSession() as s,
        s.post(
            proxy.make_url(url.removeprefix("localhost:8080")),
            data=args[args.index("-d") + 1].encode(),
            headers={name: value},
        ) as r,
    ):
        assert r.status == 200, await r.text()
        assert (await r.json())["provider"] == "openai"
    assert fake_openai.last.json is not None


async def test_readme_multipart_curl_example_works(
    proxy: TestServer, repo_root: Path, tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    # The real curl runs the example as written, pointed at the test's proxy.
    require_binary("curl")
    script = _readme_block(repo_root, "sh", "-F model=").replace(
        "localhost:8080", f"{proxy.host}:{proxy.port}"
    )
    await asyncio.to_thread(_example_images, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", script, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    answer = msgspec.json.decode(out)
    assert answer["provider"] == "openai", answer
    assert answer["data"][0]["b64_json"]
    sent = fake_openai.last
    assert [(f.name, f.filename, f.content_type) for f in sent.files] == [
        ("image[]", "room.png", "image/png"),
        ("image[]", "lamp.png", "image/png"),
        ("mask", "mask.png", "image/png"),
    ]
    assert sent.fields["prompt"] == ["Put the lamp on the table"]


async def test_readme_output_promise_matches_gpt_image(
    proxy: TestServer, repo_root: Path
) -> None:
    # The README promised a data: URL for response_format=url; gpt-image refuses it.
    readme = (repo_root / "README.md").read_text()
    bullet = readme[readme.index("- **Output**") : readme.index("- **Cost**")]
    assert 'response_format: "url"` with them is a 400' in " ".join(bullet.split())
    body = {
        "model": "openai/gpt-image-2",
        "prompt": "a hat",
        "response_format": "url",
        "images": [{"image_url": _data_url(png())}],
    }
    async with (
        ClientSession() as s,
        s.post(proxy.make_url("/v3/images/edits"), json=body) as r,
    ):
        assert r.status == 400
        assert (await r.json())["error"]["param"] == "response_format"


@pytest.mark.parametrize(
    "prefix",
    [
        "data:image/jpeg;base64,",
        "DATA:IMAGE/PNG;BASE64,",
        "data:image/png;name=a;base64,",
    ],
)
async def test_data_urls_go_upstream_under_the_sniffed_type(
    proxy: TestServer, fake_openai: FakeOpenAI, prefix: str
) -> None:
    image = png(8, 8)
    payload = base64.b64encode(image).decode()
    body = {
        "model": "openai/gpt-image-2",
        "prompt": "a hat",
        "images": [{"image_url": prefix + payload}],
    }
    async with (
        ClientSession() as s,
        s.post(proxy.make_url("/v3/images/edits"), json=body) as r,
    ):
        assert r.status == 200, await r.text()
    sent = fake_openai.last.json
    assert sent is not None
    assert sent["images"] == [{"image_url": "data:image/png;base64," + payload}]


async def _served(
    fake_openai: FakeOpenAI, temp_root: Path
) -> tuple[web.AppRunner, int]:
    """The app on a runner like serve()'s (no handler cancellation), and its port."""
    config = build_config(temp_root, {"openai": {"base_url": fake_openai.url}})  # type: ignore[attr-defined]
    env = {"OPENAI_API_KEY": UPSTREAM_KEY}
    app = create_app(config, environ=env, registry=CollectorRegistry())
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


def _access_statuses(caplog: pytest.LogCaptureFixture) -> list[int | None]:
    return [
        getattr(r, "fields", {}).get("status")
        for r in caplog.records
        if r.name == "imagegate.access"
    ]


async def test_client_leaving_before_the_answer_is_a_499(
    fake_openai: FakeOpenAI, temp_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The whole request arrives, the client leaves while the provider works, and the
    # answer then meets a closed connection: logged and counted as 499, no error.
    arrived, hold = asyncio.Event(), asyncio.Event()
    fake_openai.script(Reply(arrived=arrived, hold=hold))
    runner, port = await _served(fake_openai, temp_root)
    part = b'--b\r\nContent-Disposition: form-data; name="%s"%s\r\n\r\n'
    body = (
        part % (b"model", b"") + b"openai/gpt-image-2\r\n"
        + part % (b"prompt", b"") + b"a hat\r\n"
        + part % (b"image", b'; filename="a.png"') + png() + b"\r\n--b--\r\n"
    )  # fmt: skip
    head = (
        b"POST /v3/images/edits HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    try:
        with caplog.at_level(logging.INFO):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head + body)
            await asyncio.wait_for(arrived.wait(), 5)
            writer.close()
            await asyncio.sleep(0.05)
            hold.set()
            for _ in range(100):
                if _access_statuses(caplog):
                    break
                await asyncio.sleep(0.02)
    finally:
        await runner.cleanup()
    assert _access_statuses(caplog) == [499]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_client_leaving_mid_body_is_no_error_in_the_log(
    fake_openai: FakeOpenAI, temp_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Served the way serve() does: test servers cancel handlers of lost connections,
    # imagegate does not, so the handler sees the body read fail instead.
    runner, port = await _served(fake_openai, temp_root)
    multipart = (
        b"POST /v3/images/edits HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 9999\r\n\r\n"
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
        + png()
    )
    json_head = (
        b"POST /v3/images/generations HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    body_at = multipart.index(b"\r\n\r\n") + 4
    cuts = (multipart[:body_at], multipart[: body_at + 10], multipart, json_head)
    statuses: list[int | None] = []
    try:
        with caplog.at_level(logging.DEBUG):
            for cut in cuts:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(cut)
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.close()
            for _ in range(100):
                statuses = _access_statuses(caplog)
                if len(statuses) == len(cuts):
                    break
                await asyncio.sleep(0.02)
    finally:
        await runner.cleanup()
    assert statuses == [499] * len(cuts)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_client_leaving_mid_body_leaves_no_cycle_behind(
    fake_openai: FakeOpenAI, temp_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The cut-off read's exception is kept by aiohttp's read waiter, and its frames
    # keep the request's buffers and files: unless the gateway breaks that cycle, they
    # live until a GC pass. With the collector off, nothing of the request may be
    # left for it to find.
    runner, port = await _served(fake_openai, temp_root)
    part = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
    head = (
        b"POST /v3/images/edits HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 9999999\r\n\r\n"
    )
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(head + part + png() + b"x" * 300_000)
                await writer.drain()
                await asyncio.sleep(0.05)  # the handler is waiting for more body
                writer.close()
            for _ in range(100):
                if len(_access_statuses(caplog)) == 3:
                    break
                await asyncio.sleep(0.02)
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        await runner.cleanup()
    assert _access_statuses(caplog) == [499] * 3
    for kind in ("FormReader", "BodyStream", "UploadSet", "ConnectionResetError"):
        assert kind not in left


async def test_compressed_multipart_reserves_what_it_inflates_to(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, registry: CollectorRegistry
) -> None:
    # A few KiB of gzip can inflate to the whole body cap: the upload backpressure
    # counts the inflated bytes as they arrive, neither the declared (compressed)
    # length nor the whole cap up front (which let one client lock out uploads).
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        limits={"max_body_bytes": 10 * 1024 * 1024},
    )
    head = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
        + png()
    )
    packer = zlib.compressobj(wbits=31)
    body = packer.compress(head) + packer.flush(zlib.Z_SYNC_FLUSH)
    more = packer.compress(bytes(300_000)) + packer.flush(zlib.Z_SYNC_FLUSH)
    request = (
        b"POST /v3/images/edits HTTP/1.1\r\nHost: localhost\r\nContent-Encoding: gzip\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: %d\r\n\r\n" % (len(body) + len(more) + 4096)
    )

    async def reserved_reaches(count: int) -> None:
        got = None
        for _ in range(200):
            got = registry.get_sample_value("imagegate_temp_reserved_bytes")
            if got == count:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{got} bytes reserved, not {count}")

    _, writer = await asyncio.open_connection(proxy.host, proxy.port)
    try:
        writer.write(request + body)  # the rest never comes: the request stays open
        await writer.drain()
        await reserved_reaches(len(head))
        writer.write(more)
        await writer.drain()
        await reserved_reaches(len(head) + 300_000)
    finally:
        writer.transport.abort()
    await reserved_reaches(0)


@pytest.mark.parametrize("kind", ["json", "multipart"])
async def test_gzip_bomb_is_refused_at_the_inflated_cap(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, kind: str
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        limits={"max_json_bytes": 1024 * 1024, "max_file_bytes": 1024 * 1024},
    )
    if kind == "json":
        head, content_type = (
            b'{"model": "openai/gpt-image-2", "pad": "',
            "application/json",
        )
    else:
        head = (
            b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
            + png()
        )
        content_type = "multipart/form-data; boundary=b"
    packer = zlib.compressobj(wbits=31)
    body = packer.compress(head)
    zeros = bytes(1024 * 1024)
    for _ in range(64):  # 64 MiB inflated from about 64 KiB
        body += packer.compress(zeros)
    body += packer.flush()
    headers = {"Content-Type": content_type, "Content-Encoding": "gzip"}
    async with (
        ClientSession() as s,
        s.post(proxy.make_url("/v3/images/edits"), data=body, headers=headers) as r,
    ):
        assert r.status == 413, await r.text()
        assert (await r.json())["error"]["code"] == "payload_too_large"
    assert not fake_openai.received


async def test_a_providers_cookie_is_not_replayed_to_it(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    # One pooled session serves every client: a cookie kept from one client's reply
    # would ride on the next client's request. By name, not IP: aiohttp's jar
    # ignores cookies from IP addresses.
    url = fake_openai.url.replace("127.0.0.1", "localhost")  # type: ignore[attr-defined]
    proxy = await start_proxy({"openai": {"base_url": url}})
    fake_openai.script(Reply(headers={"Set-Cookie": "tenant=team-a; Path=/"}))
    async with ClientSession() as s:
        for _ in range(2):
            form = FormData({"model": "openai/gpt-image-2", "prompt": "a hat"})
            form.add_field("image", png(), filename="a.png", content_type="image/png")
            async with s.post(proxy.make_url("/v3/images/edits"), data=form) as r:
                assert r.status == 200, await r.text()
                assert "Set-Cookie" not in r.headers
    first, second = fake_openai.received[-2:]
    for rec in (first, second):
        assert not [k for k in rec.headers if k.lower() == "cookie"]
