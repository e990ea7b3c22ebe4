"""Vertex Imagen specifics: the service-account token cache, token failures, a token
from the environment, generation, and the request translation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import openai
import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import ServeFake, StartGateway, StartProxy
from tests.fakes.base import Reply
from tests.fakes.registry import Served
from tests.fakes.vertex import FakeVertex
from tests.images import png

EDIT = "vertex/imagen-3.0-capability-001"
GENERATE = "vertex/imagen-4.0-generate-001"


@dataclass
class Setup:
    """The served Vertex fake, with its service-account key file."""

    served: Served

    @property
    def fake(self) -> FakeVertex:
        fake: FakeVertex = self.served.fake
        return fake

    @property
    def key_path(self) -> str:
        return self.served.environ["GOOGLE_APPLICATION_CREDENTIALS"]

    def providers(self) -> dict[str, Any]:
        return {"vertex": self.served.section}


@pytest.fixture
async def setup(serve_fake: ServeFake) -> Setup:
    return Setup(await serve_fake("vertex"))


async def _sdk(proxy: TestServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=str(proxy.make_url("/v3")), api_key="c", max_retries=0
    )


@pytest.fixture
async def sdk(
    setup: Setup, start_proxy: StartProxy
) -> AsyncIterator[openai.AsyncOpenAI]:
    proxy = await start_proxy(
        setup.providers(),
        environ={"GOOGLE_APPLICATION_CREDENTIALS": setup.key_path},
    )
    client = await _sdk(proxy)
    yield client
    await client.close()


def _image() -> tuple[str, bytes, str]:
    return ("a.png", png(8, 8), "image/png")


async def test_token_is_cached_until_near_expiry(
    sdk: openai.AsyncOpenAI, setup: Setup
) -> None:
    await sdk.images.edit(model=EDIT, image=_image(), prompt="x")
    await sdk.images.edit(model=EDIT, image=_image(), prompt="x")
    assert setup.fake.tokens_issued == 1
    assert setup.fake.received[-1].headers["Authorization"] == "Bearer ya29.fake-1"


async def test_token_near_expiry_is_refreshed(
    sdk: openai.AsyncOpenAI, setup: Setup
) -> None:
    setup.fake.expires_in = 30  # inside the refresh margin: stale at once
    await sdk.images.edit(model=EDIT, image=_image(), prompt="x")
    await sdk.images.edit(model=EDIT, image=_image(), prompt="x")
    assert setup.fake.tokens_issued == 2
    assert setup.fake.received[-1].headers["Authorization"] == "Bearer ya29.fake-2"


@pytest.mark.parametrize("status", [400, 401])
async def test_refused_grant_is_a_502(
    sdk: openai.AsyncOpenAI, setup: Setup, status: int
) -> None:
    setup.fake.token_status = status
    with pytest.raises(openai.InternalServerError) as exc:
        await sdk.images.edit(model=EDIT, image=_image(), prompt="x")
    assert exc.value.status_code == 502
    assert exc.value.response.headers["x-should-retry"] == "false"
    assert "invalid_grant" not in exc.value.response.text
    assert [r.path for r in setup.fake.received] == []  # no predict call


async def test_token_endpoint_garbage_is_a_502(
    sdk: openai.AsyncOpenAI, setup: Setup
) -> None:
    setup.fake.token_garbage = True
    with pytest.raises(openai.InternalServerError) as exc:
        await sdk.images.edit(model=EDIT, image=_image(), prompt="x")
    assert exc.value.status_code == 502
    assert setup.fake.bodies == []


@pytest.mark.parametrize("name", ["not-a-key.json", "missing.json"])
async def test_unreadable_key_file_is_a_503(
    setup: Setup, start_proxy: StartProxy, tmp_path: Path, name: str
) -> None:
    (tmp_path / "not-a-key.json").write_bytes(
        b'{"client_email": "x", "private_key": "not a pem"}'
    )
    path = str(tmp_path / name)
    proxy = await start_proxy(
        setup.providers(), environ={"GOOGLE_APPLICATION_CREDENTIALS": path}
    )
    client = await _sdk(proxy)
    with pytest.raises(openai.APIStatusError) as exc:
        await client.images.edit(model=EDIT, image=_image(), prompt="x")
    await client.close()
    assert exc.value.status_code == 503
    assert "GOOGLE_APPLICATION_CREDENTIALS" in exc.value.message
    assert path not in exc.value.response.text
    assert setup.fake.tokens_issued == 0


async def test_access_token_from_the_environment(
    start_gateway: StartGateway,
) -> None:
    fake = FakeVertex(None, token="ya29.from-env")
    gateway = await start_gateway(
        "vertex", fake=fake, environ={"VERTEX_TOKEN": "ya29.from-env"},
        section={"project": "p", "location": "europe-west4", "auth": "access_token",
                 "api_key_env": "VERTEX_TOKEN"},
    )  # fmt: skip
    proxy = gateway.proxy
    client = await _sdk(proxy)
    result = await client.images.edit(model=EDIT, image=_image(), prompt="x")
    await client.close()
    assert result.data is not None
    assert fake.tokens_issued == 0
    assert fake.last.path == (
        "/v1/projects/p/locations/europe-west4/publishers/google/models/"
        "imagen-3.0-capability-001:predict"
    )


async def test_generation_with_n_and_aspect_ratio(
    sdk: openai.AsyncOpenAI, setup: Setup
) -> None:
    result = await sdk.images.generate(
        model=GENERATE, prompt="a fox", n=2, size="1024x768"
    )
    body = setup.fake.bodies[-1]
    assert body["instances"] == [{"prompt": "a fox"}]
    assert body["parameters"] == {"sampleCount": 2, "aspectRatio": "4:3"}
    assert setup.fake.models == ["imagen-4.0-generate-001"]
    assert result.data is not None
    assert len(result.data) == 2
    assert (result.model_extra or {})["cost"] == pytest.approx(0.08)


async def test_edit_without_mask_and_options(
    sdk: openai.AsyncOpenAI, setup: Setup
) -> None:
    result = await sdk.images.edit(
        model=EDIT,
        image=_image(),
        prompt="remove the cup",
        extra_body={"edit_mode": "inpaint_removal", "seed": 7,
                    "output_format": "jpeg", "output_compression": 80},
    )  # fmt: skip
    body = setup.fake.bodies[-1]
    refs = body["instances"][0]["referenceImages"]
    assert [r["referenceType"] for r in refs] == ["REFERENCE_TYPE_RAW"]
    assert body["parameters"] == {
        "sampleCount": 1,
        "editMode": "EDIT_MODE_INPAINT_REMOVAL",
        "outputOptions": {"mimeType": "image/jpeg", "compressionQuality": 80},
        # Multipart text fields stay strings; proto3 JSON accepts quoted integers.
        "seed": "7",
    }
    assert (result.model_extra or {})["cost"] == pytest.approx(0.04)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"n": 5}, "n"),
        ({"size": "1024x1024"}, "size"),
        ({"extra_body": {"edit_mode": "paint"}}, "edit_mode"),
        ({"extra_body": {"output_format": "webp"}}, "output_format"),
        ({"mask": ("m.png", png(4, 4, alpha=0), "image/png")}, "mask"),
        # Unknown fields must not replace what the gateway sets: 8 images past n <= 4.
        ({"extra_body": {"sampleCount": 8}}, "sampleCount"),
        ({"extra_body": {"editMode": "EDIT_MODE_BGSWAP"}}, "editMode"),
        ({"extra_body": {"storageUri": "gs://operators-bucket/x/"}}, "storageUri"),
    ],
)
async def test_refused_before_sending(
    sdk: openai.AsyncOpenAI, setup: Setup, kwargs: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        await sdk.images.edit(model=EDIT, image=_image(), prompt="x", **kwargs)
    assert exc.value.param == param
    assert setup.fake.bodies == []


@pytest.mark.parametrize(
    ("predictions", "needle"),
    [
        ([{"raiFilteredReason": "Filtered: person"}], "Filtered: person"),
        ([], "all results were filtered"),
    ],
)
async def test_filtered_results_are_a_400(
    sdk: openai.AsyncOpenAI, setup: Setup, predictions: list[Any], needle: str
) -> None:
    setup.fake.script(Reply(body={"predictions": predictions}))
    with pytest.raises(openai.BadRequestError) as exc:
        await sdk.images.generate(model=GENERATE, prompt="x")
    assert exc.value.code == "moderation_blocked"
    assert needle in exc.value.message


async def test_concurrent_requests_share_one_refresh(
    sdk: openai.AsyncOpenAI, setup: Setup
) -> None:
    await asyncio.gather(
        *(sdk.images.edit(model=EDIT, image=_image(), prompt="x") for _ in range(3))
    )
    assert setup.fake.tokens_issued == 1
    assert len(setup.fake.bodies) == 3


async def test_non_rsa_key_is_a_503(
    setup: Setup, start_proxy: StartProxy, tmp_path: Path
) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = tmp_path / "ec.json"
    path.write_bytes(
        msgspec.json.encode({"client_email": "x", "private_key": pem.decode()})
    )
    proxy = await start_proxy(
        setup.providers(), environ={"GOOGLE_APPLICATION_CREDENTIALS": str(path)}
    )
    client = await _sdk(proxy)
    with pytest.raises(openai.APIStatusError) as exc:
        await client.images.edit(model=EDIT, image=_image(), prompt="x")
    await client.close()
    assert exc.value.status_code == 503


@pytest.mark.parametrize(
    "model",
    ["vertex/../../x", "vertex/..", "vertex/a/b", "vertex/imagen?alt=media"],
)
async def test_model_ids_cannot_reach_other_endpoints(
    sdk: openai.AsyncOpenAI, setup: Setup, model: str
) -> None:
    # The gateway's OAuth token goes with the call: an id that climbs out of
    # .../publishers/google/models/ would spend it on another resource.
    with pytest.raises(openai.NotFoundError) as exc:
        await sdk.images.edit(model=model, image=_image(), prompt="x")
    assert exc.value.param == "model"
    assert exc.value.code == "model_not_found"
    assert setup.fake.received == []


async def test_gemini_on_vertex_fans_out_n_and_refuses_a_mask(
    sdk: openai.AsyncOpenAI, setup: Setup
) -> None:
    images = [("a.png", png(8, 8, seed=i), "image/png") for i in range(3)]
    result = await sdk.images.edit(
        model="vertex/gemini-3.1-flash-image", image=images, prompt="x", n=2
    )
    assert len(result.data or []) == 2
    fake = setup.fake
    # One service-account token for both calls, each on the global location.
    assert fake.tokens_issued == 1
    assert fake.locations == ["global", "global"]
    assert fake.models == ["gemini-3.1-flash-image"] * 2
    assert [[data for _, data in call] for call in fake.gemini_images] == [
        [png(8, 8, seed=i) for i in range(3)]
    ] * 2
    assert "candidateCount" not in fake.bodies[-1]["generationConfig"]
    with pytest.raises(openai.BadRequestError) as exc:
        await sdk.images.edit(
            model="vertex/gemini-3-pro-image", image=_image(), mask=_image(),
            prompt="x",
        )  # fmt: skip
    assert exc.value.param == "mask"
    assert len(fake.models) == 2
