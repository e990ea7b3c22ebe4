"""Every way the provider can fail, as the client sees it."""

from __future__ import annotations

from typing import Any

import msgspec
import openai
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from tests.conftest import UPSTREAM_KEY, AiohttpServer, StartProxy
from tests.fakes.openai import FakeOpenAI, Reply
from tests.images import png

EDIT = {"model": "openai/gpt-image-2", "prompt": "x", "images": [{"file_id": "file-1"}]}


async def edit(proxy: TestServer) -> tuple[int, dict[str, str], bytes]:
    """A JSON edit by file id, answered as (status, headers, body)."""
    async with (
        ClientSession() as s,
        s.post(proxy.make_url("/v3/images/edits"), json=EDIT) as r,
    ):
        return r.status, dict(r.headers), await r.read()


async def test_provider_400_passes_message_and_code(
    sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        Reply(400, {"error": {"message": "Your request was rejected by the safety system.",
                              "type": "image_generation_user_error", "param": None,
                              "code": "moderation_blocked"}})
    )  # fmt: skip
    with pytest.raises(openai.BadRequestError) as exc:
        await sdk.images.edit(model="openai/gpt-image-2", image=png(), prompt="x")
    assert exc.value.code == "moderation_blocked"
    assert exc.value.type == "image_generation_user_error"
    assert "safety system" in exc.value.message
    assert exc.value.response.headers["x-should-retry"] == "false"


async def test_provider_404_keeps_status(
    sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        Reply(404, {"error": {"message": "The model `gpt-image-2` does not exist",
                              "type": "invalid_request_error", "code": "model_not_found"}})
    )  # fmt: skip
    with pytest.raises(openai.NotFoundError) as exc:
        await sdk.images.edit(model="openai/gpt-image-2", image=png(), prompt="x")
    assert "gpt-image-2" in exc.value.message


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_a_502_without_echo(
    sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI, status: int
) -> None:
    fake_openai.script(
        Reply(status, {"error": {"message": f"Incorrect API key provided: {UPSTREAM_KEY}",
                                 "type": "invalid_request_error", "code": "invalid_api_key"}})
    )  # fmt: skip
    with pytest.raises(openai.InternalServerError) as exc:
        await sdk.images.edit(model="openai/gpt-image-2", image=png(), prompt="x")
    assert exc.value.status_code == 502
    assert UPSTREAM_KEY not in exc.value.message
    assert "Incorrect API key" not in str(exc.value.body)
    assert exc.value.code == "upstream_auth_error"
    assert exc.value.response.headers["x-should-retry"] == "false"


async def test_wrong_key_configured_is_a_502(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        environ={"OPENAI_API_KEY": "sk-wrong"},
    )
    status, _, raw = await edit(proxy)
    assert status == 502
    text = raw.decode()
    assert "sk-wrong" not in text
    assert "sk-up" not in text


async def test_429_passes_retry_after(
    sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        Reply(429, {"error": {"message": "Rate limit reached", "type": "requests",
                              "code": "rate_limit_exceeded"}},
              headers={"Retry-After": "7"})
    )  # fmt: skip
    with pytest.raises(openai.RateLimitError) as exc:
        await sdk.images.edit(model="openai/gpt-image-2", image=png(), prompt="x")
    assert exc.value.response.headers["Retry-After"] == "7"
    assert "Rate limit reached" in exc.value.message


@pytest.mark.parametrize(
    ("reply", "status", "code"),
    [
        (
            Reply(500, {"error": {"message": "boom internal detail"}}),
            502,
            "upstream_error",
        ),
        (Reply(503, b"<html>down</html>"), 502, "upstream_error"),
        (Reply(200, b"not json at all"), 502, "upstream_protocol_error"),
        (Reply(200, {"no_data": True}), 502, "upstream_protocol_error"),
        (Reply(408, b""), 504, "upstream_timeout"),
        (Reply(drop=True), 502, "upstream_unavailable"),
    ],
)
async def test_upstream_failures(
    proxy: TestServer, fake_openai: FakeOpenAI, reply: Reply, status: int, code: str
) -> None:
    fake_openai.script(reply)
    got, _, raw = await edit(proxy)
    answer = msgspec.json.decode(raw)
    assert got == status, answer
    assert answer["error"]["code"] == code
    assert "boom internal detail" not in answer["error"]["message"]


async def test_hang_is_a_504(start_proxy: StartProxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Reply(delay_s=5))
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url,  # type: ignore[attr-defined]
                    "pool": {"total_timeout_s": 0.3, "read_timeout_s": 0.3}}}
    )  # fmt: skip
    client = openai.AsyncOpenAI(
        base_url=str(proxy.make_url("/v3")), api_key="k", max_retries=0
    )
    async with client:
        with pytest.raises(openai.APIStatusError) as exc:
            await client.images.edit(
                model="openai/gpt-image-2", image=png(), prompt="x"
            )
    assert exc.value.status_code == 504


async def test_connection_refused_is_a_502(start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"openai": {"base_url": "http://127.0.0.1:9/v1"}})
    status, _, raw = await edit(proxy)
    assert status == 502
    assert msgspec.json.decode(raw)["error"]["code"] == "upstream_unavailable"


async def test_oversized_reply_is_a_502(
    aiohttp_server: AiohttpServer, start_proxy: StartProxy
) -> None:
    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(b"x" * 1024)
        return resp

    app = web.Application()
    app.router.add_post("/v1/images/edits", big)
    upstream = await aiohttp_server(app)
    proxy = await start_proxy(
        {"openai": {"base_url": str(upstream.make_url("/v1"))}},
        limits={"max_response_bytes": 16 * 1024},
    )
    status, _, raw = await edit(proxy)
    assert status == 502
    assert msgspec.json.decode(raw)["error"]["code"] == "upstream_reply_too_large"


async def test_missing_key_is_a_clear_503(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        environ={},
    )
    async with ClientSession() as s, s.get(proxy.make_url("/readyz")) as r:
        assert r.status == 200
    status, headers, raw = await edit(proxy)
    answer: Any = msgspec.json.decode(raw)
    assert status == 503
    assert headers["x-should-retry"] == "false"
    assert answer["error"]["code"] == "provider_not_configured"
    assert "OPENAI_API_KEY" in answer["error"]["message"]
    assert fake_openai.received == []


async def test_upstream_gateway_fields_are_not_duplicated(
    proxy: TestServer, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Reply(200, {"created": 1, "data": [{"url": "https://x/y"}],
                                   "provider": "other", "cost": 9.9}))  # fmt: skip
    _, _, raw = await edit(proxy)
    assert raw.count(b'"provider"') == 1
    assert b'"provider":"openai"' in raw
    assert b'"cost":null' in raw
