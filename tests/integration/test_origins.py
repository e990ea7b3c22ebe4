"""Keyless mode against web pages: DNS rebinding (a foreign ``Host``) and cross-site
browser requests (``Origin``, ``Sec-Fetch-Site``) are refused before anything is spent
or read; local clients, probes, configured names and keyed gateways are served."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import msgspec
import openai
import pytest
from aiohttp.test_utils import TestServer

from proxy.config import ConfigError, parse_config
from proxy.errors import Forbidden
from proxy.origins import OriginPolicy, host_name
from tests.conftest import StartProxy
from tests.fakes.openai import FakeOpenAI
from tests.gateway import KEY_A, key_entry
from tests.images import png

EDIT = "/v3/images/edits"


def _providers(fake: FakeOpenAI) -> dict[str, Any]:
    return {"openai": {"base_url": fake.url}}  # type: ignore[attr-defined]


def _form() -> aiohttp.FormData:
    # What a page's <form enctype=multipart/form-data> or fetch(no-cors) can send
    # cross-site without a CORS preflight.
    form = aiohttp.FormData()
    form.add_field("model", "openai/gpt-image-2")
    form.add_field("prompt", "spend the gateway's key")
    form.add_field("image", png(), filename="a.png", content_type="image/png")
    return form


async def _call(
    proxy: TestServer,
    method: str,
    path: str,
    headers: dict[str, str],
    **kw: Any,
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, proxy.make_url(path), headers=headers, **kw) as r,
    ):
        body = await r.json() if r.content_type == "application/json" else None
        return r.status, body


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", EDIT), ("GET", "/v3/upload"), ("GET", "/metrics"),
     ("GET", "/v3/images/models")],
)  # fmt: skip
async def test_dns_rebinding_host_is_refused(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, method: str, path: str
) -> None:
    # The attacker's name, resolved to 127.0.0.1 after the page loaded: the browser
    # sends it as Host and lets the page read the answer.
    proxy = await start_proxy(_providers(fake_openai))
    host = f"rebind.attacker.example:{proxy.port}"
    kw = {"data": _form()} if method == "POST" else {}
    status, body = await _call(proxy, method, path, {"Host": host}, **kw)
    assert status == 403, body
    assert body["error"]["code"] == "host_not_allowed"
    assert body["error"]["param"] == "Host"
    assert fake_openai.received == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://evil.example"},  # a browser without Fetch Metadata
        {"Origin": "null"},  # a sandboxed iframe or a file:// page
        {"Sec-Fetch-Site": "cross-site"},  # a navigation or a form post
        {"Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"},
    ],
)
async def test_cross_site_browser_requests_are_refused(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, headers: dict[str, str]
) -> None:
    proxy = await start_proxy(_providers(fake_openai))
    status, body = await _call(proxy, "POST", EDIT, headers, data=_form())
    assert status == 403, body
    assert body["error"]["code"] == "cross_site_request"
    assert body["error"]["param"] in ("Origin", "Sec-Fetch-Site")
    assert fake_openai.received == []
    status, _ = await _call(proxy, "GET", "/v3/upload", headers)
    assert status == 403


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Host": "localhost"},
        {"Host": "LOCALHOST.:9999"},  # a port forward changes the port
        {"Host": "[::1]:8080"},
        {"Host": "127.0.0.2"},
        {"Sec-Fetch-Site": "none"},  # the user typed the URL
        {"Sec-Fetch-Site": "same-origin"},
    ],
)
async def test_local_clients_are_served(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, headers: dict[str, str]
) -> None:
    proxy = await start_proxy(_providers(fake_openai))
    status, body = await _call(proxy, "POST", EDIT, headers, data=_form())
    assert status == 200, body
    assert len(fake_openai.received) == 1


async def test_sdk_is_served(start_proxy: StartProxy, fake_openai: FakeOpenAI) -> None:
    proxy = await start_proxy(_providers(fake_openai))
    async with openai.AsyncOpenAI(
        base_url=str(proxy.make_url("/v3")), api_key="unused", max_retries=0
    ) as sdk:
        result = await sdk.images.edit(
            model="openai/gpt-image-2", image=png(), prompt="x"
        )
    assert result.data


async def test_probes_answer_any_host(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    # The kubelet sends Host: <pod IP>:<port>, and a probe may go through a name too.
    proxy = await start_proxy(_providers(fake_openai))
    for path in ("/healthz", "/readyz"):
        status, _ = await _call(proxy, "GET", path, {"Host": "10.1.2.3:8080"})
        assert status == 200
        status, _ = await _call(proxy, "GET", path, {"Host": "probe.example"})
        assert status == 200


async def test_configured_hosts_and_origins_are_served(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        _providers(fake_openai),
        server={
            "allowed_hosts": ["imagegate.internal"],
            "allowed_origins": ["http://localhost:3000"],
        },
    )
    headers = {
        "Host": "ImageGate.internal:8080",
        "Origin": "http://LOCALHOST:3000",
        "Sec-Fetch-Site": "same-site",
    }
    status, body = await _call(proxy, "POST", EDIT, headers, data=_form())
    assert status == 200, body
    status, body = await _call(
        proxy, "POST", EDIT, {"Origin": "http://localhost:3001"}, data=_form()
    )
    assert status == 403, body
    status, body = await _call(proxy, "GET", "/metrics", {"Host": "other.internal"})
    assert status == 403, body
    # A single-label name: LLMNR lets anyone on the LAN answer for it.
    status, body = await _call(proxy, "GET", "/metrics", {"Host": "imagegate:8080"})
    assert status == 403, body
    status, body = await _call(proxy, "GET", "/metrics", {"Host": "127.0.0.1.nip.io"})
    assert status == 403, body


async def test_any_host_when_configured(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    # auth: none behind an ingress that checks Host itself.
    proxy = await start_proxy(
        _providers(fake_openai), auth="none", server={"allowed_hosts": ["*"]}
    )
    status, body = await _call(
        proxy, "POST", EDIT, {"Host": "imagegate.svc:8080"}, data=_form()
    )
    assert status == 200, body
    # The origin check still holds.
    status, _ = await _call(
        proxy, "POST", EDIT, {"Origin": "https://evil.example"}, data=_form()
    )
    assert status == 403


async def test_with_client_keys_the_key_is_the_defence(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    # A page cannot attach the key cross-site without a CORS preflight, which the
    # gateway never answers, and a rebinding page does not know it.
    proxy = await start_proxy(
        _providers(fake_openai), keys={"team-a": key_entry(KEY_A)}
    )
    headers = {"Host": "imagegate.example", "Authorization": f"Bearer {KEY_A}"}
    status, body = await _call(proxy, "POST", EDIT, headers, data=_form())
    assert status == 200, body
    status, _ = await _call(proxy, "OPTIONS", EDIT, {"Origin": "https://x.example"})
    assert status == 405


@pytest.mark.parametrize(
    "server",
    [
        {"allowed_hosts": ["a b"]},
        {"allowed_hosts": ["host/path"]},
        {"allowed_origins": ["https://app.example/path"]},
        {"allowed_origins": ["app.example"]},
    ],
)
def test_bad_names_are_config_errors(server: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="allowed_"):
        parse_config(msgspec.json.encode({"server": server}))


@pytest.mark.parametrize(
    ("host", "name"),
    [("LocalHost:8080", "localhost"), ("[::1]:80", "::1"), ("[::1]", "::1"),
     ("a.example.", "a.example"), ("a.example:", "a.example:"), ("10.0.0.1", "10.0.0.1")],
)  # fmt: skip
def test_host_name(host: str, name: str) -> None:
    assert host_name(host) == name


def test_policy_without_a_socket_address() -> None:
    policy = OriginPolicy(listen_host="0.0.0.0", hosts=[], origins=[])
    policy.check_host("127.0.0.1:1", None)
    with pytest.raises(Forbidden):
        policy.check_host("10.0.0.1:8080", None)
    named = OriginPolicy(listen_host="gw.internal", hosts=[], origins=[])
    named.check_host("GW.internal:8080", None)


def test_only_configured_host_values_are_remembered_and_at_most_a_bound() -> None:
    policy = OriginPolicy(listen_host="gw.internal", hosts=[], origins=[])
    policy.check_host("127.0.0.1:1", None)  # loopback: parsed each time
    policy.check_host("10.0.0.1:80", "10.0.0.1")  # this connection's own address
    with pytest.raises(Forbidden):
        policy.check_host("evil.example", None)
    assert policy.accepted == set()
    for port in range(1000):
        policy.check_host(f"gw.internal:{port}", None)
    assert "gw.internal:0" in policy.accepted
    assert len(policy.accepted) == 64
    padded = OriginPolicy(listen_host="gw.internal", hosts=[], origins=[])
    padded.check_host(" " * 300 + "gw.internal", None)  # accepted, not kept
    assert padded.accepted == set()


async def test_http10_without_host_is_served(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    # No browser sends a request without Host; HTTP/1.0 tools may.
    proxy = await start_proxy(_providers(fake_openai))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /v3/images/models HTTP/1.0\r\n\r\n")
    await writer.drain()
    status = await reader.readline()
    writer.close()
    await writer.wait_closed()
    assert status.split()[1] == b"200"
