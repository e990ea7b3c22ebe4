"""A provider that echoes the gateway's credentials: every secret is redacted from what
the client receives and from the logs, at any status and in stream error events.

Each provider type echoes the secrets it holds (its key; the AWS secret key and session
token; the GCP access token minted at runtime), raw and URL-encoded.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer

from tests import contract
from tests.conftest import (
    UPSTREAM_KEY,
    SecretAudit,
    StartGateway,
)
from tests.fakes.bedrock import SECRET_KEY, SESSION_TOKEN
from tests.fakes.openai import Reply
from tests.fakes.sse import StreamPlan
from tests.images import png

# What each provider type was sent, and so could echo; the rest send UPSTREAM_KEY.
ECHOED = {
    "amazon": [SECRET_KEY, SESSION_TOKEN],
    "vertex": ["ya29.fake-1"],  # the first token the fake's token endpoint mints
}


def _echo(secrets: list[str]) -> str:
    said = "; ".join(f"bad header {s} (as sent: {quote(s, safe='')})" for s in secrets)
    return f"request rejected: {said}"


def _leaks(texts: list[str], secrets: list[str]) -> list[str]:
    forms = {f for s in secrets for f in (s, quote(s, safe=""))}
    return [t[:200] for t in texts if any(f in t for f in forms)]


@pytest.fixture(params=contract.PARAMS, ids=contract.IDS)
async def env(
    request: pytest.FixtureRequest, start_gateway: StartGateway
) -> contract.Env:
    return await contract.start_env(start_gateway, request.param)


@pytest.mark.parametrize("status", [400, 422, 429])
async def test_provider_error_echoing_credentials_is_redacted(
    env: contract.Env, secret_audit: SecretAudit, status: int
) -> None:
    secrets = ECHOED.get(env.kind, [UPSTREAM_KEY])
    env.script(status, _echo(secrets))
    seen = len(secret_audit.texts)
    with pytest.raises(openai.APIStatusError) as exc:
        await env.edit()
    assert exc.value.status_code == status
    text = exc.value.response.text
    assert _leaks([text], secrets) == []
    # The provider's message still reaches the client, minus the secrets.
    assert "request rejected: bad header [redacted] (as sent: [redacted])" in text
    new = secret_audit.texts[seen:]
    assert any('"logger":"imagegate.access"' in t for t in new)  # logs were seen
    assert _leaks(new, secrets) == []


async def _generate(proxy: TestServer) -> tuple[int, Any, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            proxy.make_url("/v3/images/generations"),
            json={"model": "openai/gpt-image-2", "prompt": "p"},
        ) as r,
    ):
        return r.status, await r.json(), dict(r.headers)


async def test_echo_in_type_param_code_and_retry_after_is_redacted(
    start_gateway: StartGateway, secret_audit: SecretAudit
) -> None:
    gateway = await start_gateway("openai")
    fake, proxy = gateway.fake, gateway.proxy
    echo = f"key={UPSTREAM_KEY}"
    error = {"message": echo, "type": echo, "param": echo, "code": echo}
    fake.script(
        Reply(status=400, body={"error": error}),
        Reply(status=429, body={"error": error}, headers={"Retry-After": echo}),
    )
    seen = len(secret_audit.texts)
    status, body, _ = await _generate(proxy)
    assert status == 400
    assert body["error"] == dict.fromkeys(error, "key=[redacted]")
    status, body, headers = await _generate(proxy)
    assert status == 429
    assert body["error"]["code"] == "key=[redacted]"
    assert headers["Retry-After"] == "key=[redacted]"
    # The provider's code also names the error in the access log.
    assert _leaks(secret_audit.texts[seen:], [UPSTREAM_KEY]) == []


async def test_streamed_error_event_echoing_the_key_is_redacted(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway("openai")
    gateway.fake.streams.append(
        StreamPlan(partials=1, error=True, error_message=_echo([UPSTREAM_KEY]))
    )
    proxy = gateway.proxy
    form = aiohttp.FormData()
    for name, value in (("model", "openai/gpt-image-2"), ("prompt", "p")):
        form.add_field(name, value)
    form.add_field("stream", "true")
    form.add_field("image", png(), filename="a.png", content_type="image/png")
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url("/v3/images/edits"), data=form) as r,
    ):
        assert r.status == 200
        raw = (await r.read()).decode()
    assert "event: error" in raw
    assert _leaks([raw], [UPSTREAM_KEY]) == []
    assert "bad header [redacted] (as sent: [redacted])" in raw
