"""Each provider's pure translation: ``build(job, prepared) -> UpstreamCall`` and
``parse(provider, reply) -> Outputs``, without servers; plus ``prepare``, the one
place images are read, base64-encoded and masks converted."""

from __future__ import annotations

import base64
import inspect
import io
from typing import Any

import msgspec
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from PIL import Image

from proxy.errors import (
    InvalidRequest,
    UnknownModel,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
)
from proxy.formwriter import Form
from proxy.models import EditJob, FileRef, RemoteImage, StoredImage
from proxy.providers import (
    amazon,
    azure,
    bfl,
    google,
    openai,
    replicate,
    stabilityai,
    vertex,
    xai,
)
from proxy.providers._call import UpstreamCall
from proxy.providers._prepare import Needs, Prepared, image_b64, prepare
from proxy.providers._results import Encoded, Outputs
from proxy.upstream import UpstreamResponse
from tests.images import png

IMAGE = png(4, 4)
STORED = StoredImage(
    content_type="image/png", size=len(IMAGE), filename="a.png", data=IMAGE
)
B64 = base64.b64encode(IMAGE).decode()
ONE = Prepared(images=(B64,))


def job(**fields: Any) -> EditJob:
    base: dict[str, Any] = {
        "operation": "edit", "provider": "p", "model": "m", "prompt": "a hat",
        "source": "json", "images": (STORED,),
    }  # fmt: skip
    return EditJob(**{**base, **fields})


def reply(status: int, body: Any = b"", **headers: str) -> UpstreamResponse:
    raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
    return UpstreamResponse(status, CIMultiDictProxy(CIMultiDict(headers)), raw)


def json_of(call: UpstreamCall) -> Any:
    assert isinstance(call.body, bytes)
    return msgspec.json.decode(call.body)


def form_text(call: UpstreamCall) -> str:
    assert isinstance(call.body, Form)
    return call.body.payload().decode("latin-1")


# prepare


async def test_prepare_reuses_data_urls_and_leaves_urls_and_ids() -> None:
    from_url = msgspec.structs.replace(STORED, b64=b"QUJD")
    images = (from_url, STORED, RemoteImage("https://a/b.png"), FileRef("file-1"))
    got = await prepare(job(images=images, mask=STORED), Needs(base64=True))
    assert got == Prepared(images=(None, B64, None, None), mask=B64)
    assert image_b64(job(images=images), got, 0, provider="p") == "QUJD"
    assert await prepare(job(mask=STORED), Needs()) == Prepared()


def _pixels(png_bytes: bytes) -> list[int]:
    with Image.open(io.BytesIO(png_bytes)) as img:
        return sorted(set(img.convert("L").tobytes()))


async def test_prepare_converts_the_mask_to_either_polarity() -> None:
    mask = StoredImage(
        content_type="image/png", size=0, filename="", data=png(4, 4, alpha=0)
    )
    white = await prepare(job(mask=mask), Needs(edit_mask="white"))
    black = await prepare(job(mask=mask), Needs(edit_mask="black"))
    assert white.edit_mask is not None
    assert black.edit_mask is not None
    assert _pixels(white.edit_mask) == [255]  # alpha 0 everywhere: all edit
    assert _pixels(black.edit_mask) == [0]
    assert black.edit_mask_b64 == base64.b64encode(black.edit_mask).decode()
    assert white.images == ()  # base64 of the images was not asked for


# OpenAI, Azure, xAI


def test_openai_builds_multipart_from_multipart_and_json_from_json() -> None:
    adapter = openai.OpenAIAdapter(openai.Config(organization="org-1"))
    multipart = job(source="multipart", model="gpt-image-2", response_format="b64_json")
    assert adapter.needs(multipart) == Needs(base64=False)
    call = adapter.build(multipart, Prepared())
    assert (call.method, call.path) == ("POST", "/images/edits")
    assert call.headers["OpenAI-Organization"] == "org-1"
    text = form_text(call)
    assert 'name="image"; filename="a.png"' in text
    assert "response_format" not in text  # gpt-image answers base64 anyway
    call = adapter.build(job(mask=STORED), Prepared(images=(B64,), mask=B64))
    body = json_of(call)
    assert call.headers["Content-Type"] == "application/json"
    assert body["images"] == [{"image_url": f"data:image/png;base64,{B64}"}]
    assert body["mask"] == {"image_url": f"data:image/png;base64,{B64}"}
    gen = adapter.build(job(operation="generate", images=()), Prepared())
    assert gen.path == "/images/generations"


def test_openai_parse_relays_the_reply_and_maps_errors() -> None:
    adapter = openai.OpenAIAdapter(openai.Config())
    out = adapter.parse(
        "openai", reply(200, {"data": [{"b64_json": "QQ=="}], "cost": 1})
    )
    assert out.passthrough is not None
    assert out.passthrough.images == 1
    assert b"cost" not in out.passthrough.body  # ours is added later, not doubled
    err = {"error": {"message": "no", "type": "image_generation_user_error"}}
    with pytest.raises(UpstreamRejected) as exc:
        adapter.parse("openai", reply(400, err))
    assert exc.value.message == "no"
    with pytest.raises(UpstreamRateLimited):
        adapter.parse("openai", reply(429, b"", **{"Retry-After": "3"}))


