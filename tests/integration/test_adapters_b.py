"""Behaviour of the Azure, xAI, Bedrock, Replicate and BFL adapters beyond the shared
contract: polling outcomes and deadlines, host allowlists, fan-out, generation, sizes,
multi-image requests, signatures and credentials."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from tests.conftest import UPSTREAM_KEY, AiohttpServer, StartProxy
from tests.fakes.azure import FakeAzure
from tests.fakes.base import Reply
from tests.fakes.bedrock import AWS_ENV, FakeBedrock
from tests.fakes.bfl import FakeBFL
from tests.fakes.provider import LOCAL
from tests.fakes.replicate import FakeReplicate
from tests.fakes.xai import FakeXAI
from tests.images import png

IMAGE = png(8, 8, seed=5)


def _data_url(data: bytes = IMAGE) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


async def _serve(aiohttp_server: AiohttpServer, fake: Any) -> str:
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("")).rstrip("/")
    return str(fake.url)


async def _post(
    server: TestServer, path: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(server.make_url(path), json=body) as r,
    ):
        return r.status, await r.json()


def _edit(model: str, images: int = 1, **fields: Any) -> dict[str, Any]:
    refs = [{"image_url": _data_url(png(8, 8, seed=i))} for i in range(images)]
    return {"model": model, "prompt": "a hat", "images": refs, **fields}


# --- BFL -----------------------------------------------------------------------------


@pytest.fixture
async def bfl(aiohttp_server: AiohttpServer) -> FakeBFL:
    fake = FakeBFL(UPSTREAM_KEY)
    await _serve(aiohttp_server, fake)
    return fake


async def _bfl_proxy(start_proxy: StartProxy, fake: FakeBFL, **cfg: Any) -> TestServer:
    section = {"base_url": f"{fake.url}/v1", "poll_interval_s": 0.01,
               "allowed_hosts": LOCAL, **cfg}  # fmt: skip
    return await start_proxy({"bfl": section}, environ={"BFL_API_KEY": UPSTREAM_KEY})


@pytest.mark.parametrize(
    ("final", "status", "code"),
    [
        ("Error", 502, "upstream_job_failed"),
        ("Failed", 502, "upstream_job_failed"),
        ("Content Moderated", 400, "moderation_blocked"),
        ("Request Moderated", 400, "moderation_blocked"),
    ],
)
async def test_bfl_failed_jobs_are_clear_errors(
    start_proxy: StartProxy, bfl: FakeBFL, final: str, status: int, code: str
) -> None:
    bfl.final = final
    server = await _bfl_proxy(start_proxy, bfl)
    got, body = await _post(server, "/v3/images/edits", _edit("bfl/flux-kontext-pro"))
    assert got == status
    assert body["error"]["code"] == code
    assert final in body["error"]["message"]


async def test_bfl_job_past_its_deadline_is_504(
    start_proxy: StartProxy, bfl: FakeBFL
) -> None:
    bfl.final = "never"
    server = await _bfl_proxy(start_proxy, bfl, deadline_s=0.1)
    got, body = await _post(server, "/v3/images/edits", _edit("bfl/flux-kontext-pro"))
    assert got == 504
    assert body["error"]["code"] == "upstream_timeout"
    assert len(bfl.received) > 2  # it did poll before giving up


async def test_bfl_never_polls_outside_allowed_hosts(
    start_proxy: StartProxy, bfl: FakeBFL
) -> None:
    bfl.poll_base = "http://attacker.example"
    server = await _bfl_proxy(start_proxy, bfl)
    got, body = await _post(server, "/v3/images/edits", _edit("bfl/flux-kontext-pro"))
    assert got == 502
    assert "allowed hosts" in body["error"]["message"]
    assert [r.method for r in bfl.received] == ["POST"]


async def test_bfl_default_hosts_refuse_a_local_polling_url(
    start_proxy: StartProxy, bfl: FakeBFL
) -> None:
    server = await start_proxy(
        {"bfl": {"base_url": f"{bfl.url}/v1"}}, environ={"BFL_API_KEY": UPSTREAM_KEY}
    )
    got, _ = await _post(server, "/v3/images/edits", _edit("bfl/flux-kontext-pro"))
    assert got == 502
    assert len(bfl.received) == 1


async def test_bfl_kontext_multi_image_size_and_url_output(
    start_proxy: StartProxy, bfl: FakeBFL
) -> None:
    server = await _bfl_proxy(start_proxy, bfl)
    got, body = await _post(
        server,
        "/v3/images/edits",
        _edit("bfl/flux-kontext-max", images=2, size="1536x1024",
              response_format="url", seed=3, output_format="jpeg"),
    )  # fmt: skip
    assert got == 200, body
    assert body["data"][0]["url"].startswith(f"{bfl.url}/delivery/")
    sent = bfl.received[0].json
    assert sent is not None
    assert sent["aspect_ratio"] == "3:2"
    assert sent["seed"] == 3
    assert sent["output_format"] == "jpeg"
    assert set(sent) >= {"input_image", "input_image_2"}
    # url wanted: the sample is handed on, never downloaded.
    assert all(not r.path.startswith("/delivery/") for r in bfl.received)


async def test_bfl_n_fans_out_and_sums_cost(
    start_proxy: StartProxy, bfl: FakeBFL
) -> None:
    server = await _bfl_proxy(start_proxy, bfl)
    async with openai.AsyncOpenAI(
        base_url=str(server.make_url("/v3")), api_key="c", max_retries=0
    ) as sdk:
        result = await sdk.images.edit(
            model="bfl/flux-kontext-pro", image=("a.png", IMAGE, "image/png"),
            prompt="a hat", n=2,
        )  # fmt: skip
    assert result.data is not None
    assert len(result.data) == 2
    assert [r.path for r in bfl.received if r.method == "POST"] == [
        "/v1/flux-kontext-pro"
    ] * 2
    assert result.model_extra is not None
    assert result.model_extra["cost"] == pytest.approx(0.08)


async def test_bfl_generation_and_model_capabilities(
    start_proxy: StartProxy, bfl: FakeBFL
) -> None:
    server = await _bfl_proxy(start_proxy, bfl)
    got, body = await _post(
        server, "/v3/images/generations", {"model": "bfl/flux-pro-1.1", "prompt": "x"}
    )
    assert got == 200, body
    got, body = await _post(
        server,
        "/v3/images/generations",
        {"model": "bfl/flux-pro-1.0-fill", "prompt": "x"},
    )
    assert got == 400
    assert "generation" in body["error"]["message"]
    got, body = await _post(server, "/v3/images/edits", _edit("bfl/flux-pro-1.1"))
    assert got == 400
    got, body = await _post(
        server, "/v3/images/edits", _edit("bfl/flux-pro-1.0-expand", size="1024x1024")
    )
    assert got == 400
    assert body["error"]["param"] == "size"


async def test_bfl_error_detail_list_is_passed_on(
    start_proxy: StartProxy, bfl: FakeBFL
) -> None:
    server = await _bfl_proxy(start_proxy, bfl)
    bfl.script(
        Reply(422, {"detail": [{"loc": ["body", "seed"], "msg": "seed too large"}]})
    )
    got, body = await _post(server, "/v3/images/edits", _edit("bfl/flux-kontext-pro"))
    assert got == 422
    assert body["error"]["message"] == "seed too large"


# --- Replicate -------------------------------------------------------------------------


@pytest.fixture
async def rep(aiohttp_server: AiohttpServer) -> FakeReplicate:
    fake = FakeReplicate(UPSTREAM_KEY)
    await _serve(aiohttp_server, fake)
    return fake


async def _rep_proxy(
    start_proxy: StartProxy, fake: FakeReplicate, **cfg: Any
) -> TestServer:
    section = {"base_url": f"{fake.url}/v1", "poll_interval_s": 0.01,
               "output_hosts": LOCAL, **cfg}  # fmt: skip
    return await start_proxy(
        {"replicate": section}, environ={"REPLICATE_API_TOKEN": UPSTREAM_KEY}
    )


REP_MODEL = "replicate/black-forest-labs/flux-kontext-pro"


async def test_replicate_polls_past_prefer_wait(
    start_proxy: StartProxy, rep: FakeReplicate
) -> None:
    rep.sync = False
    rep.polls_before_done = 2
    server = await _rep_proxy(start_proxy, rep, wait_s=5)
    got, body = await _post(
        server, "/v3/images/edits", _edit(REP_MODEL, size="16:9", output_format="webp")
    )
    assert got == 200, body
    assert base64.b64decode(body["data"][0]["b64_json"]).startswith(b"\x89PNG")
    paths = [r.path for r in rep.received]
    assert paths[1:4] == ["/v1/predictions/p1"] * 3
    create = rep.received[0]
    assert create.headers["Prefer"] == "wait=5"
    assert create.json is not None
    assert create.json["input"]["aspect_ratio"] == "16:9"
    assert create.json["input"]["output_format"] == "webp"


async def test_replicate_failed_prediction_is_400_with_reason(
    start_proxy: StartProxy, rep: FakeReplicate
) -> None:
    rep.final = "failed"
    server = await _rep_proxy(start_proxy, rep)
    got, body = await _post(server, "/v3/images/edits", _edit(REP_MODEL))
    assert got == 400
    assert "NSFW content detected" in body["error"]["message"]
    assert body["error"]["code"] == "prediction_failed"


async def test_replicate_canceled_prediction_is_502(
    start_proxy: StartProxy, rep: FakeReplicate
) -> None:
    rep.final = "canceled"
    server = await _rep_proxy(start_proxy, rep)
    got, body = await _post(server, "/v3/images/edits", _edit(REP_MODEL))
    assert got == 502
    assert body["error"]["code"] == "prediction_canceled"


async def test_replicate_deadline_cancels_the_prediction(
    start_proxy: StartProxy, rep: FakeReplicate
) -> None:
    rep.final = "never"
    server = await _rep_proxy(start_proxy, rep, deadline_s=0.1)
    got, _body = await _post(server, "/v3/images/edits", _edit(REP_MODEL))
    assert got == 504
    assert rep.canceled == ["p1"]


async def test_replicate_output_outside_allowed_hosts_is_refused(
    start_proxy: StartProxy, rep: FakeReplicate
) -> None:
    server = await _rep_proxy(
        start_proxy, rep, output_hosts=["https://replicate.delivery"]
    )
    got, _body = await _post(server, "/v3/images/edits", _edit(REP_MODEL))
    assert got == 502
    assert not any(r.path.startswith("/delivery/") for r in rep.received)


async def test_replicate_url_output_and_generation(
    start_proxy: StartProxy, rep: FakeReplicate
) -> None:
    server = await _rep_proxy(start_proxy, rep)
    got, body = await _post(
        server,
        "/v3/images/generations",
        {"model": REP_MODEL, "prompt": "a cat", "response_format": "url"},
    )
    assert got == 200, body
    assert body["data"][0]["url"] == f"{rep.url}/delivery/p1.png"
    assert body["provider"] == "replicate"
    got, body = await _post(server, "/v3/images/edits", _edit(REP_MODEL, images=2))
    assert got == 200, body
    inputs = rep.received[-2].json
    assert inputs is not None
    assert len(inputs["input"]["input_images"]) == 2


# --- Bedrock ---------------------------------------------------------------------------


@pytest.fixture
async def aws(aiohttp_server: AiohttpServer) -> FakeBedrock:
    fake = FakeBedrock()
    await _serve(aiohttp_server, fake)
    return fake


async def _aws_proxy(
    start_proxy: StartProxy,
    fake: FakeBedrock,
    env: dict[str, str] = AWS_ENV,
    **cfg: Any,
) -> TestServer:
    return await start_proxy({"amazon": {"base_url": fake.url, **cfg}}, environ=env)


NOVA = "amazon/amazon.nova-canvas-v1:0"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"text": "another prompt"}, "text"),
        ({"maskImage": "AAAA"}, "maskImage"),
        ({"image": "AAAA"}, "image"),
    ],
)
async def test_bedrock_nova_client_fields_only_add(
    start_proxy: StartProxy, aws: FakeBedrock, fields: dict[str, Any], param: str
) -> None:
    server = await _aws_proxy(start_proxy, aws)
    got, body = await _post(server, "/v3/images/edits", _edit(NOVA, **fields))
    assert got == 400, body
    assert body["error"]["param"] == param
    assert aws.received == []


async def test_bedrock_wrong_secret_fails_the_signature(
    start_proxy: StartProxy, aws: FakeBedrock
) -> None:
    server = await _aws_proxy(
        start_proxy, aws, env={**AWS_ENV, "AWS_SECRET_ACCESS_KEY": "wrong"}
    )
    got, body = await _post(server, "/v3/images/edits", _edit(NOVA))
    assert got == 502
    assert body["error"]["code"] == "upstream_auth_error"
    assert "wrong" not in str(body)


async def test_bedrock_without_credentials_is_503(
    start_proxy: StartProxy, aws: FakeBedrock
) -> None:
    server = await _aws_proxy(start_proxy, aws, env={}, profile="no-such-profile")
    got, body = await _post(server, "/v3/images/edits", _edit(NOVA))
    assert got == 503
    assert body["error"]["code"] == "provider_not_configured"
    assert aws.received == []


async def test_bedrock_nova_variation_and_generation(
    start_proxy: StartProxy, aws: FakeBedrock
) -> None:
    server = await _aws_proxy(start_proxy, aws)
    got, body = await _post(
        server, "/v3/images/edits",
        _edit(NOVA, images=2, n=2, size="1024x1024", quality="high",
              seed=4, similarityStrength=0.5),
    )  # fmt: skip
    assert got == 200, body
    assert len(body["data"]) == 2
    sent = aws.last.json
    assert sent is not None
    assert sent["taskType"] == "IMAGE_VARIATION"
    assert len(sent["imageVariationParams"]["images"]) == 2
    assert sent["imageVariationParams"]["similarityStrength"] == 0.5
    assert sent["imageGenerationConfig"] == {
        "numberOfImages": 2, "quality": "premium", "seed": 4,
        "width": 1024, "height": 1024,
    }  # fmt: skip
    got, body = await _post(
        server, "/v3/images/generations",
        {"model": NOVA, "prompt": "a cat", "size": "1280x720", "quality": "low"},
    )  # fmt: skip
    assert got == 200, body
    sent = aws.last.json
    assert sent is not None
    assert sent["taskType"] == "TEXT_IMAGE"
    assert sent["imageGenerationConfig"]["width"] == 1280
    assert sent["imageGenerationConfig"]["quality"] == "standard"


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"size": "1000x1000"}, "size"), ({"n": 6}, "n"), ({"size": "16:9"}, "size")],
)
async def test_bedrock_nova_refuses_what_it_cannot_do(
    start_proxy: StartProxy, aws: FakeBedrock, fields: dict[str, Any], param: str
) -> None:
    server = await _aws_proxy(start_proxy, aws)
    got, body = await _post(server, "/v3/images/edits", _edit(NOVA, **fields))
    assert got == 400
    assert body["error"]["param"] == param
    assert aws.received == []


async def test_bedrock_stability_fans_out_and_filters(
    start_proxy: StartProxy, aws: FakeBedrock
) -> None:
    server = await _aws_proxy(start_proxy, aws)
    model = "amazon/stability.sd3-5-large-v1:0"
    got, body = await _post(
        server, "/v3/images/edits", _edit(model, n=2, output_format="jpeg")
    )
    assert got == 200, body
    assert len(body["data"]) == 2
    sent = aws.last.json
    assert sent is not None
    assert sent["mode"] == "image-to-image"
    assert sent["output_format"] == "jpeg"
    assert base64.b64decode(sent["image"]).startswith(b"\x89PNG")
    aws.script(Reply(200, {"seeds": [1], "finish_reasons": ["Filter reason: prompt"],
                           "images": []}))  # fmt: skip
    got, body = await _post(
        server,
        "/v3/images/generations",
        {"model": model, "prompt": "x", "size": "16:9"},
    )
    assert got == 400
    assert body["error"]["code"] == "content_filtered"
    assert aws.last.json is not None
    assert aws.last.json["aspect_ratio"] == "16:9"


async def test_bedrock_outpainting_keeps_white_edit_mask(
    start_proxy: StartProxy, aws: FakeBedrock
) -> None:
    from tests.integration.test_provider_contract import IMAGE as IMG
    from tests.integration.test_provider_contract import MASK, assert_white_edit

    server = await _aws_proxy(start_proxy, aws)
    body = {
        "model": NOVA, "prompt": "beach", "task_type": "OUTPAINTING",
        "images": [{"image_url": _data_url(IMG)}], "mask": {"image_url": _data_url(MASK)},
    }  # fmt: skip
    got, answer = await _post(server, "/v3/images/edits", body)
    assert got == 200, answer
    sent = aws.last.json
    assert sent is not None
    assert sent["taskType"] == "OUTPAINTING"
    assert_white_edit(base64.b64decode(sent["outPaintingParams"]["maskImage"]))


# --- xAI and Azure -------------------------------------------------------------------------


async def test_xai_multi_image_size_and_limits(
    start_proxy: StartProxy, aiohttp_server: AiohttpServer
) -> None:
    fake = FakeXAI(UPSTREAM_KEY)
    url = await _serve(aiohttp_server, fake)
    server = await start_proxy(
        {"xai": {"base_url": f"{url}/v1"}}, environ={"XAI_API_KEY": UPSTREAM_KEY}
    )
    model = "xai/grok-imagine-image"
    got, body = await _post(
        server, "/v3/images/edits", _edit(model, images=3, size="1536x1024", n=2)
    )
    assert got == 200, body
    sent = fake.last.json
    assert sent is not None
    assert len(sent["images"]) == 3
    assert "image" not in sent
    assert sent["aspect_ratio"] == "3:2"
    assert sent["n"] == 2
    assert body["cost"] == pytest.approx(0.04)
    calls = len(fake.received)
    got, body = await _post(server, "/v3/images/edits", _edit(model, images=4))
    assert got == 400
    assert body["error"]["param"] == "images"
    got, body = await _post(server, "/v3/images/edits", _edit(model, size="1000x999"))
    assert got == 400
    assert body["error"]["param"] == "size"
    assert len(fake.received) == calls
    got, body = await _post(
        server, "/v3/images/generations", {"model": model, "prompt": "x", "user": "u1"}
    )
    assert got == 200, body
    assert fake.last.path == "/v1/images/generations"


async def test_azure_generation_uses_the_deployment_path(
    start_proxy: StartProxy, aiohttp_server: AiohttpServer
) -> None:
    fake = FakeAzure(UPSTREAM_KEY)
    url = await _serve(aiohttp_server, fake)
    server = await start_proxy(
        {"azure": {"base_url": url, "deployments": {"img": "gpt-image-1.5"}}},
        environ={"AZURE_OPENAI_API_KEY": UPSTREAM_KEY},
    )
    got, body = await _post(
        server, "/v3/images/generations", {"model": "azure/img", "prompt": "x"}
    )
    assert got == 200, body
    assert fake.last.path == "/openai/deployments/img/images/generations"
    assert body["cost"] is not None  # priced as azure/gpt-image-1.5


async def test_replicate_sends_the_mask_white_edit(
    start_proxy: StartProxy, rep: FakeReplicate
) -> None:
    from tests.integration.test_provider_contract import IMAGE as IMG
    from tests.integration.test_provider_contract import MASK, assert_white_edit

    server = await _rep_proxy(start_proxy, rep)
    body = {"model": REP_MODEL, "prompt": "x", "images": [{"image_url": _data_url(IMG)}],
            "mask": {"image_url": _data_url(MASK)}}  # fmt: skip
    got, answer = await _post(server, "/v3/images/edits", body)
    assert got == 200, answer
    sent = rep.received[0].json
    assert sent is not None
    assert_white_edit(base64.b64decode(sent["input"]["mask"].partition(",")[2]))


async def test_replicate_success_without_output_is_502(
    start_proxy: StartProxy, rep: FakeReplicate
) -> None:
    server = await _rep_proxy(start_proxy, rep)
    rep.script(Reply(201, {"id": "p9", "status": "succeeded", "output": None}))
    got, body = await _post(server, "/v3/images/edits", _edit(REP_MODEL))
    assert got == 502
    assert "no image" in body["error"]["message"]


async def test_bfl_expand_sends_the_image_without_mask(
    start_proxy: StartProxy, bfl: FakeBFL
) -> None:
    server = await _bfl_proxy(start_proxy, bfl)
    got, body = await _post(
        server, "/v3/images/edits", _edit("bfl/flux-pro-1.0-expand", top=64)
    )
    assert got == 200, body
    sent = bfl.received[0].json
    assert sent is not None
    assert sent["top"] == 64
    assert "mask" not in sent
    assert base64.b64decode(sent["image"]).startswith(b"\x89PNG")


async def test_polling_wait_counts_as_upstream_time(
    start_proxy: StartProxy, bfl: FakeBFL, registry: CollectorRegistry
) -> None:
    bfl.pending_polls = 2
    server = await _bfl_proxy(start_proxy, bfl, poll_interval_s=0.2)
    got, _ = await _post(server, "/v3/images/edits", _edit("bfl/flux-kontext-pro"))
    assert got == 200
    overhead = registry.get_sample_value(
        "imagegate_overhead_seconds_sum", {"route": "/v3/images/edits"}
    )
    total = registry.get_sample_value(
        "imagegate_request_duration_seconds_sum", {"route": "/v3/images/edits"}
    )
    assert overhead is not None
    assert total is not None
    # The two 200 ms waits between polls belong to the provider, not to the gateway.
    assert total >= 0.4
    assert overhead < 0.2


@pytest.mark.parametrize(
    "model",
    ["bfl/../account", "bfl/..", "bfl/flux?x=1"],
)
async def test_model_ids_cannot_reach_other_provider_endpoints(
    start_proxy: StartProxy, bfl: FakeBFL, model: str
) -> None:
    server = await _bfl_proxy(start_proxy, bfl)
    got, body = await _post(
        server, "/v3/images/generations", {"model": model, "prompt": "x"}
    )
    assert got == 404
    assert body["error"]["code"] == "model_not_found"
    assert bfl.received == []
