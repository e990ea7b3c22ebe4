"""``Idempotency-Key`` through HTTP, on the in-memory store and on a real Redis: one
upstream call and one charge for many repeats, 422 on another body, 409 or a wait
while the first runs, which answers are kept, multipart repeats with new boundaries,
and the header's checks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from proxy.app import create_app
from tests.conftest import UPSTREAM_KEY, AiohttpServer, ServeFake, build_config
from tests.fakes.openai import FakeOpenAI, Reply
from tests.gateway import (
    KEY_A,
    KEY_B,
    Gate,
    eventually,
    key_entry,
    metric,
    redis_server,
)
from tests.images import png
from tests.s3server import s3_server

Start = Callable[..., Awaitable[tuple[TestServer, CollectorRegistry]]]
Result = tuple[int, dict[str, Any], dict[str, str]]


@pytest.fixture
async def gate_fake(serve_fake: ServeFake) -> AsyncIterator[tuple[FakeOpenAI, Gate]]:
    fake, gate = FakeOpenAI(UPSTREAM_KEY), Gate()
    gate.install(fake.app)
    await serve_fake("openai", fake)
    gate.open()  # tests that hold requests clear it first
    yield fake, gate
    gate.open()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "memory":
        yield None
    else:
        with redis_server() as server:
            yield server.url


@pytest.fixture
def start(aiohttp_server: AiohttpServer, temp_root: Path) -> Start:
    async def start_one(
        upstream_url: str,
        redis_url: str | None = None,
        environ: dict[str, str] | None = None,
        **sections: Any,
    ) -> tuple[TestServer, CollectorRegistry]:
        registry = CollectorRegistry()
        sections.setdefault(
            "keys",
            {
                "team-a": key_entry(KEY_A, budget_usd_day=5.0),
                "team-b": key_entry(KEY_B),
            },
        )
        if redis_url is not None:
            sections["redis_url"] = redis_url
        config = build_config(
            temp_root, {"openai": {"base_url": upstream_url}}, **sections
        )
        app: web.Application = create_app(
            config,
            environ={"OPENAI_API_KEY": UPSTREAM_KEY, **(environ or {})},
            registry=registry,
        )
        return await aiohttp_server(app), registry

    return start_one


async def post(
    proxy: TestServer,
    idem: str | None,
    *,
    key: str = KEY_A,
    path: str = "/v3/images/generations",
    **body: Any,
) -> Result:
    headers = {"Authorization": f"Bearer {key}"}
    if idem is not None:
        headers["Idempotency-Key"] = idem
    body = {"model": "openai/gpt-image-2", "prompt": "a cat", **body}
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url(path), json=body, headers=headers) as r,
    ):
        return r.status, await r.json(), dict(r.headers)


async def spent(proxy: TestServer, key: str = KEY_A) -> float:
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        aiohttp.ClientSession() as s,
        s.get(proxy.make_url("/v3/usage"), headers=headers) as r,
    ):
        usage = await r.json()
    value: float = usage["day"]["spent_usd"]
    return value


async def test_twenty_concurrent_repeats_make_one_call_and_one_charge(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate], backend: str | None
) -> None:
    fake, gate = gate_fake
    proxy, registry = await start(fake.url, backend)  # type: ignore[attr-defined]
    gate.released.clear()
    calls = [asyncio.ensure_future(post(proxy, "order-1")) for _ in range(20)]

    async def all_in() -> bool:
        return metric(registry, "imagegate_inflight_requests") == 20

    await gate.wait_for(1)
    await eventually(all_in)  # 19 repeats wait while the first is upstream
    gate.open()
    results = await asyncio.gather(*calls)
    assert [r[0] for r in results] == [200] * 20
    assert all(r[1] == results[0][1] for r in results)
    cost = results[0][1]["cost"]
    assert cost > 0
    replayed = [r[2].get("Idempotent-Replayed") for r in results]
    assert replayed.count("true") == 19
    assert len(fake.received) == 1
    assert await spent(proxy) == pytest.approx(cost, abs=1e-6)
    outcome = "imagegate_idempotency_requests_total"
    assert metric(registry, outcome, outcome="replayed") == 19
    assert metric(registry, outcome, outcome="stored") == 1
    upstream = "imagegate_upstream_requests_total"
    assert metric(registry, upstream, provider="openai", outcome="2xx") == 1
    # Later repeats too, for as long as the answer is kept.
    status, body, headers = await post(proxy, "order-1")
    assert (status, body, headers["Idempotent-Replayed"]) == (
        200,
        results[0][1],
        "true",
    )
    assert len(fake.received) == 1
    assert await spent(proxy) == pytest.approx(cost, abs=1e-6)


async def test_another_body_with_the_same_key_is_422(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate], backend: str | None
) -> None:
    fake, _ = gate_fake
    proxy, registry = await start(fake.url, backend)  # type: ignore[attr-defined]
    assert (await post(proxy, "k1"))[0] == 200
    status, body, headers = await post(proxy, "k1", prompt="a dog")
    assert status == 422
    assert body["error"]["code"] == "idempotency_key_reused"
    assert body["error"]["param"] == "Idempotency-Key"
    assert headers["x-should-retry"] == "false"
    # Another path is another request as well.
    status, _, _ = await post(proxy, "k1", path="/v1/images/generations")
    assert status == 422
    assert len(fake.received) == 1
    outcome = "imagegate_idempotency_requests_total"
    assert metric(registry, outcome, outcome="mismatch") == 2
    reason = "imagegate_rejected_requests_total"
    assert metric(registry, reason, reason="idempotency_mismatch") == 2


async def test_key_order_and_spacing_are_the_same_request(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate]
) -> None:
    fake, _ = gate_fake
    proxy, _ = await start(fake.url)  # type: ignore[attr-defined]
    headers = {"Authorization": f"Bearer {KEY_A}", "Idempotency-Key": "same",
               "Content-Type": "application/json"}  # fmt: skip
    bodies = [
        b'{"model": "openai/gpt-image-2", "prompt": "a cat", "n": 1}',
        b'{"n":1,"prompt":"a cat","model":"openai/gpt-image-2"}',
    ]
    answers = []
    async with aiohttp.ClientSession() as s:
        for data in bodies:
            url = proxy.make_url("/v3/images/generations")
            async with s.post(url, data=data, headers=headers) as r:
                answers.append((r.status, await r.read()))
    assert answers[0] == answers[1]
    assert len(fake.received) == 1


async def test_keys_are_scoped_to_the_client_key(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate]
) -> None:
    fake, _ = gate_fake
    proxy, _ = await start(fake.url)  # type: ignore[attr-defined]
    a = await post(proxy, "shared", key=KEY_A)
    b = await post(proxy, "shared", key=KEY_B)
    assert (a[0], b[0]) == (200, 200)
    assert "Idempotent-Replayed" not in b[2]
    assert len(fake.received) == 2


async def test_a_repeat_waits_for_the_first_then_gets_409(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate], backend: str | None
) -> None:
    fake, gate = gate_fake
    proxy, registry = await start(fake.url, backend, idempotency={"wait_s": 0.3})  # type: ignore[attr-defined]
    gate.released.clear()
    first = asyncio.ensure_future(post(proxy, "slow"))
    await gate.wait_for(1)
    status, body, headers = await post(proxy, "slow")
    assert status == 409
    assert body["error"]["code"] == "idempotency_key_in_use"
    assert body["error"]["param"] == "Idempotency-Key"
    assert headers["Retry-After"] == "1"
    assert "x-should-retry" not in headers  # the SDKs retry a 409
    gate.open()
    assert (await first)[0] == 200
    status, _, headers = await post(proxy, "slow")
    assert (status, headers["Idempotent-Replayed"]) == (200, "true")
    assert len(fake.received) == 1
    outcome = "imagegate_idempotency_requests_total"
    assert metric(registry, outcome, outcome="conflict") == 1


async def test_a_repeat_within_wait_s_gets_the_answer(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate], backend: str | None
) -> None:
    fake, gate = gate_fake
    proxy, _ = await start(fake.url, backend, idempotency={"wait_s": 30})  # type: ignore[attr-defined]
    gate.released.clear()
    first = asyncio.ensure_future(post(proxy, "waits"))
    await gate.wait_for(1)
    second = asyncio.ensure_future(post(proxy, "waits"))
    await asyncio.sleep(0.3)
    assert not second.done()
    gate.open()
    a, b = await first, await second
    assert (a[0], b[0], b[1]) == (200, 200, a[1])
    assert b[2]["Idempotent-Replayed"] == "true"
    assert len(fake.received) == 1


async def test_retryable_failures_are_not_kept_deterministic_ones_are(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate], backend: str | None
) -> None:
    fake, _ = gate_fake
    proxy, _ = await start(fake.url, backend)  # type: ignore[attr-defined]
    fake.script(Reply(status=500))
    assert (await post(proxy, "k5"))[0] == 502
    status, _, headers = await post(proxy, "k5")  # the retry runs
    assert (status, "Idempotent-Replayed" in headers) == (200, False)
    assert len(fake.received) == 2
    refusal = {"error": {"message": "Your request was rejected by the safety system.",
                         "type": "invalid_request_error", "param": None,
                         "code": "moderation_blocked"}}  # fmt: skip
    fake.script(Reply(status=400, body=refusal))
    first = await post(proxy, "k4", prompt="something refused")
    again = await post(proxy, "k4", prompt="something refused")
    assert (first[0], again[0]) == (400, 400)
    assert again[1] == first[1]
    assert again[2]["Idempotent-Replayed"] == "true"
    assert again[2]["x-should-retry"] == first[2]["x-should-retry"]
    assert len(fake.received) == 3


async def test_multipart_repeat_with_a_new_boundary_is_replayed(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate]
) -> None:
    fake, _ = gate_fake
    proxy, _ = await start(fake.url)  # type: ignore[attr-defined]

    async def edit(image: bytes) -> Result:
        form = aiohttp.FormData()  # a random boundary each time
        form.add_field("model", "openai/gpt-image-2")
        form.add_field("prompt", "a hat")
        form.add_field("image", image, filename="a.png", content_type="image/png")
        headers = {"Authorization": f"Bearer {KEY_A}", "Idempotency-Key": "edit-1"}
        async with (
            aiohttp.ClientSession() as s,
            s.post(proxy.make_url("/v3/images/edits"), data=form, headers=headers) as r,
        ):
            return r.status, await r.json(), dict(r.headers)

    first, again = await edit(png(8, 8, seed=1)), await edit(png(8, 8, seed=1))
    assert (first[0], again[0], again[1]) == (200, 200, first[1])
    assert again[2]["Idempotent-Replayed"] == "true"
    other = await edit(png(8, 8, seed=2))  # other file bytes: another request
    assert (other[0], other[1]["error"]["code"]) == (422, "idempotency_key_reused")
    assert len(fake.received) == 1


@pytest.mark.parametrize(
    "value",
    ["x" * 256, "caf\u00e9", "tab\tin", ""],
    ids=["long", "utf8", "tab", "empty"],
)
async def test_a_bad_header_is_400_naming_it(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate], value: str
) -> None:
    fake, _ = gate_fake
    proxy, _ = await start(fake.url)  # type: ignore[attr-defined]
    status, body, _ = await post(proxy, value)
    assert status == 400
    assert body["error"]["param"] == "Idempotency-Key"
    assert body["error"]["code"] == "invalid_idempotency_key"
    assert fake.received == []
    assert (await post(proxy, "x" * 255))[0] == 200


async def test_streamed_requests_refuse_the_header(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate]
) -> None:
    fake, _ = gate_fake
    proxy, _ = await start(fake.url)  # type: ignore[attr-defined]
    status, body, _ = await post(proxy, "s1", stream=True)
    assert status == 400
    assert body["error"]["code"] == "idempotency_stream_unsupported"
    assert body["error"]["param"] == "Idempotency-Key"
    assert fake.received == []


async def test_an_answer_too_large_to_keep_is_never_run_again(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate]
) -> None:
    fake, _ = gate_fake
    proxy, registry = await start(fake.url, idempotency={"max_answer_bytes": 100})  # type: ignore[attr-defined]
    assert (await post(proxy, "big"))[0] == 200
    status, body, headers = await post(proxy, "big")
    assert status == 409
    assert body["error"]["code"] == "idempotency_answer_not_kept"
    assert headers["x-should-retry"] == "false"
    assert len(fake.received) == 1
    outcome = "imagegate_idempotency_requests_total"
    assert metric(registry, outcome, outcome="not_kept") == 2


async def test_disabled_ignores_the_header(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate]
) -> None:
    fake, _ = gate_fake
    proxy, _ = await start(fake.url, idempotency={"enabled": False})  # type: ignore[attr-defined]
    assert [(await post(proxy, "k"))[0] for _ in range(2)] == [200, 200]
    assert len(fake.received) == 2


async def test_keyless_scope_is_the_client_address(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate]
) -> None:
    fake, _ = gate_fake
    proxy, _ = await start(fake.url, keys={})  # type: ignore[attr-defined]
    a, b = await post(proxy, "anon"), await post(proxy, "anon")
    assert (a[0], b[0], b[2]["Idempotent-Replayed"]) == (200, 200, "true")
    assert len(fake.received) == 1


async def test_a_long_request_keeps_its_claim_past_the_lease(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate]
) -> None:
    fake, gate = gate_fake
    with redis_server() as redis:
        proxy, _ = await start(fake.url, redis.url, idempotency={"lease_s": 1})  # type: ignore[attr-defined]
        gate.released.clear()
        first = asyncio.ensure_future(post(proxy, "long"))
        await gate.wait_for(1)
        await asyncio.sleep(2.5)  # past two leases: renewed by the running replica
        second = asyncio.ensure_future(post(proxy, "long"))
        await asyncio.sleep(0.3)
        assert not second.done()  # waiting, not running
        gate.open()
        a, b = await first, await second
    assert (a[0], b[0], b[2]["Idempotent-Replayed"]) == (200, 200, "true")
    assert len(fake.received) == 1


async def test_redis_down_is_503_for_idempotent_requests_only(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate]
) -> None:
    fake, _ = gate_fake
    with redis_server() as redis:
        proxy, _ = await start(
            fake.url,  # type: ignore[attr-defined]
            redis.url,
            keys={"team-b": key_entry(KEY_B)},
        )
        assert (await post(proxy, "before", key=KEY_B))[0] == 200
        redis.kill()
        status, body, headers = await post(proxy, "after", key=KEY_B)
        assert (status, body["error"]["code"]) == (503, "idempotency_unavailable")
        assert headers["Retry-After"] == "1"
        assert (await post(proxy, None, key=KEY_B))[0] == 200
    assert len(fake.received) == 2


async def test_large_answers_go_to_the_bucket_in_process(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate]
) -> None:
    fake, _ = gate_fake
    with s3_server() as s3:
        bucket = await asyncio.to_thread(s3.bucket, "idempotency-answers")
        proxy, _ = await start(
            fake.url,  # type: ignore[attr-defined]
            environ=s3.credentials,
            files=s3.files_config(bucket),
            idempotency={"max_answer_bytes": 100},
        )
        first, again = await post(proxy, "big"), await post(proxy, "big")
        assert (first[0], again[0], again[1]) == (200, 200, first[1])
        assert again[2]["Idempotent-Replayed"] == "true"
        assert len(fake.received) == 1
        # An answer whose object is gone is not run again either.
        client = await asyncio.to_thread(s3.client)
        listed = await asyncio.to_thread(
            client.list_objects_v2, Bucket=bucket, Prefix="imagegate/idempotency/"
        )
        for item in listed["Contents"]:
            await asyncio.to_thread(
                client.delete_object, Bucket=bucket, Key=item["Key"]
            )
        status, body, _ = await post(proxy, "big")
        assert (status, body["error"]["code"]) == (409, "idempotency_answer_not_kept")
        assert len(fake.received) == 1
        # The bucket down when the answer is to be kept: its client still gets it.
        await asyncio.to_thread(s3.process.kill)
        await asyncio.to_thread(s3.process.wait)
        first = await post(proxy, "big-2")
        assert first[0] == 200
        status, body, _ = await post(proxy, "big-2")
        assert (status, body["error"]["code"]) == (409, "idempotency_answer_not_kept")
        assert len(fake.received) == 2


async def test_redis_lost_mid_request_still_answers_the_first(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate]
) -> None:
    fake, gate = gate_fake
    with redis_server() as redis:
        proxy, registry = await start(
            fake.url,  # type: ignore[attr-defined]
            redis.url,
            keys={"team-b": key_entry(KEY_B)},
        )
        gate.released.clear()
        first = asyncio.ensure_future(post(proxy, "mid", key=KEY_B))
        await gate.wait_for(1)
        redis.kill()
        gate.open()
        status, body, _ = await first
        # Answered though it could not be kept (its claim expires after its lease).
        assert (status, body["provider"]) == (200, "openai")
    errors = "imagegate_limit_store_errors_total"
    assert metric(registry, errors, operation="idempotency_keep") == 1


async def test_a_deeply_nested_body_with_a_key_is_kept_like_any_other(
    start: Start, gate_fake: tuple[FakeOpenAI, Gate]
) -> None:
    # The body decodes (msgspec takes ~1000 levels), but the fingerprint walked it
    # recursively: 600 nested lists in a field raised RecursionError, a 500.
    fake, _ = gate_fake
    proxy, _ = await start(fake.url, None)  # type: ignore[attr-defined]
    nested: Any = []
    for _ in range(600):
        nested = [nested]
    status, first, _ = await post(proxy, "deep", extra_field=nested)
    assert status == 200, first
    status, again, headers = await post(proxy, "deep", extra_field=nested)
    assert status == 200, again
    assert headers["Idempotent-Replayed"] == "true"
    assert again == first
    assert len(fake.received) == 1
