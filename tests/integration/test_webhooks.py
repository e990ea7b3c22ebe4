"""Signed webhooks: a job's terminal state POSTed to a real receiving server, its
signature verified with the Standard Webhooks reference library (``standardwebhooks``),
retried until it is taken; URLs refused by the SSRF policy, or without a signing
secret for the key, are a 400 naming ``webhook_url`` before any job exists."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from standardwebhooks import Webhook, WebhookVerificationError

from tests.conftest import UPSTREAM_KEY, AiohttpServer, StartProxy
from tests.fakes.openai import FakeOpenAI
from tests.gateway import KEY_B, eventually, metric, providers_for
from tests.integration.test_jobs import ASYNC, MODEL, call, form, job, keys, until

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
FAST = {"backoff_base_s": 0.05, "backoff_max_s": 0.1, "retry_for_s": 5}


class Receiver:
    """A webhook endpoint: answers each delivery with the next status of ``statuses``
    (then 204), keeps what it received."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.app = web.Application()
        self.app.router.add_post("/hook", self.hook)
        self.url = ""

    async def hook(self, request: web.Request) -> web.Response:
        self.received.append((await request.read(), dict(request.headers)))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 204)


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> Receiver:
    got = Receiver()
    server = await aiohttp_server(got.app)
    got.url = str(server.make_url("/hook"))
    return got


async def start(
    start_proxy: StartProxy, fake: FakeOpenAI, *, allow: bool = True
) -> TestServer:
    fetch = {"allow_http": True, "allow_hosts": ["127.0.0.1"]} if allow else {}
    webhooks = {"keys": {"team-a": {"secret_env": "TEAM_A_WEBHOOK_SECRET"}}, **FAST}
    return await start_proxy(
        providers_for(fake),
        keys=keys(),
        fetch=fetch,
        jobs={"webhooks": webhooks},
        environ={"OPENAI_API_KEY": UPSTREAM_KEY, "TEAM_A_WEBHOOK_SECRET": SECRET},
    )


