"""The access log line and W3C trace context, seen from the client, the log and the
provider."""

from __future__ import annotations

import base64
import logging
import re
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp.test_utils import TestServer

from proxy.logs import JsonFormatter
from tests.conftest import UPSTREAM_KEY, StartProxy
from tests.fakes.openai import FakeOpenAI
from tests.images import png
from tests.observability.scrape import scrape, value

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
_B64 = base64.b64encode(png(8, 8)).decode()
TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    fmt = JsonFormatter()
    return [
        msgspec.json.decode(fmt.format(r))
        for r in caplog.records
        if r.name == "imagegate.access"
    ]


async def _edit(
    proxy: TestServer, headers: dict[str, str], prompt: str = "a red hat"
) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    form.add_field("model", "openai/gpt-image-2.5-sunburst")
    form.add_field("prompt", prompt)
    form.add_field("image", png(8, 8), filename="a.png", content_type="image/png")
    async with aiohttp.ClientSession() as s:
        resp = await s.post(
            proxy.make_url("/v3/images/edits"), data=form, headers=headers
        )
        await resp.read()
        return resp


async def test_client_traceparent_continues_upstream_and_in_log(
    proxy: TestServer, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imagegate.access")
    headers = {
        "traceparent": f"00-{TRACE}-{PARENT}-01",
        "tracestate": "vendor=abc",
        "X-Request-ID": "req-123",
    }
    resp = await _edit(proxy, headers)
    assert resp.status == 200
    assert resp.headers["X-Request-ID"] == "req-123"
    sent = TRACEPARENT_RE.match(fake_openai.last.headers["traceparent"])
    assert sent is not None
    assert sent.group(1) == TRACE
    assert sent.group(2) != PARENT  # the proxy's call is a child span
    assert sent.group(3) == "01"
    assert fake_openai.last.headers["tracestate"] == "vendor=abc"
    (line,) = access_lines(caplog)
    assert line["trace_id"] == TRACE
    assert line["request_id"] == "req-123"
    assert line["key"] == "anonymous"
    assert line["provider"] == "openai"
    assert line["model"] == "openai/gpt-image-2.5-sunburst"
    assert line["status"] == 200
    assert isinstance(line["cost_usd"], float)
    assert "prompt" not in line


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE}-{PARENT}-01",  # forbidden version
        f"00-{TRACE.upper()}-{PARENT}-01",  # uppercase hex
        f"00-{TRACE}-{PARENT}-01-extra",  # version 00 has exactly four fields
    ],
)
async def test_invalid_traceparent_starts_a_new_trace(
    proxy: TestServer,
    fake_openai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
    bad: str,
) -> None:
    caplog.set_level(logging.INFO, logger="imagegate.access")
    resp = await _edit(proxy, {"traceparent": bad, "tracestate": "vendor=abc"})
    assert resp.status == 200
    sent = TRACEPARENT_RE.match(fake_openai.last.headers["traceparent"])
    assert sent is not None
    assert sent.group(1) not in (TRACE, "0" * 32)
    assert "tracestate" not in fake_openai.last.headers
    (line,) = access_lines(caplog)
    assert line["trace_id"] == sent.group(1)


async def test_future_version_traceparent_is_continued(
    proxy: TestServer, fake_openai: FakeOpenAI
) -> None:
    resp = await _edit(proxy, {"traceparent": f"01-{TRACE}-{PARENT}-00-more"})
    assert resp.status == 200
    assert fake_openai.last.headers["traceparent"].startswith(f"00-{TRACE}-")
    assert fake_openai.last.headers["traceparent"].endswith("-00")


async def test_prompts_logged_only_when_configured(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imagegate.access")
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        server={"log_prompts": True},
    )
    resp = await _edit(proxy, {}, prompt="a very particular prompt")
    assert resp.status == 200
    (line,) = access_lines(caplog)
    assert line["prompt"] == "a very particular prompt"


async def test_log_never_holds_secrets_or_image_bytes(
    proxy: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    image = png(8, 8, seed=7)
    resp = await _edit(proxy, {"Authorization": "Bearer client-secret-xyz"})
    assert resp.status == 200
    fmt = JsonFormatter()
    text = "\n".join(fmt.format(r) for r in caplog.records)
    assert "imagegate.access" in text
    for secret in (UPSTREAM_KEY, "client-secret-xyz", "a red hat"):
        assert secret not in text
    assert base64.b64encode(image).decode()[:16] not in text


async def _post(proxy: TestServer, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url("/v3/images/edits"), **kwargs) as r,
    ):
        return r.status, await r.json()


async def test_validation_errors_log_a_code_and_the_param(
    proxy: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: error "InvalidRequest" (a class name) and no param.
    caplog.set_level(logging.INFO, logger="imagegate.access")
    body = {
        "model": "openai/gpt-image-2.5-sunburst",
        "prompt": "x",
        "n": "many",
        "images": [{"image_url": "data:image/png;base64," + _B64}],
    }
    status, answer = await _post(proxy, json=body)
    assert status == 400
    (line,) = access_lines(caplog)
    assert (line["error"], line["param"]) == (
        "invalid_request",
        answer["error"]["param"],
    )
    assert line["param"] == "n"


async def test_the_model_the_client_asked_for_is_logged(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: an unpriced model was logged as "other"; the metric label stays bounded.
    caplog.set_level(logging.INFO, logger="imagegate.access")
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        environ={"OPENAI_API_KEY": UPSTREAM_KEY},
        models={"house-style": "openai/my-finetune-7"},
    )
    for model in ("openai/my-finetune-7", "house-style", "nobody/x"):
        form = aiohttp.FormData()
        form.add_field("model", model)
        form.add_field("prompt", "p")
        form.add_field("image", png(8, 8), filename="a.png", content_type="image/png")
        await _post(proxy, data=form)
    assert [line["model"] for line in access_lines(caplog)] == [
        "openai/my-finetune-7", "house-style", "nobody/x",
    ]  # fmt: skip
    assert [line["error"] for line in access_lines(caplog)][2] == "model_not_found"
    samples = await scrape(proxy)
    assert value(samples, "imagegate_unpriced_responses_total", model="other") == 2
    assert not [k for k in samples if ("model", "openai/my-finetune-7") in k[1]]


async def test_probes_are_counted_and_logged_alike(
    proxy: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: /healthz was counted in imagegate_requests_total with no access line.
    caplog.set_level(logging.INFO, logger="imagegate.access")
    async with aiohttp.ClientSession() as s, s.get(proxy.make_url("/healthz")) as r:
        assert r.status == 200
    (line,) = access_lines(caplog)
    assert (line["route"], line["status"], line["error"]) == ("/healthz", 200, None)
    samples = await scrape(proxy)
    assert value(samples, "imagegate_requests_total", route="/healthz") == 1


async def test_a_missing_content_type_is_named_as_missing(proxy: TestServer) -> None:
    # Before: "... not 'none'", as if the client had sent the type "none".
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            proxy.make_url("/v3/images/edits"), data=b"{}", headers={"Content-Type": ""}
        ) as r,
    ):
        assert r.status == 415
        message = (await r.json())["error"]["message"]
    assert message == (
        "Content-Type must be application/json or multipart/form-data, "
        "and the request has none"
    )
