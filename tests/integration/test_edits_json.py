"""Raw JSON bodies: data URLs, references, and every validation rule."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from tests.fakes.openai import FakeOpenAI
from tests.images import png


def data_url(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def body(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "openai/gpt-image-2",
        "prompt": "add a hat",
        "images": [{"image_url": data_url(png())}],
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


async def post(
    proxy: TestServer, payload: Any, **kw: Any
) -> tuple[int, Any, dict[str, str]]:
    async with (
        ClientSession() as s,
        s.post(proxy.make_url("/v3/images/edits"), json=payload, **kw) as r,
    ):
        return r.status, await r.json(), dict(r.headers)


async def test_json_edit_forwards_refs_and_unknown_fields(
    proxy: TestServer, fake_openai: FakeOpenAI
) -> None:
    img = data_url(png(6, 6))
    mask = data_url(png(6, 6, alpha=0))
    status, answer, headers = await post(
        proxy,
        body(
            # https URLs are fetched by the proxy for OpenAI (tests/integration/test_fetch.py).
            images=[{"image_url": img}, {"file_id": "file-abc123"}],
            mask={"image_url": mask},
            n=2,
            size="1024x1024",
            quality="high",
            metadata={"team": "search"},
            brand_new_field={"x": [1, 2]},
            extra_headers={"X-Tenant": "t1"},
        ),
    )  # fmt: skip
    assert status == 200, answer
    assert answer["provider"] == "openai"
    assert isinstance(answer["cost"], float)
    assert len(answer["data"]) == 2
    assert headers["X-Request-ID"]
    sent = fake_openai.last.json
    assert sent is not None
    assert sent["model"] == "gpt-image-2"
    assert sent["images"] == [
        {"image_url": img},
        {"file_id": "file-abc123"},
    ]
    assert sent["mask"] == {"image_url": mask}
    assert sent["brand_new_field"] == {"x": [1, 2]}
    assert sent["metadata"] == {"team": "search"}
    assert "extra_headers" not in sent
    assert fake_openai.last.headers["X-Tenant"] == "t1"


async def test_request_id_is_accepted_and_returned(proxy: TestServer) -> None:
    status, _, headers = await post(proxy, body(), headers={"X-Request-ID": "abc-123"})
    assert status == 200
    assert headers["X-Request-ID"] == "abc-123"


BAD_BODIES: list[tuple[str, dict[str, Any], str | None]] = [
    ("missing model", body(model=...), "model"),
    ("missing prompt", body(prompt=...), "prompt"),
    ("empty prompt", body(prompt=""), "prompt"),
    ("prompt too long", body(prompt="x" * 32001), "prompt"),
    ("n zero", body(n=0), "n"),
    ("n eleven", body(n=11), "n"),
    ("n string", body(n="2"), "n"),
    ("no images", body(images=[]), "images"),
    ("images missing", body(images=...), "images"),
    ("17 images", body(images=[{"file_id": "file-1"}] * 17), "images"),
    ("image both keys", body(images=[{"file_id": "f", "image_url": "https://a/b"}]), "images[0]"),
    ("image no keys", body(images=[{}]), "images[0]"),
    ("image unknown key", body(images=[{"url": "https://a/b"}]), "images[0].url"),
    ("image http", body(images=[{"image_url": "http://a.example/b.png"}]), "images[0].image_url"),
    ("image ftp", body(images=[{"image_url": "ftp://a/b.png"}]), "images[0].image_url"),
    ("data url not image", body(images=[{"image_url": "data:text/plain;base64,aGk="}]), "images[0].image_url"),
    ("data url not base64", body(images=[{"image_url": "data:image/png,abc"}]), "images[0].image_url"),
    ("data url bad base64", body(images=[{"image_url": "data:image/png;base64,@@@"}]), "images[0].image_url"),
    ("data url not png", body(images=[{"image_url": data_url(b"GIF89a....", "image/gif")}]), "images[0].image_url"),
    ("mask jpeg", body(mask={"image_url": data_url(b"\xff\xd8\xff\xe0" + b"0" * 20)}), "mask.image_url"),
    ("mask both", body(mask={"file_id": "a", "image_url": "https://x/y"}), "mask"),
    ("bad file id", body(images=[{"file_id": "../../etc/passwd"}]), "images[0].file_id"),
    ("size empty", body(size=""), "size"),
    ("response_format", body(response_format="png"), "response_format"),
    ("output_compression", body(output_compression=101), "output_compression"),
    ("partial_images", body(partial_images=4), "partial_images"),
    ("metadata not object", body(metadata=[1]), "metadata"),
    ("extra_headers not strings", body(extra_headers={"X-A": 1}), "extra_headers.X-A"),
    ("extra header auth", body(extra_headers={"Authorization": "Bearer x"}), "extra_headers.Authorization"),
    ("extra header cookie", body(extra_headers={"cookie": "a=b"}), "extra_headers.cookie"),
    ("extra header goog", body(extra_headers={"X-Goog-Api-Key": "k"}), "extra_headers.X-Goog-Api-Key"),
    ("extra header token word", body(extra_headers={"X-Session-Token": "k"}), "extra_headers.X-Session-Token"),
    ("extra header host", body(extra_headers={"Host": "evil"}), "extra_headers.Host"),
    ("extra header openai-organization", body(extra_headers={"OpenAI-Organization": "org-other"}), "extra_headers.OpenAI-Organization"),
    ("extra header openai-project", body(extra_headers={"OpenAI-Project": "proj_other"}), "extra_headers.OpenAI-Project"),
    ("extra header x-goog-user-project", body(extra_headers={"x-goog-user-project": "other-project"}), "extra_headers.x-goog-user-project"),
    ("extra header x-goog-request-params", body(extra_headers={"X-Goog-Request-Params": "project=other"}), "extra_headers.X-Goog-Request-Params"),
    ("extra header x-amz-credential", body(extra_headers={"X-Amz-Credential": "AKIA/x"}), "extra_headers.X-Amz-Credential"),
    ("extra header x-amz-signature", body(extra_headers={"X-Amz-Signature": "ab"}), "extra_headers.X-Amz-Signature"),
    ("extra header x-amz-signedheaders", body(extra_headers={"x-amz-signedheaders": "host"}), "extra_headers.x-amz-signedheaders"),
    ("extra header x-amz-target", body(extra_headers={"X-Amz-Target": "Bedrock.Other"}), "extra_headers.X-Amz-Target"),
    ("extra header x-amz-expires", body(extra_headers={"X-Amz-Expires": "60"}), "extra_headers.X-Amz-Expires"),
    ("extra header x-vertex-ai-llm-request-type", body(extra_headers={"X-Vertex-AI-LLM-Request-Type": "dedicated"}), "extra_headers.X-Vertex-AI-LLM-Request-Type"),
    ("extra header x-forwarded-for", body(extra_headers={"X-Forwarded-For": "10.0.0.1"}), "extra_headers.X-Forwarded-For"),
    ("extra header forwarded", body(extra_headers={"Forwarded": "for=10.0.0.1"}), "extra_headers.Forwarded"),
    ("extra header te", body(extra_headers={"Transfer-Encoding": "chunked"}), "extra_headers.Transfer-Encoding"),
    ("extra header crlf", body(extra_headers={"X-A": "v\r\nX-B: 1"}), "extra_headers.X-A"),
    ("extra header nul", body(extra_headers={"X-A": "v\x00"}), "extra_headers.X-A"),
    ("extra header bad name", body(extra_headers={"X A": "v"}), "extra_headers.X A"),
    ("gpt-image url format", body(response_format="url"), "response_format"),
    # An unknown field the adapter sets itself would be a second image part upstream.
    ("unknown field image", body(image="https://elsewhere.example/x.png"), "image"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "payload", "param"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES]
)
async def test_validation_errors_name_the_field(
    proxy: TestServer,
    fake_openai: FakeOpenAI,
    case: str,
    payload: dict[str, Any],
    param: str | None,
) -> None:
    status, answer, headers = await post(proxy, payload)
    assert status == 400, answer
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]
    assert headers["x-should-retry"] == "false"
    assert fake_openai.received == []


@pytest.mark.parametrize(
    "raw",
    [b"{", b"[]", b'"text"', b"\xff\xfe", b'{"model": 1e999999}', b"[" * 10000],
)
async def test_malformed_json_is_a_400(proxy: TestServer, raw: bytes) -> None:
    async with (
        ClientSession() as s,
        s.post(
            proxy.make_url("/v3/images/edits"),
            data=raw,
            headers={"Content-Type": "application/json"},
        ) as r,
    ):
        assert r.status == 400
        assert (await r.json())["error"]["type"] == "invalid_request_error"


async def test_json_body_cap_is_a_413(
    start_proxy: object, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(  # type: ignore[operator]
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        limits={"max_json_bytes": 2048},
    )
    status, answer, _ = await post(proxy, body(prompt="x" * 4096))
    assert status == 413
    assert answer["error"]["code"] == "payload_too_large"
    assert fake_openai.received == []


@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/x-www-form-urlencoded", ""]
)
async def test_wrong_content_type_is_a_415(proxy: TestServer, ctype: str) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    async with (
        ClientSession() as s,
        s.post(proxy.make_url("/v3/images/edits"), data=b"x=1", headers=headers) as r,
    ):
        assert r.status == 415
        assert (await r.json())["error"]["code"] == "unsupported_media_type"


async def test_generation_rejects_multipart(proxy: TestServer) -> None:
    async with (
        ClientSession() as s,
        s.post(
            proxy.make_url("/v3/images/generations"), data={"model": "openai/x"}
        ) as r,
    ):
        assert r.status == 415
