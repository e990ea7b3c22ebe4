"""Pure translation functions of the Azure, xAI, Bedrock, Replicate and BFL adapters."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import pytest

from proxy.errors import (
    InvalidRequest,
    UnknownModel,
    UpstreamProtocolError,
    UpstreamRejected,
)
from proxy.models import EditJob, FileRef, RemoteImage, StoredImage
from proxy.providers import _inputs, _nova, _polling, amazon, azure, bfl, replicate, xai
from proxy.providers._prepare import Needs, Prepared, prepare
from tests.images import png


def job(**fields: Any) -> EditJob:
    base: dict[str, Any] = {
        "operation": "edit", "provider": "p", "model": "m", "prompt": "a hat",
        "source": "json",
    }  # fmt: skip
    return EditJob(**{**base, **fields})


STORED = StoredImage(content_type="image/png", size=10, filename="a.png", data=png())


def test_azure_paths_for_both_surfaces() -> None:
    cfg = azure.Config(base_url="https://r.openai.azure.com", api_version="2024-x")
    assert azure.path_for(cfg, "my dep", "edits") == (
        "/openai/deployments/my%20dep/images/edits?api-version=2024-x"
    )
    v1 = msgspec.structs.replace(cfg, surface="v1")
    assert (
        azure.path_for(v1, "my dep", "generations") == "/openai/v1/images/generations"
    )


@pytest.mark.parametrize(
    ("size", "ratio"),
    [("1024x1024", "1:1"), ("1536x1024", "3:2"), ("1024x1536", "2:3"),
     ("1792x1024", None), ("axb", None), ("0x5", None)],
)  # fmt: skip
def test_xai_aspect_ratio_is_exact_or_a_400(size: str, ratio: str | None) -> None:
    if ratio is None:
        with pytest.raises(InvalidRequest) as exc:
            xai.aspect_ratio(size)
        assert exc.value.param == "size"
        assert "16:9" in exc.value.message
    else:
        assert xai.aspect_ratio(size) == ratio


def test_xai_image_objects() -> None:
    remote = xai.image_object(RemoteImage("https://x.example/a.png"), None, "images[0]")
    assert remote == {"url": "https://x.example/a.png", "type": "image_url"}
    stored = xai.image_object(STORED, "QQ==", "images[0]")
    assert stored["url"] == "data:image/png;base64,QQ=="
    with pytest.raises(InvalidRequest, match="file id"):
        xai.image_object(FileRef("file-1"), None, "images[1]")


def test_amazon_default_endpoint_follows_the_region() -> None:
    cfg = amazon.Config(region="eu-west-1")
    assert cfg.base_url == "https://bedrock-runtime.eu-west-1.amazonaws.com"
    assert amazon.Config(base_url="http://x").base_url == "http://x"


def test_nova_mask_prompt_inpainting_and_task_choice() -> None:
    body = _nova.nova_body(job(extra={"maskPrompt": "the sofa"}), ["AAA"], None)
    assert body["taskType"] == "INPAINTING"
    assert body["inPaintingParams"] == {
        "text": "a hat",
        "maskPrompt": "the sofa",
        "image": "AAA",
    }
    out = _nova.nova_body(job(extra={"task_type": "outpainting"}), ["AAA"], "MMM")
    assert out["taskType"] == "OUTPAINTING"
    assert out["outPaintingParams"]["maskImage"] == "MMM"
    with pytest.raises(InvalidRequest) as exc:
        _nova.nova_body(job(size="1024x1024"), ["AAA"], "MMM")
    assert exc.value.param == "size"


@pytest.mark.parametrize(
    "size", ["304x1024", "4112x1024", "1000x1008", "320x1600", "2560x2560"]
)
def test_nova_sizes_outside_the_rules_are_400(size: str) -> None:
    with pytest.raises(InvalidRequest):
        _nova.nova_size(size)


def test_nova_size_auto_and_valid() -> None:
    assert _nova.nova_size("auto") == {}
    assert _nova.nova_size("2048x1024") == {"width": 2048, "height": 1024}


def test_stability_on_bedrock_bodies() -> None:
    core = job(
        model="stability.stable-image-core-v1:1", operation="generate", size="auto"
    )
    assert amazon.stability_body(core, [], None) == {"prompt": "a hat"}
    inpaint = job(model="us.stability.stable-image-inpaint-v1:0")
    body = amazon.stability_body(inpaint, ["III"], "MMM")
    assert body == {"prompt": "a hat", "image": "III", "mask": "MMM"}
    with pytest.raises(InvalidRequest) as exc:
        amazon.stability_body(inpaint, ["A", "B"], None)
    assert exc.value.param == "images"


def test_bedrock_replies_and_errors() -> None:
    assert amazon.parse_images("amazon", b'{"images": ["QQ=="]}') == ["QQ=="]
    with pytest.raises(UpstreamProtocolError):
        amazon.parse_images("amazon", b"not json")
    with pytest.raises(UpstreamRejected, match="blocked"):
        amazon.parse_images("amazon", b'{"images": [], "error": "blocked"}')
    assert amazon.error_message(b'{"Message": "denied"}') == "denied"
    assert amazon.error_message(b'{"message": "bad"}') == "bad"
    assert amazon.error_message(b"<html>") is None


async def test_bedrock_mask_needs_bytes() -> None:
    remote = job(images=(RemoteImage("https://a/b.png"),), mask=STORED)
    with pytest.raises(InvalidRequest) as exc:
        await prepare(remote, Needs(edit_mask="white"))
    assert exc.value.param == "images[0]"  # the input that is not bytes
    assert await prepare(job(images=(STORED,)), Needs(edit_mask="black")) == Prepared()


def test_replicate_errors_and_predictions() -> None:
    assert (
        replicate.error_message(b'{"title": "Bad", "detail": "input.x"}') == "input.x"
    )
    assert replicate.error_message(b'{"title": "Bad"}') == "Bad"
    assert replicate.error_message(b"oops") is None
    with pytest.raises(UpstreamProtocolError):
        replicate.parse_prediction("replicate", b"[]")
    pred = replicate.parse_prediction(
        "replicate", b'{"status": "succeeded", "output": ["https://r/a.png"]}'
    )
    assert pred.output == ["https://r/a.png"]


def test_replicate_input_refuses_file_ids() -> None:
    with pytest.raises(InvalidRequest) as exc:
        replicate.build_input(job(images=(FileRef("file-1"),)), Prepared((None,)))
    assert exc.value.param == "images[0]"


def test_bfl_capabilities_and_errors() -> None:
    assert bfl.model_capabilities("flux-pro-1.0-fill") is bfl.FILL
    assert bfl.model_capabilities("flux-pro-1.0-expand") is bfl.EXPAND
    assert bfl.model_capabilities("flux-kontext-pro") is bfl.KONTEXT
    assert bfl.model_capabilities("flux-pro-1.1-ultra") is bfl.GENERATE
    assert (
        bfl.error_message(b'{"detail": "Insufficient credits"}')
        == "Insufficient credits"
    )
    assert bfl.error_message(b'{"detail": []}') is None
    assert bfl.error_message(b"x") is None


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://gateway.bfl.ai/results?id=1", True),
        ("https://api.eu.bfl.ai/v1/get_result?id=1", True),
        ("https://bfl.ai.evil.example/x", False),
        ("https://evilbfl.ai/x", False),
        ("http://api.bfl.ai/x", False),
        ("ftp://api.bfl.ai/x", False),
        ("https:///nohost", False),
    ],
)
def test_polling_host_allowlist(url: str, ok: bool) -> None:
    patterns = bfl.Config().allowed_hosts
    assert _polling.host_allowed(url, patterns) is ok


@pytest.mark.parametrize(
    ("model", "segments", "ok"),
    [
        ("flux-kontext-pro", 1, True),
        ("amazon.nova-canvas-v1:0", 1, True),
        ("black-forest-labs/flux-kontext-pro", 2, True),
        ("..", 1, False),
        ("../account", 1, False),
        ("a/../../v1/account", 2, False),
        ("owner/..", 2, False),
        ("x?y=1", 1, False),
        ("x#f", 1, False),
        ("a/b", 1, False),
        ("%2e%2e", 1, False),
        (".hidden", 1, False),
    ],
)
def test_model_ids_that_go_into_paths(model: str, segments: int, ok: bool) -> None:
    if ok:
        assert _inputs.model_path(model, provider="p", segments=segments) == model
    else:
        with pytest.raises(UnknownModel):
            _inputs.model_path(model, provider="p", segments=segments)


def test_replicate_outputs_may_be_data_uris() -> None:
    data = png()
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    assert replicate.output_image(uri, [], provider="replicate") == data
    with pytest.raises(UpstreamProtocolError):
        replicate.output_image("data:image/png;base64,@@", [], provider="replicate")
    with pytest.raises(UpstreamProtocolError):
        replicate.output_image("https://evil.example/a.png", [], provider="replicate")
    url = "https://replicate.delivery/x/out.png"
    hosts = replicate.Config().output_hosts
    assert replicate.output_image(url, hosts, provider="replicate") == url
