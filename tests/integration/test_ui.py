"""``/ui``: its files and security headers, when it is served, and what it can reach.

The page's behaviour in a browser is tests/browser's; here the HTTP side.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp.test_utils import TestServer

from proxy.ui import CSP
from tests.conftest import StartProxy
from tests.fakes.openai import FakeOpenAI
from tests.gateway import KEY_A, key_entry
from tests.images import png


async def fetch(
    server: TestServer, path: str, **headers: str
) -> tuple[int, bytes, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(server.make_url(path), headers=headers) as r,
    ):
        return r.status, await r.read(), dict(r.headers)


def _providers(fake: FakeOpenAI) -> dict[str, Any]:
    return {"openai": {"base_url": fake.url}}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("path", "content_type", "marker"),
    [
        ("/ui", "text/html", b'<script type="module" src="/ui/app.js"></script>'),
        ("/ui/index.html", "text/html", b"<title>imagegate</title>"),
        ("/ui/app.js", "text/javascript", b'import { runOne } from "./run.js";'),
        ("/ui/api.js", "text/javascript", b"export async function getJSON"),
        ("/ui/mask.js", "text/javascript", b"export function maskBlob"),
        ("/ui/run.js", "text/javascript", b"export async function runOne"),
        ("/ui/app.css", "text/css", b"[hidden]"),
    ],
)
async def test_page_files_carry_a_strict_policy(
    proxy: TestServer, path: str, content_type: str, marker: bytes
) -> None:
    status, body, headers = await fetch(proxy, path)
    assert status == 200
    assert headers["Content-Type"].startswith(content_type)
    assert marker in body
    assert headers["Content-Security-Policy"] == CSP
    assert "script-src 'self';" in CSP
    assert "'unsafe-inline'" not in CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"


async def test_the_page_has_no_inline_script_or_third_party_address(
    proxy: TestServer,
) -> None:
    _, html, _ = await fetch(proxy, "/ui")
    assert b"<script>" not in html
    assert b" on" not in html.replace(b" one", b"")  # no onclick= style handlers
    for path in ("/ui", "/ui/app.css", "/ui/app.js", "/ui/api.js", "/ui/mask.js",
                 "/ui/run.js"):  # fmt: skip
        _, body, _ = await fetch(proxy, path)
        assert b"http://" not in body
        assert b"https://" not in body


@pytest.mark.parametrize("path", ["/ui/secret.txt", "/ui/..%2Fcatalog.yaml", "/ui/"])
async def test_only_the_page_files_are_served(proxy: TestServer, path: str) -> None:
    status, _, headers = await fetch(proxy, path)
    assert status == 404
    if path != "/ui/":
        assert headers["Content-Security-Policy"] == CSP


@pytest.mark.parametrize(
    ("host", "enabled", "served"),
    [
        ("127.0.0.1", "auto", True),
        ("0.0.0.0", "auto", False),  # a network listener: off unless enabled
        ("0.0.0.0", True, True),
        ("127.0.0.1", False, False),
    ],
)
async def test_when_the_page_is_served(
    start_proxy: StartProxy,
    fake_openai: FakeOpenAI,
    host: str,
    enabled: str | bool,
    served: bool,
) -> None:
    server = await start_proxy(
        _providers(fake_openai),
        server={"host": host},
        ui={"enabled": enabled},
        keys={"team-a": key_entry(KEY_A)},
    )
    status, _, _ = await fetch(server, "/ui")
    assert status == (200 if served else 404)
    # The API is there either way.
    status, _, _ = await fetch(server, "/v3/usage", Authorization=f"Bearer {KEY_A}")
    assert status == 200


async def test_with_keys_the_page_reaches_nothing_without_one(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    server = await start_proxy(
        _providers(fake_openai), keys={"team-a": key_entry(KEY_A)}
    )
    status, html, _ = await fetch(server, "/ui")
    assert status == 200
    # The page starts hidden; the only thing it shows is the key form.
    assert b'<main id="app" hidden>' in html
    site = {"Sec-Fetch-Site": "same-origin"}
    for path in ("/v3/images/models", "/v3/usage", "/v3/upload"):
        assert (await fetch(server, path, **site))[0] == 401
    status, _, _ = await fetch(
        server, "/v3/images/models", Authorization=f"Bearer {KEY_A}", **site
    )
    assert status == 200


async def test_keyless_page_posts_pass_the_origin_check(
    proxy: TestServer, fake_openai: FakeOpenAI
) -> None:
    host = f"127.0.0.1:{proxy.port}"

    async def post(**headers: str) -> int:
        form = aiohttp.FormData()
        form.add_field("model", "openai/gpt-image-2.5-sunburst")
        form.add_field("prompt", "a hat")
        form.add_field("image[]", png(), filename="a.png", content_type="image/png")
        async with (
            aiohttp.ClientSession() as s,
            s.post(proxy.make_url("/v3/images/edits"), data=form, headers=headers) as r,
        ):
            return r.status

    # What Chromium sends for the page's own fetch: Origin on a POST, same-origin.
    own = {"Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}
    assert await post(**own) == 200
    # Another site's page, or one that claims same-origin with another origin.
    assert (
        await post(Origin="http://evil.example", **{"Sec-Fetch-Site": "cross-site"})
        == 403
    )
    assert (
        await post(Origin="http://evil.example", **{"Sec-Fetch-Site": "same-origin"})
        == 403
    )
    assert await post(Origin=f"http://{host}", **{"Sec-Fetch-Site": "same-site"}) == 403
    # A rebinding page is same-origin with itself, but its Host is its own name.
    rebound = {"Host": f"evil.example:{proxy.port}"}
    assert (
        await post(Origin=f"http://evil.example:{proxy.port}",
                   **{"Sec-Fetch-Site": "same-origin"}, **rebound)
        == 403
    )  # fmt: skip
    assert len(fake_openai.received) == 1


async def test_models_carry_pricing_for_estimates(proxy: TestServer) -> None:
    _, body, _ = await fetch(proxy, "/v3/images/models")
    models = {m["id"]: m for m in msgspec.json.decode(body)["data"]}
    tokens = models["openai/gpt-image-2"]
    assert tokens["capabilities"]["streaming"] is True
    assert tokens["pricing"] == {
        "basis": "tokens",
        "text_input_per_1m": 5.0,
        "image_input_per_1m": 8.0,
        "image_output_per_1m": 30.0,
        # The catalogue's output tokens of one 1024x1024 image, at $30/1M.
        "image_1024_usd": {"low": 0.00588, "medium": 0.05268, "high": 0.21072},
    }
    # The catalogue row, in the provider's billing shape, with its source and date.
    price = tokens["price"]
    assert price["price"]["tokens"]["image_out"] == 30.0
    assert price["checked"] == "2026-12-06"
    assert price["source"][0].startswith("https://developers.openai.com/")
    assert tokens["lifecycle"]["status"] == "active"
    assert tokens["lifecycle"]["released"] == "2026-04-21"
    # Shut-down models are not offered (a request for one is answered 410).
    assert "openai/gpt-image-1.5" not in models  # retired-id: lifecycle test