def test_azure_build_checks_the_deployment_and_uses_its_path() -> None:
    adapter = azure.AzureAdapter(azure.Config(base_url="https://r.openai.azure.com"))
    call = adapter.build(job(model="my-dep"), ONE)
    assert call.path.startswith("/openai/deployments/my-dep/images/edits?api-version=")
    with pytest.raises(UnknownModel):
        adapter.build(job(model="../x"), ONE)


def test_xai_build_and_parse() -> None:
    adapter = xai.XAIAdapter(xai.Config())
    call = adapter.build(job(size="1536x1024", n=2), ONE)
    body = json_of(call)
    assert call.path == "/images/edits"
    assert body["aspect_ratio"] == "3:2"
    assert body["response_format"] == "b64_json"
    assert body["image"] == {"url": f"data:image/png;base64,{B64}", "type": "image_url"}
    out = adapter.parse("xai", reply(200, {"data": [{"b64_json": "QQ=="}]}))
    assert out.passthrough is not None


# BFL, Replicate (submit, then poll)


def test_bfl_build_kontext_and_fill() -> None:
    adapter = bfl.BFLAdapter(bfl.Config())
    kontext = job(model="flux-kontext-pro", size="1024x1024")
    assert adapter.needs(kontext) == Needs(base64=True)
    call = adapter.build(kontext, ONE)
    assert call.path == "/flux-kontext-pro"
    assert json_of(call) == {
        "prompt": "a hat",
        "input_image": B64,
        "aspect_ratio": "1:1",
    }
    fill = job(model="flux-pro-1.0-fill", mask=STORED)
    assert adapter.needs(fill) == Needs(base64=True, edit_mask="white")
    prepared = Prepared(images=(B64,), edit_mask=b"m", edit_mask_b64="bQ==")
    assert json_of(adapter.build(fill, prepared))["mask"] == "bQ=="
    with pytest.raises(InvalidRequest):
        adapter.build(job(model="flux-pro-1.0-fill", size="512x512"), ONE)


HOSTS = ["https://*.bfl.ai"]


def test_bfl_submission_poll_and_outputs() -> None:
    adapter = bfl.BFLAdapter(bfl.Config())
    url = "https://api.us1.bfl.ai/v1/get_result?id=1"
    assert adapter.submitted("bfl", reply(200, {"id": "1", "polling_url": url})) == url
    with pytest.raises(UpstreamProtocolError):  # the key never goes elsewhere
        adapter.submitted(
            "bfl", reply(200, {"id": "1", "polling_url": "https://x.example/"})
        )
    ready = {"status": "Ready", "result": {"sample": "https://delivery.bfl.ai/a.png"}}
    state = adapter.parse("bfl", reply(200, ready))
    assert bfl.outputs_of(state, HOSTS, provider="bfl") == Outputs(
        ["https://delivery.bfl.ai/a.png"]
    )
    with pytest.raises(UpstreamRejected):
        bfl.outputs_of(
            adapter.parse("bfl", reply(200, {"status": "Content Moderated"})),
            HOSTS,
            provider="bfl",
        )


def test_replicate_build_and_outputs() -> None:
    adapter = replicate.ReplicateAdapter(replicate.Config(wait_s=5))
    prepared = Prepared(images=(B64,), edit_mask_b64="bQ==")
    call = adapter.build(job(model="o/n", size="16:9", mask=STORED), prepared)
    assert call.path == "/models/o/n/predictions"
    assert call.headers["Prefer"] == "wait=5"
    assert json_of(call)["input"] == {
        "prompt": "a hat",
        "input_image": f"data:image/png;base64,{B64}",
        "mask": "data:image/png;base64,bQ==",
        "aspect_ratio": "16:9",
    }
    done = adapter.parse(
        "replicate",
        reply(201, {"status": "succeeded", "output": "data:image/png;base64,QQ=="}),
    )
    assert replicate.outputs_of(done, [], provider="replicate") == Outputs([b"A"])
    failed = adapter.parse(
        "replicate", reply(200, {"status": "failed", "error": "nsfw"})
    )
    with pytest.raises(UpstreamRejected, match="nsfw"):
        replicate.outputs_of(failed, [], provider="replicate")


# Stability, Gemini, Vertex, Bedrock


def test_stability_build_and_parse() -> None:
    adapter = stabilityai.StabilityAdapter(stabilityai.Config())
    with pytest.raises(InvalidRequest):  # refused before the mask is converted
        adapter.needs(job(model="outpaint", mask=STORED))
    inpaint = job(model="inpaint", mask=STORED)
    assert adapter.needs(inpaint) == Needs(edit_mask="white")
    call = adapter.build(inpaint, Prepared(edit_mask=b"MASK"))
    assert call.path == "/v2beta/stable-image/edit/inpaint"
    text = form_text(call)
    assert 'name="mask"; filename="mask.png"' in text
    assert "MASK" in text
    raw = adapter.parse("s", reply(200, b"\x89PNG...", **{"Content-Type": "image/png"}))
    assert raw == Outputs([b"\x89PNG..."])
    assert adapter.parse("s", reply(200, {"image": "QQ=="})) == Outputs(
        [Encoded("QQ==")]
    )
    with pytest.raises(UpstreamRejected):
        adapter.parse("s", reply(200, {"finish_reason": "CONTENT_FILTERED"}))


