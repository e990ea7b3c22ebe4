"""A job's inputs and its limits: data URLs, file ids and multipart parts reach the
provider as the synchronous call sends them; an input deleted before the job runs
fails it with a 404 naming it; a full queue is a 503 that keeps nothing; the job
store down is a 503; with jobs disabled the preference is ignored."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestServer

from tests.conftest import StartGateway, StartProxy
from tests.fakes.openai import FakeOpenAI, Reply, images_reply
from tests.gateway import edit_body, eventually, providers_for, redis_server
from tests.images import png
from tests.integration.test_jobs import ASYNC, MODEL, call, form, keys, until


async def _uploads(proxy: TestServer) -> list[dict[str, Any]]:
    status, listing, _ = await call(proxy, "GET", "/v3/upload")
    assert status == 200
    files: list[dict[str, Any]] = listing["data"]
    return files


async def test_json_inputs_reach_the_provider_as_the_synchronous_call_sends_them(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(providers_for(fake_openai), keys=keys())
    status, up, _ = await call(proxy, "POST", "/v3/upload", data=_file_form())
    assert status == 200, up
    body = edit_body(MODEL, images=2)
    body["images"].append({"file_id": up["file_id"]})
    status, sync, _ = await call(proxy, "POST", "/v3/images/edits", json=body)
    assert status == 200, sync
    status, accepted, _ = await call(
        proxy, "POST", "/v3/images/edits", json=body, headers=ASYNC
    )
    assert status == 202, accepted
    await until(proxy, accepted["id"], "succeeded")
    first, second = fake_openai.received
    assert first.json == second.json
    # The job's stored copies of the two data URLs go once it ended; the client's
    # own file stays.

    async def only_the_clients() -> bool:
        return [f["file_id"] for f in await _uploads(proxy)] == [up["file_id"]]

    await eventually(only_the_clients)


def _file_form() -> Any:
    import aiohttp

    data = aiohttp.FormData()
    data.add_field(
        "file", png(5, 5, seed=3), filename="c.png", content_type="image/png"
    )
    return data


async def test_an_input_deleted_before_the_job_runs_fails_it_naming_the_input(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        providers_for(fake_openai), keys=keys(), jobs={"workers": 1}
    )
    hold, arrived = asyncio.Event(), asyncio.Event()
    fake_openai.script(Reply(body=images_reply(), hold=hold, arrived=arrived))
    _, first, _ = await call(
        proxy, "POST", "/v3/images/edits", headers=ASYNC, data=form()
    )
    await arrived.wait()
    _, second, _ = await call(
        proxy, "POST", "/v3/images/edits", headers=ASYNC, data=form()
    )
    stored = await _uploads(proxy)
    assert {f["purpose"] for f in stored} == {"job_input"}
    assert len(stored) == 2  # each job's image, kept until it ends
    # The running job's image was read already: deleting both leaves only the
    # queued job without its input.
    for stored_file in stored:
        await call(proxy, "DELETE", f"/v3/upload/{stored_file['file_id']}")
    hold.set()
    failed = await until(proxy, second["id"], "failed")
    assert failed["status_code"] == 404
    assert failed["error"]["param"] == "images[0]"
    assert failed["error"]["code"] == "file_not_found"
    await until(proxy, first["id"], "succeeded")
    assert len(fake_openai.received) == 1


async def test_a_full_queue_is_a_503_that_keeps_nothing(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        providers_for(fake_openai), keys=keys(), jobs={"workers": 1, "max_queued": 1}
    )
    hold, arrived = asyncio.Event(), asyncio.Event()
    fake_openai.script(Reply(body=images_reply(), hold=hold, arrived=arrived))
    await call(proxy, "POST", "/v3/images/edits", headers=ASYNC, data=form())
    await arrived.wait()
    status, _, _ = await call(
        proxy, "POST", "/v3/images/edits", headers=ASYNC, data=form()
    )
    assert status == 202  # waits: the one place in the queue
    status, body, headers = await call(
        proxy, "POST", "/v3/images/edits", headers=ASYNC, data=form()
    )
    assert status == 503
    assert body["error"]["code"] == "job_queue_full"
    assert headers["Retry-After"]
    assert len(await _uploads(proxy)) == 2  # the refused job's image is not kept
    status, listing, _ = await call(proxy, "GET", "/v3/images/jobs")
    assert [j["status"] for j in listing["data"]] == ["failed", "queued", "in_progress"]
    hold.set()


async def test_the_job_store_down_is_a_503(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    with redis_server() as redis:
        proxy = await start_proxy(
            providers_for(fake_openai), keys=keys(), redis_url=redis.url
        )
        redis.kill()
        status, body, _ = await call(
            proxy, "POST", "/v3/images/edits", headers=ASYNC, data=form()
        )
    assert status == 503
    assert body["error"]["code"] == "storage_unavailable"
    assert await _uploads(proxy) == []
    assert fake_openai.received == []


async def test_with_jobs_disabled_the_preference_is_ignored(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        providers_for(fake_openai), keys=keys(), jobs={"enabled": False}
    )
    status, body, headers = await call(
        proxy, "POST", "/v3/images/edits", headers=ASYNC, data=form()
    )
    assert status == 200
    assert body["provider"] == "openai"
    assert "Preference-Applied" not in headers
    status, _, _ = await call(proxy, "GET", "/v3/images/jobs")
    assert status == 404


async def test_several_workers_without_redis_ignore_the_preference(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, tmp_path: Any
) -> None:
    # Worker processes (--workers) would each hold their own jobs: a poll could land
    # on a worker that does not know the job.
    from tests.conftest import UPSTREAM_KEY

    proxy = await start_proxy(
        providers_for(fake_openai),
        keys=keys(),
        environ={
            "OPENAI_API_KEY": UPSTREAM_KEY,
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        },
    )
    status, body, headers = await call(
        proxy, "POST", "/v3/images/edits", headers=ASYNC, data=form()
    )
    assert status == 200
    assert "Preference-Applied" not in headers
    status, body, _ = await call(proxy, "GET", "/v3/images/jobs/imgjob_x")
    assert status == 404
    assert body["error"]["code"] == "jobs_unavailable"


async def test_references_the_job_could_not_use_are_refused_at_once(
    start_gateway: StartGateway,
) -> None:
    # Gemini takes no file ids of its own: an id the gateway does not hold is a 404.
    gateway = await start_gateway("google", keys=keys())
    model = "google/gemini-3.1-flash-image"
    cases = [
        ({"file_id": "file-nobody-uploaded"}, 404, "images[0].file_id"),
        ({"image_url": "ftp://example.com/a.png"}, 400, "images[0].image_url"),
    ]
    for ref, expected, param in cases:
        body = {"model": model, "prompt": "a hat", "images": [ref]}
        status, answer, _ = await call(
            gateway.proxy, "POST", "/v3/images/edits", json=body, headers=ASYNC
        )
        assert status == expected, answer
        assert answer["error"]["param"] == param
    status, listing, _ = await call(gateway.proxy, "GET", "/v3/images/jobs")
    assert listing["data"] == []
