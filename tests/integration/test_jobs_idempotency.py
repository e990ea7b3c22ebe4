"""Idempotency keys and async jobs together: an async request repeated with the same
``Idempotency-Key`` (20 at once, as a retrying client fleet might) gets the same job,
its 202 replayed with its Location; the job runs once and is billed once."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestServer

from tests.conftest import StartProxy
from tests.fakes.openai import FakeOpenAI
from tests.gateway import providers_for
from tests.integration.test_budgets import backend as backend  # memory, redis
from tests.integration.test_jobs import ASYNC, MODEL, call, keys, until


async def test_one_key_twenty_async_requests_one_job(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, backend: dict[str, str]
) -> None:
    proxy: TestServer = await start_proxy(
        providers_for(fake_openai), keys=keys(), **backend
    )
    body = {"model": MODEL, "prompt": "a cat"}
    headers = {**ASYNC, "Idempotency-Key": "job-once-1"}
    answers = await asyncio.gather(
        *(
            call(proxy, "POST", "/v3/images/generations", json=body, headers=headers)
            for _ in range(20)
        )
    )
    assert {status for status, _, _ in answers} == {202}
    assert len({answer["id"] for _, answer, _ in answers}) == 1
    assert len({h["Location"] for _, _, h in answers}) == 1
    assert {h["Preference-Applied"] for _, _, h in answers} == {"respond-async"}
    assert sum(h.get("Idempotent-Replayed") == "true" for _, _, h in answers) == 19
    job_id = answers[0][1]["id"]
    done = await until(proxy, job_id, "succeeded")
    _, listing, _ = await call(proxy, "GET", "/v3/images/jobs")
    assert [j["id"] for j in listing["data"]] == [job_id]
    assert len(fake_openai.received) == 1
    assert done["cost"] is not None
