"""A provider that echoes its key in a SUCCESS reply: in a JSON answer's extra members
and in every member of streamed partial and completed events. The members themselves
reach the client; the key, in any form it was echoed in, does not.

Before the fix only error bodies and error events passed the redactor.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec

from tests.conftest import UPSTREAM_KEY, SecretAudit, StartGateway
from tests.fakes.openai import Reply, images_reply
from tests.fakes.provider import RESULT_B64
from tests.fakes.sse import StreamPlan
from tests.gateway import post_json
from tests.images import png

BASIC = base64.b64encode(f"gateway:{UPSTREAM_KEY}".encode()).decode()
# Each way a provider might echo the key, by member name.
ECHO = {
    "auth": f"Bearer {UPSTREAM_KEY}",
    "url": f"https://p.example/v1?key={quote(UPSTREAM_KEY, safe='')}",
    "escaped": UPSTREAM_KEY.replace("-", "%2D"),
    "escaped_lower": UPSTREAM_KEY.replace("-", "%2d"),
    "basic": f"Basic {BASIC}",
    "b64": base64.b64encode(UPSTREAM_KEY.encode()).decode(),
    "urlsafe_b64": base64.urlsafe_b64encode(
        b"\xfb\xff" + UPSTREAM_KEY.encode()
    ).decode(),
}
MEMBERS: dict[str, Any] = {"debug": ECHO, "system_fingerprint": UPSTREAM_KEY}


def _leaks(text: str) -> list[str]:
    return [v for v in (UPSTREAM_KEY, *ECHO.values()) if v in text]


def _check_members(body: dict[str, Any]) -> None:
    # The provider's members are relayed, each with the key cut out of it.
    assert body["system_fingerprint"] == "[redacted]"
    debug = body["debug"]
    assert debug["auth"] == "Bearer [redacted]"
    assert debug["url"] == "https://p.example/v1?key=[redacted]"
    assert debug["escaped"] == debug["escaped_lower"] == "[redacted]"
    for name in ("basic", "b64", "urlsafe_b64"):
        assert "[redacted]" in debug[name], name


async def test_openai_json_success_echoing_the_key_is_redacted(
    start_gateway: StartGateway, secret_audit: SecretAudit
) -> None:
    gateway = await start_gateway("openai")
    gateway.fake.script(Reply(body=images_reply(**MEMBERS)))
    seen = len(secret_audit.texts)
    status, body = await post_json(
        gateway.proxy,
        "/v3/images/generations",
        {"model": "openai/gpt-image-2", "prompt": "p"},
    )
    assert status == 200, body
    assert _leaks(msgspec.json.encode(body).decode()) == []
    _check_members(body)
    assert body["provider"] == "openai"
    assert body["cost"] is not None
    assert len(body["data"]) == 1
    assert [t for t in secret_audit.texts[seen:] if _leaks(t)] == []


async def test_xai_json_success_echoing_the_key_is_redacted(
    start_gateway: StartGateway, secret_audit: SecretAudit
) -> None:
    gateway = await start_gateway("xai")
    gateway.fake.script(Reply(body={"data": [{"b64_json": RESULT_B64}], **MEMBERS}))
    seen = len(secret_audit.texts)
    status, body = await post_json(
        gateway.proxy,
        "/v3/images/generations",
        {"model": "xai/grok-imagine-image", "prompt": "p"},
    )
    assert status == 200, body
    assert _leaks(msgspec.json.encode(body).decode()) == []
    _check_members(body)
    assert body["data"] == [{"b64_json": RESULT_B64}]
    assert [t for t in secret_audit.texts[seen:] if _leaks(t)] == []


def _events(raw: str) -> list[dict[str, Any]]:
    return [
        msgspec.json.decode(line[len("data: ") :])
        for line in raw.splitlines()
        if line.startswith("data: ")
    ]


async def _stream_edit(gateway: Any, *, stream: bool = True) -> str:
    form = aiohttp.FormData()
    for name, value in (("model", "openai/gpt-image-2"), ("prompt", "p")):
        form.add_field(name, value)
    form.add_field("stream", "true")
    form.add_field("image", png(), filename="a.png", content_type="image/png")
    async with (
        aiohttp.ClientSession() as s,
        s.post(gateway.proxy.make_url("/v3/images/edits"), data=form) as r,
    ):
        assert r.status == 200
        return (await r.read()).decode()


async def test_streamed_events_echoing_the_key_are_redacted(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway("openai")
    gateway.fake.streams.append(StreamPlan(partials=2, extra=MEMBERS))
    raw = await _stream_edit(gateway)
    assert _leaks(raw) == []
    events = _events(raw)
    kinds = [e["type"] for e in events]
    assert kinds == ["image_edit.partial_image"] * 2 + ["image_edit.completed"]
    for event in events:
        _check_members(event)
        assert event["b64_json"]  # the picture itself is untouched
    assert events[-1]["provider"] == "openai"
    assert events[-1]["cost"] is not None


async def test_json_answer_to_a_stream_request_is_redacted(
    start_gateway: StartGateway,
) -> None:
    """An "OpenAI-compatible" upstream that answers a stream request in full: its
    reply becomes completed events (an image's members each), redacted like the rest."""
    gateway = await start_gateway("openai")
    body = {"created": 1, "data": [{"b64_json": RESULT_B64, **MEMBERS}]}
    gateway.fake.streams.append(StreamPlan(as_json=True, json_body=body))
    raw = await _stream_edit(gateway)
    assert _leaks(raw) == []
    (event,) = _events(raw)
    assert event["type"] == "image_edit.completed"
    _check_members(event)
