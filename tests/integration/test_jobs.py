"""Async jobs in one process (no Redis): ``Prefer: respond-async`` answers 202 once
the request is valid, the job shows each state, its result is the synchronous answer
byte for byte, it can be cancelled queued (never sent) or running (abandoned, its
worst case charged), it belongs to its key, and its budget is spent when it runs."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from typing import Any

import aiohttp
import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from proxy.app import create_app
from proxy.controls import RedisSettings
from proxy.jobs.config import Jobs
from proxy.jobs.records import JobRecord
from proxy.jobs.redis_jobs import connect
from tests.conftest import UPSTREAM_KEY, StartProxy, build_config
from tests.fakes.openai import FakeOpenAI, Reply, images_reply
from tests.gateway import (
    KEY_A,
    KEY_B,
    eventually,
    key_entry,
    metric,
    providers_for,
    redis_server,
)
from tests.images import png
from tests.integration.test_budgets import COST, HIGH, WORST, left
from tests.integration.test_budgets import backend as backend  # memory, redis

ASYNC = {"Prefer": "respond-async"}
# The budget arithmetic is in its rates (tests/integration/test_budgets.py).
MODEL = "openai/gpt-image-2"  # as tests/integration/test_budgets.py


def keys(**rules: Any) -> dict[str, Any]:
    return {"team-a": key_entry(KEY_A, **rules), "team-b": key_entry(KEY_B)}


async def call(
    proxy: TestServer | str,
    method: str,
    path: str,
    *,
    key: str | None = KEY_A,
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> tuple[int, Any, dict[str, str]]:
    base = proxy if isinstance(proxy, str) else str(proxy.make_url(""))
    sent = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as s,
        s.request(
            method, f"{base}{path}", headers={**sent, **(headers or {})}, **kw
        ) as r,
    ):
        body = await r.read()
        return r.status, msgspec.json.decode(body) if body else None, dict(r.headers)


def form(**fields: Any) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for name, value in {
        "model": MODEL,
        "prompt": "a hat",
        **fields,
    }.items():
        data.add_field(name, str(value))
    data.add_field("image", png(), filename="a.png", content_type="image/png")
    return data


async def submit(proxy: TestServer | str, *, key: str = KEY_A, **fields: Any) -> str:
    status, body, headers = await call(
        proxy, "POST", "/v3/images/edits", key=key, headers=ASYNC, data=form(**fields)
    )
    assert status == 202, body
    assert headers["Location"] == f"/v3/images/jobs/{body['id']}"
    assert headers["Preference-Applied"] == "respond-async"
    assert body["object"] == "image.job"
    assert body["status"] == "queued"
    assert set(body) == {"id", "object", "status", "created_at"}
    job_id: str = body["id"]
    return job_id


async def job(proxy: TestServer | str, job_id: str, key: str = KEY_A) -> Any:
    status, body, _ = await call(proxy, "GET", f"/v3/images/jobs/{job_id}", key=key)
    assert status == 200, body
    return body


async def until(proxy: TestServer | str, job_id: str, *states: str) -> Any:
    seen: list[Any] = []

    async def reached() -> bool:
        seen.append(await job(proxy, job_id))
        return bool(seen[-1]["status"] in states)

    try:
        await eventually(reached, within_s=20)
    except AssertionError:
        raise AssertionError(f"job never {states}: {seen[-1]}") from None
    return seen[-1]


@pytest.fixture
async def gateway(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, backend: dict[str, Any]
) -> TestServer:
    return await start_proxy(providers_for(fake_openai), keys=keys(), **backend)


async def test_a_job_goes_queued_in_progress_succeeded_with_the_synchronous_body(
    start_proxy: StartProxy,
    fake_openai: FakeOpenAI,
    registry: CollectorRegistry,
    backend: dict[str, Any],
) -> None:
    proxy = await start_proxy(
        providers_for(fake_openai), keys=keys(), jobs={"workers": 1}, **backend
    )
    reply = images_reply()
    first, second = asyncio.Event(), asyncio.Event()
    arrived = asyncio.Event()
    fake_openai.script(
        Reply(body=reply, hold=first, arrived=arrived), Reply(body=reply, hold=second)
    )
    running = await submit(proxy, **HIGH)
    waiting = await submit(proxy, **HIGH)
    await arrived.wait()
    assert (await job(proxy, running))["status"] == "in_progress"
    assert (await job(proxy, waiting))["status"] == "queued"  # one worker
    first.set()
    done = await until(proxy, running, "succeeded")
    second.set()
    await until(proxy, waiting, "succeeded")
    # The synchronous call, answered from the same provider reply.
    fake_openai.script(Reply(body=reply))
    status, sync, _ = await call(proxy, "POST", "/v3/images/edits", data=form(**HIGH))
    assert status == 200
    assert done["result"] == sync
    assert done["result"]["cost"] == pytest.approx(COST)
    assert done["cost"] == done["result"]["cost"]
    assert done["provider"] == "openai"
    assert done["status_code"] == 200
    assert done["attempts"] == 1
    # The upstream received what the synchronous call sends: the multipart edit.
    sent = fake_openai.received
    assert [r.files[0].data for r in sent] == [png()] * 3
    assert sent[0].fields == sent[2].fields
    assert metric(registry, "imagegate_jobs_total", state="succeeded") == 2


async def test_a_bad_request_gets_its_4xx_at_once(
    gateway: TestServer, fake_openai: FakeOpenAI
) -> None:
    status, body, _ = await call(
        gateway, "POST", "/v3/images/edits", headers=ASYNC, data=form(n="99")
    )
    assert status == 400
    assert body["error"]["param"] == "n"
    status, body, _ = await call(
        gateway,
        "POST",
        "/v3/images/generations",
        headers=ASYNC,
        json={"model": MODEL, "prompt": "a cat", "stream": True},
    )
    assert status == 400
    assert body["error"]["param"] == "stream"
    status, body, _ = await call(
        gateway,
        "POST",
        "/v3/images/generations",
        headers=ASYNC,
        json={"model": "nope/x", "prompt": "a cat"},
    )
    assert status == 404
    assert body["error"]["param"] == "model"
    assert fake_openai.received == []


async def test_a_job_belongs_to_its_key(gateway: TestServer) -> None:
    job_id = await submit(gateway)
    await until(gateway, job_id, "succeeded")
    for method in ("GET", "DELETE"):
        status, body, _ = await call(
            gateway, method, f"/v3/images/jobs/{job_id}", key=KEY_B
        )
        assert status == 404
        assert body["error"]["code"] == "job_not_found"
    status, listing, _ = await call(gateway, "GET", "/v3/images/jobs", key=KEY_B)
    assert listing["data"] == []
    other = await submit(gateway)
    status, listing, _ = await call(gateway, "GET", "/v3/images/jobs?limit=1")
    assert [j["id"] for j in listing["data"]] == [other]
    assert listing["has_more"] is True
    assert "result" not in listing["data"][0]
    status, listing, _ = await call(
        gateway, "GET", f"/v3/images/jobs?limit=1&after={other}"
    )
    assert [j["id"] for j in listing["data"]] == [job_id]
    assert listing["has_more"] is False


async def test_a_cancelled_queued_job_never_runs(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, backend: dict[str, Any]
) -> None:
    proxy = await start_proxy(
        providers_for(fake_openai), keys=keys(), jobs={"workers": 1}, **backend
    )
    hold, arrived = asyncio.Event(), asyncio.Event()
    fake_openai.script(Reply(body=images_reply(), hold=hold, arrived=arrived))
    running = await submit(proxy)
    await arrived.wait()
    waiting = await submit(proxy)
    status, body, _ = await call(proxy, "DELETE", f"/v3/images/jobs/{waiting}")
    assert status == 200
    assert body["status"] == "cancelled"
    hold.set()
    await until(proxy, running, "succeeded")
    await asyncio.sleep(0.2)
    assert len(fake_openai.received) == 1
    assert (await job(proxy, waiting))["status"] == "cancelled"


async def test_a_cancelled_running_job_is_abandoned_and_charged_its_worst_case(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, backend: dict[str, Any]
) -> None:

    budget = 0.9
    proxy = await start_proxy(
        providers_for(fake_openai), keys=keys(budget_usd_day=budget), **backend
    )
    hold, arrived = asyncio.Event(), asyncio.Event()
    fake_openai.script(Reply(body=images_reply(), hold=hold, arrived=arrived))
    job_id = await submit(proxy, **HIGH)
    await arrived.wait()
    status, body, _ = await call(proxy, "DELETE", f"/v3/images/jobs/{job_id}")
    assert status == 200
    assert body["status"] == "cancelled"
    # The provider may still finish and bill the abandoned call: its worst case.
    await eventually(lambda: _close(left(proxy), budget - WORST), within_s=10)
    hold.set()
    await asyncio.sleep(0.1)
    assert (await job(proxy, job_id))["status"] == "cancelled"


async def _close(value: Any, expected: float) -> bool:
    got: float = await value
    return abs(got - expected) < 1e-6


async def test_a_job_spends_the_budget_when_it_runs_not_when_accepted(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:

    budget = 0.4  # room for one worst case ($0.210745) and a cost, not two worst
    proxy = await start_proxy(
        providers_for(fake_openai),
        keys=keys(budget_usd_day=budget),
        jobs={"workers": 1},
    )
    hold, arrived = asyncio.Event(), asyncio.Event()
    fake_openai.script(Reply(body=images_reply(), hold=hold, arrived=arrived))
    first = await submit(proxy, **HIGH)
    await arrived.wait()
    # Accepted while the first holds the budget: a 202 reserves nothing.
    second = await submit(proxy, **HIGH)
    hold.set()
    done = await until(proxy, first, "succeeded")
    assert done["cost"] == pytest.approx(COST)
    # The second runs after the first settled: it fits and is charged its own cost.
    await until(proxy, second, "succeeded")
    assert await left(proxy) == pytest.approx(budget - 2 * COST, abs=1e-6)


async def test_a_job_counts_once_against_rpm_and_polling_not_at_all(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(providers_for(fake_openai), keys=keys(rpm=1))
    job_id = await submit(proxy)
    await until(proxy, job_id, "succeeded")
    for _ in range(5):
        await job(proxy, job_id)
    status, _, _ = await call(proxy, "GET", "/v3/images/jobs")
    assert status == 200
    # The job was the one request of this minute.
    status, body, _ = await call(proxy, "POST", "/v3/images/edits", data=form())
    assert status == 429
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert len(fake_openai.received) == 1


async def test_a_job_whose_budget_no_longer_fits_fails_with_the_429_envelope(
    start_proxy: StartProxy,
    fake_openai: FakeOpenAI,
    backend: dict[str, Any],
) -> None:
    proxy = await start_proxy(
        providers_for(fake_openai), keys=keys(budget_usd_day=0.1), **backend
    )
    job_id = await submit(proxy, **HIGH)  # its worst case does not fit
    failed = await until(proxy, job_id, "failed")
    assert failed["status_code"] == 429
    assert failed["error"]["code"] == "budget_exceeded"
    assert set(failed["error"]) == {"message", "type", "param", "code"}
    assert fake_openai.received == []


async def test_a_job_over_the_key_s_concurrency_waits_its_turn(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        providers_for(fake_openai), keys=keys(concurrency=1), jobs={"workers": 2}
    )
    hold, arrived = asyncio.Event(), asyncio.Event()
    fake_openai.script(Reply(body=images_reply(), hold=hold, arrived=arrived))
    first = await submit(proxy)
    await arrived.wait()
    second = await submit(proxy)
    await asyncio.sleep(0.3)
    # Taken by the second worker, but not sent: the key's one slot is the first's.
    assert len(fake_openai.received) == 1
    hold.set()
    await until(proxy, first, "succeeded")
    done = await until(proxy, second, "succeeded")
    assert done["attempts"] == 1
    assert len(fake_openai.received) == 2


async def test_a_long_job_keeps_its_claim_while_it_runs(
    start_proxy: StartProxy,
    fake_openai: FakeOpenAI,
    aiohttp_server: Any,
    temp_root: Any,
) -> None:
    """Two gateways on one Redis, a lease of 0.5 s and a 2 s job: the runner renews
    its claim, so the idle one never takes the job over (no second upstream call)."""

    with redis_server() as redis:
        sections = {
            "keys": keys(),
            "redis_url": redis.url,
            "jobs": {"lease_s": 0.5, "poll_s": 0.05},
        }
        proxy = await start_proxy(providers_for(fake_openai), **sections)
        config = build_config(temp_root, providers_for(fake_openai), **sections)
        other = create_app(
            config,
            environ={"OPENAI_API_KEY": UPSTREAM_KEY},
            registry=CollectorRegistry(),
        )
        await aiohttp_server(other)
        fake_openai.script(Reply(body=images_reply(), delay_s=2))
        status, body, _ = await call(
            proxy,
            "POST",
            "/v3/images/generations",
            headers=ASYNC,
            json={"model": MODEL, "prompt": "a cat"},
        )
        assert status == 202
        done = await until(proxy, body["id"], "succeeded")
    assert done["attempts"] == 1
    assert len(fake_openai.received) == 1


async def _seed(url: str, **fields: Any) -> None:
    """A job record and its stream entry, as a replica leaves them, in a real Redis."""

    store, queue, close = connect(url, RedisSettings(), Jobs())
    base = {"key": "team-a", "created_at": int(time.time()), "model": MODEL,
            "fields": {}}  # fmt: skip
    record = msgspec.convert({**base, **fields}, JobRecord)
    await store.create(record, max_open=100)
    await queue.put(record.id)
    await close()


async def test_a_job_of_a_key_removed_since_fails_with_403(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:

    with redis_server() as redis:
        await _seed(redis.url, id="imgjob_orphan", key="team-gone")
        proxy = await start_proxy(
            providers_for(fake_openai), keys=keys(), redis_url=redis.url
        )
        # Shown to no remaining key; the record says how it ended.
        status, _, _ = await call(proxy, "GET", "/v3/images/jobs/imgjob_orphan")
        assert status == 404

        store, _, close = connect(redis.url, RedisSettings(), Jobs())

        async def ended() -> bool:
            record = await store.get("imgjob_orphan")
            return record is not None and record.state == "failed"

        await eventually(ended)
        record = await store.get("imgjob_orphan")
        await close()
    assert record is not None
    assert record.status_code == 403
    assert record.error is not None
    assert record.error["code"] == "key_removed"
    assert fake_openai.received == []


async def test_a_job_whose_replicas_kept_dying_is_not_run_again(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    """A job left in_progress by its third replica to die (the record and the stream
    entry as a dead replica leaves them, written to the real Redis) fails instead of
    costing a fourth upstream call."""

    with redis_server() as redis:
        await _seed(redis.url, id="imgjob_dying", state="in_progress", attempts=3)
        proxy = await start_proxy(
            providers_for(fake_openai), keys=keys(), redis_url=redis.url
        )
        failed = await until(proxy, "imgjob_dying", "failed")
        client = aioredis.Redis.from_url(redis.url)
        left = await client.xlen("imagegate:jobs:queue")
        await client.aclose()
    assert failed["status_code"] == 500
    assert failed["error"]["code"] == "job_abandoned"
    assert failed["attempts"] == 3
    assert fake_openai.received == []
    assert left == 0  # acknowledged: no replica takes it again


async def test_a_key_s_open_jobs_are_capped(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, backend: dict[str, Any]
) -> None:
    proxy = await start_proxy(
        providers_for(fake_openai),
        keys=keys(),
        jobs={"max_open_per_key": 1},
        **backend,
    )
    hold, arrived = asyncio.Event(), asyncio.Event()
    fake_openai.script(Reply(body=images_reply(), hold=hold, arrived=arrived))
    first = await submit(proxy)
    await arrived.wait()
    status, body, headers = await call(
        proxy, "POST", "/v3/images/edits", headers=ASYNC, data=form()
    )
    assert status == 429
    assert body["error"]["code"] == "too_many_jobs"
    assert headers["Retry-After"]
    await submit(proxy, key=KEY_B)  # another key's share is its own
    hold.set()
    await until(proxy, first, "succeeded")
    await submit(proxy)  # the first ended: room again


async def test_a_large_result_is_shown_byte_for_byte_in_pieces(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, backend: dict[str, Any]
) -> None:
    # Over proxy.held.WHOLE: joined off the loop when kept, written in pieces when shown.
    proxy = await start_proxy(providers_for(fake_openai), keys=keys(), **backend)
    big = base64.b64encode(os.urandom(5 * 1024 * 1024)).decode()
    reply = {**images_reply(), "data": [{"b64_json": big}]}
    fake_openai.script(Reply(body=reply), Reply(body=reply))
    job_id = await submit(proxy, **HIGH)
    await until(proxy, job_id, "succeeded")
    auth = {"Authorization": f"Bearer {KEY_A}"}
    async with aiohttp.ClientSession() as s:
        # With a key the synchronous answer is held whole, not relayed: the bytes
        # the job's result is made of.
        held = {**auth, "Idempotency-Key": "large-result"}
        async with s.post(
            proxy.make_url("/v3/images/edits"), headers=held, data=form(**HIGH)
        ) as r:
            assert r.status == 200
            sync = await r.read()
        async with s.get(
            proxy.make_url(f"/v3/images/jobs/{job_id}"), headers=auth
        ) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "application/json"
            shown = await r.read()
    assert len(sync) > 5 * 1024 * 1024
    assert shown.endswith(b',"result":' + sync + b"}")
    assert msgspec.json.decode(shown)["result"]["data"] == [{"b64_json": big}]


async def test_a_large_result_answers_head_without_a_body(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, backend: dict[str, Any]
) -> None:
    # A GET route answers HEAD too: a body after the head would be read as the
    # answer to the next request on the connection.
    proxy = await start_proxy(providers_for(fake_openai), keys=keys(), **backend)
    big = base64.b64encode(os.urandom(5 * 1024 * 1024)).decode()
    fake_openai.script(Reply(body={**images_reply(), "data": [{"b64_json": big}]}))
    job_id = await submit(proxy, **HIGH)
    await until(proxy, job_id, "succeeded")
    auth = {"Authorization": f"Bearer {KEY_A}"}
    url = proxy.make_url(f"/v3/images/jobs/{job_id}")
    connector = aiohttp.TCPConnector(limit=1)  # one connection: HEAD, then GET on it
    async with aiohttp.ClientSession(connector=connector) as s:
        async with s.head(url, headers=auth) as r:
            assert r.status == 200
            size = int(r.headers["Content-Length"])
        async with s.get(url, headers=auth) as r:
            assert r.status == 200
            shown = await r.read()
    assert len(shown) == size > 5 * 1024 * 1024
    assert msgspec.json.decode(shown)["result"]["data"] == [{"b64_json": big}]