async def test_the_terminal_job_is_posted_signed_and_verifies(
    start_proxy: StartProxy,
    fake_openai: FakeOpenAI,
    receiver: Receiver,
    registry: CollectorRegistry,
) -> None:
    receiver.statuses = [500, 503]  # taken on the third attempt
    proxy = await start(start_proxy, fake_openai)
    status, body, _ = await call(
        proxy,
        "POST",
        "/v3/images/edits",
        headers={**ASYNC, "Imagegate-Webhook-Url": receiver.url},
        data=form(),
    )
    assert status == 202, body
    done = await until(proxy, body["id"], "succeeded")
    await eventually(lambda: _delivered(registry), within_s=10)
    assert len(receiver.received) == 3
    payload, headers = receiver.received[-1]
    # The reference library's verify raises unless the signature and time hold.
    verified = Webhook(SECRET).verify(payload, headers)
    assert verified == done  # the job as GET shows it, result included
    assert headers["webhook-id"] == f"msg_{body['id']}"
    assert {h["webhook-id"] for _, h in receiver.received} == {headers["webhook-id"]}
    assert "Authorization" not in headers
    assert UPSTREAM_KEY not in str(headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(payload + b" ", headers)
    assert (
        metric(registry, "imagegate_webhook_deliveries_total", outcome="retried") == 2
    )


async def _delivered(registry: CollectorRegistry) -> bool:
    return (
        metric(registry, "imagegate_webhook_deliveries_total", outcome="delivered") == 1
    )


async def test_a_failed_job_is_delivered_too_from_the_body_field(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, receiver: Receiver
) -> None:
    from tests.fakes.openai import Reply

    proxy = await start(start_proxy, fake_openai)
    refusal = {"message": "Your request was rejected by the safety system.",
               "type": "image_generation_user_error", "param": None,
               "code": "moderation_blocked"}  # fmt: skip
    fake_openai.script(Reply(status=400, body={"error": refusal}))
    status, body, _ = await call(
        proxy,
        "POST",
        "/v3/images/generations",
        headers=ASYNC,
        json={"model": MODEL, "prompt": "a cat",
              "webhook_url": receiver.url},
    )  # fmt: skip
    assert status == 202, body
    failed = await until(proxy, body["id"], "failed")
    await eventually(_got(receiver), within_s=10)
    payload, headers = receiver.received[0]
    assert Webhook(SECRET).verify(payload, headers) == failed
    assert failed["status_code"] == 400
    assert failed["error"]["code"] == "moderation_blocked"
    # webhook_url is the gateway's: it was not forwarded to the provider.
    assert all("webhook_url" not in (r.json or {}) for r in fake_openai.received)


def _got(receiver: Receiver) -> Any:
    async def check() -> bool:
        return bool(receiver.received)

    return check


@pytest.mark.parametrize(
    ("allow", "url", "reason"),
    [
        (False, "http://127.0.0.1:9/hook", "only https"),
        (False, "https://127.0.0.1:9/hook", "loopback"),
        (True, "http://169.254.169.254/latest", "169.254.169.254"),
        (True, "ftp://example.com/x", "scheme"),
    ],
)
async def test_a_webhook_url_the_ssrf_policy_refuses_is_a_400_naming_it(
    start_proxy: StartProxy,
    fake_openai: FakeOpenAI,
    allow: bool,
    url: str,
    reason: str,
) -> None:
    proxy = await start(start_proxy, fake_openai, allow=allow)
    status, body, _ = await call(
        proxy,
        "POST",
        "/v3/images/edits",
        headers={**ASYNC, "Imagegate-Webhook-Url": url},
        data=form(),
    )
    assert status == 400, body
    assert body["error"]["param"] == "webhook_url"
    assert reason in body["error"]["message"]
    status, listing, _ = await call(proxy, "GET", "/v3/images/jobs")
    assert listing["data"] == []
    assert fake_openai.received == []


async def test_a_key_without_a_signing_secret_cannot_name_a_webhook(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, receiver: Receiver
) -> None:
    proxy = await start(start_proxy, fake_openai)
    status, body, _ = await call(
        proxy,
        "POST",
        "/v3/images/edits",
        key=KEY_B,
        headers={**ASYNC, "Imagegate-Webhook-Url": receiver.url},
        data=form(),
    )
    assert status == 400
    assert body["error"]["param"] == "webhook_url"
    assert body["error"]["code"] == "webhook_unsigned"


async def test_a_cancelled_job_is_delivered(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, receiver: Receiver
) -> None:
    from tests.fakes.openai import Reply, images_reply

    proxy = await start(start_proxy, fake_openai)
    hold, arrived = asyncio.Event(), asyncio.Event()
    fake_openai.script(Reply(body=images_reply(), hold=hold, arrived=arrived))
    _, body, _ = await call(
        proxy,
        "POST",
        "/v3/images/edits",
        headers={**ASYNC, "Imagegate-Webhook-Url": receiver.url},
        data=form(model=MODEL),
    )
    await arrived.wait()
    await call(proxy, "DELETE", f"/v3/images/jobs/{body['id']}")
    await eventually(_got(receiver), within_s=10)
    hold.set()
    payload, headers = receiver.received[0]
    assert Webhook(SECRET).verify(payload, headers) == await job(proxy, body["id"])
    assert Webhook(SECRET).verify(payload, headers)["status"] == "cancelled"


async def test_the_key_s_default_url_is_used_and_a_receiver_that_never_takes_it_is_given_up(
    start_proxy: StartProxy,
    fake_openai: FakeOpenAI,
    receiver: Receiver,
    registry: CollectorRegistry,
) -> None:
    receiver.statuses = [500] * 100
    hook = {"secret_env": "TEAM_A_WEBHOOK_SECRET", "url": receiver.url}
    proxy = await start_proxy(
        providers_for(fake_openai),
        keys=keys(),
        fetch={"allow_http": True, "allow_hosts": ["127.0.0.1"]},
        jobs={"webhooks": {"keys": {"team-a": hook}, **FAST, "retry_for_s": 0.5}},
        environ={"OPENAI_API_KEY": UPSTREAM_KEY, "TEAM_A_WEBHOOK_SECRET": SECRET},
    )
    status, body, _ = await call(
        proxy, "POST", "/v3/images/edits", headers=ASYNC, data=form()
    )
    assert status == 202

    async def given_up() -> bool:
        return (
            metric(registry, "imagegate_webhook_deliveries_total", outcome="failed")
            == 1
        )

    await eventually(given_up, within_s=10)
    assert len(receiver.received) >= 2
    payload, headers = receiver.received[0]
    assert Webhook(SECRET).verify(payload, headers)["id"] == body["id"]