def test_gemini_build_and_parse() -> None:
    adapter = google.GoogleAdapter(google.Config())
    call = adapter.build(job(model="gemini-3.1-flash-image"), ONE)
    assert call.path == "/models/gemini-3.1-flash-image:generateContent"
    parts = json_of(call)["contents"][0]["parts"]
    assert parts == [
        {"inlineData": {"mimeType": "image/png", "data": B64}},
        {"text": "a hat"},
    ]
    with pytest.raises(InvalidRequest):  # the provider needs the bytes
        adapter.build(job(images=(RemoteImage("https://a/b.png"),)), Prepared((None,)))
    body = {
        "candidates": [{"content": {"parts": [{"inlineData": {"data": "QQ=="}}]}}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 5},
    }
    out = adapter.parse("google", reply(200, body))
    assert out.images == [Encoded("QQ==")]
    assert out.usage is not None
    assert out.usage.output_tokens == 5


def test_vertex_gemini_build_and_parse() -> None:
    adapter = vertex.VertexAdapter(vertex.Config(project="p1", auth="access_token"))
    edit = job(model="gemini-3-pro-image", size="1536x1024")
    assert adapter.needs(edit) == Needs(base64=True)
    caps = adapter.capabilities
    assert (caps.mask, caps.native_n, caps.max_images) == (False, False, 14)
    call = adapter.build(edit, ONE)
    assert call.path == (
        "/projects/p1/locations/global/publishers/google/models/gemini-3-pro-image"
        ":generateContent"
    )
    body = json_of(call)
    assert body["contents"][0]["parts"][-1] == {"text": "a hat"}
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "3:2"}
    gemini = {
        "candidates": [{"content": {"parts": [{"inlineData": {"data": "QQ=="}}]}}]
    }
    assert adapter.parse("vertex", reply(200, gemini)).images == [Encoded("QQ==")]
    with pytest.raises(UpstreamRejected):
        adapter.parse(
            "vertex", reply(200, {"promptFeedback": {"blockReason": "SAFETY"}})
        )


def test_bedrock_build_and_parse() -> None:
    adapter = amazon.AmazonAdapter(amazon.Config())
    nova = job(model="amazon.nova-canvas-v1:0", mask=STORED)
    assert adapter.needs(nova) == Needs(base64=True, edit_mask="black")
    outpaint = job(model="amazon.nova-canvas-v1:0", extra={"task_type": "OUTPAINTING"})
    assert adapter.needs(outpaint).edit_mask == "white"
    call = adapter.build(nova, Prepared(images=(B64,), edit_mask_b64="bQ=="))
    assert call.path == "/model/amazon.nova-canvas-v1:0/invoke"
    body = json_of(call)
    assert body["taskType"] == "INPAINTING"
    assert body["inPaintingParams"]["maskImage"] == "bQ=="
    sd3 = adapter.build(job(model="stability.sd3-5-large-v1:0"), ONE)
    assert json_of(sd3)["mode"] == "image-to-image"
    out = adapter.parse("amazon", reply(200, {"images": ["QQ=="]}))
    assert out == Outputs([Encoded("QQ==")])
    with pytest.raises(UpstreamRejected):
        adapter.parse("amazon", reply(400, {"message": "bad"}))


ADAPTERS = [
    openai.OpenAIAdapter(openai.Config()),
    azure.AzureAdapter(azure.Config(base_url="https://r.openai.azure.com")),
    xai.XAIAdapter(xai.Config()),
    bfl.BFLAdapter(bfl.Config()),
    replicate.ReplicateAdapter(replicate.Config()),
    stabilityai.StabilityAdapter(stabilityai.Config()),
    google.GoogleAdapter(google.Config()),
    vertex.VertexAdapter(vertex.Config(project="p1")),
    amazon.AmazonAdapter(amazon.Config()),
]


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_translation_is_synchronous(adapter: Any) -> None:
    # I/O belongs to edit() (prepare, send, poll, finish), never to the translation.
    for step in ("needs", "build", "parse"):
        assert not inspect.iscoroutinefunction(getattr(adapter, step)), step


def test_gemini_flash_lite_makes_1k_only() -> None:
    adapter = google.GoogleAdapter(google.Config())
    body = json_of(
        adapter.build(job(model="gemini-3.1-flash-image", size="2048x2048"), ONE)
    )
    assert body["generationConfig"]["imageConfig"]["imageSize"] == "2K"
    lite = job(model="gemini-3.1-flash-lite-image", size="2048x2048")
    with pytest.raises(InvalidRequest) as exc:
        adapter.build(lite, ONE)
    assert exc.value.param == "size"
    small = job(model="gemini-3.1-flash-lite-image", size="1024x1024")
    assert "imageSize" not in json_of(adapter.build(small, ONE))[
        "generationConfig"
    ].get("imageConfig", {})
