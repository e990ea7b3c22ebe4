"""The contract every adapter keeps, parametrised over the provider cases: the official
OpenAI SDK (or raw aiohttp, to read headers) → proxy → the provider's fake upstream."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import AiohttpServer, StartProxy
from tests.fakes.openai import Reply
from tests.fakes.provider import RESULT_PNG, FakeProvider
from tests.images import png
from tests.integration.contract_b import CASES, Case

SECRET = "provider-internal-detail-7f3a"


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    c: Case = request.param
    return c


@pytest.fixture
async def fake(case: Case, aiohttp_server: AiohttpServer) -> FakeProvider:
    from tests.integration.contract_b import KEY

    fake = case.fake(KEY)
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


async def _proxy(
    start_proxy: StartProxy, case: Case, fake: FakeProvider, **sections: Any
) -> TestServer:
    section = case.config(fake.url)
    pool = section.setdefault("pool", {})
    pool.update(sections.pop("pool", {}))
    return await start_proxy({case.provider: section}, environ=case.env, **sections)


@pytest.fixture
async def proxy_b(
    start_proxy: StartProxy, case: Case, fake: FakeProvider
) -> TestServer:
    return await _proxy(start_proxy, case, fake)


@pytest.fixture
async def client(proxy_b: TestServer) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(
        base_url=str(proxy_b.make_url("/v3")), api_key="client", max_retries=0
    )
    yield sdk
    await sdk.close()


def _json_edit(case: Case) -> dict[str, Any]:
    data = base64.b64encode(png(8, 8)).decode()
    return {
        "model": case.model,
        "prompt": "add a hat",
        "images": [{"image_url": f"data:image/png;base64,{data}"}],
    }


async def _post(server: TestServer, body: dict[str, Any]) -> tuple[int, Any, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(server.make_url("/v3/images/edits"), json=body) as r,
    ):
        return r.status, r.headers, await r.json()


async def test_success_with_sdk(
    case: Case, fake: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    result = await client.images.edit(
        model=case.model, image=("a.png", png(8, 8), "image/png"), prompt="add a hat"
    )
    assert result.data is not None
    assert len(result.data) == 1
    b64 = result.data[0].b64_json
    assert b64 is not None
    assert base64.b64decode(b64) == RESULT_PNG
    assert result.model_extra is not None
    assert result.model_extra["provider"] == case.provider
    case.check(fake)
    assert len(fake.received) == case.calls


async def test_provider_400_passes_message(
    case: Case, fake: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake.script(Reply(400, case.error("the prompt is not allowed")))
    with pytest.raises(openai.BadRequestError) as exc:
        await client.images.edit(
            model=case.model, image=("a.png", png(8, 8), "image/png"), prompt="x"
        )
    assert "the prompt is not allowed" in exc.value.message


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_502(
    case: Case, fake: FakeProvider, proxy_b: TestServer, status: int
) -> None:
    fake.script(Reply(status, case.error(SECRET)))
    code, headers, body = await _post(proxy_b, _json_edit(case))
    assert code == 502
    assert headers["x-should-retry"] == "false"
    assert SECRET not in str(body)
    assert body["error"]["code"] == "upstream_auth_error"


async def test_rate_limit_keeps_retry_after(
    case: Case, fake: FakeProvider, proxy_b: TestServer
) -> None:
    fake.script(Reply(429, case.error("slow down"), headers={"Retry-After": "7"}))
    code, headers, body = await _post(proxy_b, _json_edit(case))
    assert code == 429
    assert headers["Retry-After"] == "7"
    assert body["error"]["type"] == "rate_limit_error"


async def test_provider_5xx_is_502(
    case: Case, fake: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake.script(Reply(503, case.error(SECRET)))
    with pytest.raises(openai.InternalServerError) as exc:
        await client.images.edit(
            model=case.model, image=("a.png", png(8, 8), "image/png"), prompt="x"
        )
    assert exc.value.status_code == 502
    assert SECRET not in exc.value.message


async def test_hang_is_504(
    case: Case, fake: FakeProvider, start_proxy: StartProxy
) -> None:
    server = await _proxy(start_proxy, case, fake, pool={"total_timeout_s": 0.2})
    fake.script(Reply(delay_s=1.0))
    code, _, body = await _post(server, _json_edit(case))
    assert code == 504
    assert body["error"]["code"] == "upstream_timeout"


async def test_dropped_connection_is_502(
    case: Case, fake: FakeProvider, proxy_b: TestServer
) -> None:
    fake.script(Reply(drop=True))
    code, _, body = await _post(proxy_b, _json_edit(case))
    assert code == 502
    assert body["error"]["code"] == "upstream_unavailable"


async def test_oversized_reply_is_502(
    case: Case, fake: FakeProvider, start_proxy: StartProxy
) -> None:
    server = await _proxy(start_proxy, case, fake, limits={"max_response_bytes": 4096})
    fake.script(Reply(200, {"data": [{"b64_json": "A" * 8192}]}))
    code, _, body = await _post(server, _json_edit(case))
    assert code == 502
    assert body["error"]["code"] == "upstream_reply_too_large"


async def test_malformed_reply_is_502(
    case: Case, fake: FakeProvider, proxy_b: TestServer
) -> None:
    fake.script(Reply(200, b"<html>not json</html>"))
    code, _, body = await _post(proxy_b, _json_edit(case))
    assert code == 502
    assert body["error"]["code"] == "upstream_protocol_error"
