"""Vertex specifics: the service-account token cache, token failures, a token from the
environment, and Gemini image models on Vertex (generation, edits, what is refused)."""

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
from tests.fakes.registry import Served
from tests.fakes.vertex import FakeVertex
from tests.images import png

EDIT = GENERATE = "vertex/gemini-3.1-flash-image"
# One call of the fake: 10 text + 1290 image tokens in and out, at gemini-3.1-flash-image
# rates ($0.50 text and image in, $3 text out, $60 image out per 1M tokens).
CALL_COST = (10 * 0.50 + 1290 * 0.50 + 10 * 3.00 + 1290 * 60.00) / 1_000_000


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
        section={"project": "p", "location": "global", "auth": "access_token",
                 "api_key_env": "VERTEX_TOKEN"},
    )  # fmt: skip
    proxy = gateway.proxy
    client = await _sdk(proxy)
    result = await client.images.edit(model=EDIT, image=_image(), prompt="x")
    await client.close()
    assert result.data is not None
    assert fake.tokens_issued == 0
    assert fake.last.path == (
        "/v1/projects/p/locations/global/publishers/google/models/"
        "gemini-3.1-flash-image:generateContent"
    )


async def test_generation_with_n_and_aspect_ratio(
    sdk: openai.AsyncOpenAI, setup: Setup
) -> None:
    result = await sdk.images.generate(
        model=GENERATE, prompt="a fox", n=2, size="1024x768"
    )
    # Gemini makes one image per call: two calls, each sized by aspect ratio.
    assert setup.fake.models == ["gemini-3.1-flash-image"] * 2
    for body in setup.fake.bodies:
        assert body["contents"][0]["parts"] == [{"text": "a fox"}]
        assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "4:3"}
    assert result.data is not None
    assert len(result.data) == 2
    assert (result.model_extra or {})["cost"] == pytest.approx(2 * CALL_COST)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"size": "9000x9000"}, "size"),
        ({"mask": ("m.png", png(4, 4, alpha=0), "image/png")}, "mask"),
        ({"n": 0}, "n"),
    ],
)
async def test_refused_before_sending(
    sdk: openai.AsyncOpenAI, setup: Setup, kwargs: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        await sdk.images.edit(model=EDIT, image=_image(), prompt="x", **kwargs)
    assert exc.value.param == param
    assert setup.fake.bodies == []


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
    ["vertex/../../x", "vertex/..", "vertex/a/b", "vertex/gemini?alt=media"],
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
