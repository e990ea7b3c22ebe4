"""Service endpoints, metrics, the access log, and unknown routes."""

from __future__ import annotations

import logging

import openai
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, SecretAudit
from tests.fakes.openai import FakeOpenAI, Reply
from tests.images import png


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_health_and_readiness(proxy: TestServer) -> None:
    async with ClientSession() as s:
        async with s.get(proxy.make_url("/healthz")) as r:
            assert r.status == 200
            assert (await r.json())["status"] == "ok"
        async with s.get(proxy.make_url("/readyz")) as r:
            assert r.status == 200
            assert (await r.json()) == {"status": "ready", "providers": ["openai"]}


async def test_metrics_after_requests(
    proxy: TestServer, sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    await sdk.images.edit(model="openai/gpt-image-2", image=png(), prompt="x")
    fake_openai.script(Reply(500, {"error": {"message": "x"}}))
    with pytest.raises(openai.InternalServerError):
        await sdk.images.edit(model="openai/gpt-image-2", image=png(), prompt="x")
    await sdk.images.edit(model="openai/unpriced-model", image=png(), prompt="x")
    async with ClientSession() as s, s.get(proxy.make_url("/metrics")) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    got = samples(text)
    route = ("route", "/v3/images/edits")
    assert (
        got[
            (
                "imagegate_requests_total",
                (
                    ("code_class", "2xx"),
                    ("key", "anonymous"),
                    ("provider", "openai"),
                    route,
                ),
            )
        ]
        == 2
    )
    assert (
        got[
            (
                "imagegate_requests_total",
                (
                    ("code_class", "5xx"),
                    ("key", "anonymous"),
                    ("provider", "openai"),
                    route,
                ),
            )
        ]
        == 1
    )
    assert got[
        (
            "imagegate_cost_usd_total",
            (
                ("key", "anonymous"),
                ("model", "openai/gpt-image-2"),
                ("provider", "openai"),
            ),
        )
    ] == pytest.approx(0.03037)
    assert (
        got[
            (
                "imagegate_unpriced_responses_total",
                (("model", "other"), ("provider", "openai")),
            )
        ]
        == 1
    )
    assert got[("imagegate_overhead_seconds_count", (route,))] == 3
    assert (
        got[
            (
                "imagegate_upstream_requests_total",
                (("outcome", "2xx"), ("provider", "openai")),
            )
        ]
        == 2
    )
    assert (
        got[
            (
                "imagegate_upstream_requests_total",
                (("outcome", "5xx"), ("provider", "openai")),
            )
        ]
        == 1
    )
    assert (
        got[
            (
                "imagegate_upstream_connections_total",
                (("kind", "created"), ("provider", "openai")),
            )
        ]
        >= 1
    )
    assert got[("imagegate_upload_bytes_total", ())] == 3 * len(png())
    assert got[("imagegate_images_returned_total", (("provider", "openai"),))] == 2
    assert got[("imagegate_inflight_requests", ())] == 0  # scrapes are not counted
    assert UPSTREAM_KEY not in text
    assert CLIENT_KEY not in text


async def test_overhead_excludes_upstream_time(
    proxy: TestServer, sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI,
    registry: CollectorRegistry,
) -> None:  # fmt: skip
    fake_openai.script(Reply(delay_s=0.3))
    await sdk.images.edit(model="openai/gpt-image-2", image=png(), prompt="x")
    labels = {"route": "/v3/images/edits"}
    total = registry.get_sample_value("imagegate_request_duration_seconds_sum", labels)
    overhead = registry.get_sample_value("imagegate_overhead_seconds_sum", labels)
    upstream = registry.get_sample_value(
        "imagegate_upstream_duration_seconds_sum", {"provider": "openai"}
    )
    assert total is not None
    assert overhead is not None
    assert upstream is not None
    assert upstream >= 0.3
    assert overhead == pytest.approx(total - upstream, abs=1e-6)


async def test_access_log_line(
    sdk: openai.AsyncOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imagegate.access")
    await sdk.images.edit(
        model="openai/gpt-image-2", image=png(), prompt="secret prompt"
    )
    records = [r for r in caplog.records if r.name == "imagegate.access"]
    assert len(records) == 1
    fields = records[0].fields  # type: ignore[attr-defined]
    assert fields["status"] == 200
    assert fields["provider"] == "openai"
    assert fields["model"] == "openai/gpt-image-2"
    assert fields["cost_usd"] == pytest.approx(0.03037)
    assert fields["request_id"]
    text = str(fields)
    assert "secret prompt" not in text
    assert UPSTREAM_KEY not in text
    assert CLIENT_KEY not in text


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/v3/images/edits", 405),
        ("PUT", "/healthz", 405),
    ],
)
async def test_unknown_routes_are_openai_errors(
    proxy: TestServer, method: str, path: str, status: int
) -> None:
    async with ClientSession() as s, s.request(method, proxy.make_url(path)) as r:
        assert r.status == status
        body = await r.json()
    assert body["error"]["type"] == "invalid_request_error"


async def test_secret_audit_is_watching(
    sdk: openai.AsyncOpenAI, secret_audit: SecretAudit
) -> None:
    # The session-wide audit (tests/conftest.py) sees real traffic and logs.
    before = secret_audit.responses
    await sdk.images.edit(model="openai/gpt-image-2", image=png(), prompt="x")
    assert secret_audit.responses == before + 1
    assert any('"provider":"openai"' in t for t in secret_audit.texts)
