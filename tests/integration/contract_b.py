"""Contract cases for Azure, xAI, Bedrock, Replicate and BFL, run by
``test_provider_contract``: each starts its fake, configures the proxy for it, and says
what the fake must have received for the edit (auth header, body fields, mask polarity,
image bytes)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from tests.conftest import UPSTREAM_KEY, AiohttpServer
from tests.fakes.azure import FakeAzure
from tests.fakes.bedrock import AWS_ENV, FakeBedrock
from tests.fakes.bfl import FakeBFL
from tests.fakes.provider import LOCAL
from tests.fakes.replicate import FakeReplicate
from tests.fakes.xai import FakeXAI
from tests.integration import test_provider_contract as contract

if TYPE_CHECKING:
    from tests.integration.test_provider_contract import Case, Started


def data_url_bytes(url: str) -> bytes:
    assert url.startswith("data:image/png;base64,")
    return base64.b64decode(url.partition(",")[2])


def assert_black_edit(mask_png: bytes) -> None:
    """Nova's INPAINTING mask: black where the client's alpha was 0, white elsewhere."""
    img = Image.open(io.BytesIO(mask_png)).convert("L")
    assert img.size == (8, 8)
    for y in range(8):
        for x in range(8):
            assert img.getpixel((x, y)) == (0 if x < 4 else 255), (x, y)


async def start_azure(aiohttp_server: AiohttpServer, tmp: Path) -> Started:
    fake = FakeAzure(UPSTREAM_KEY)
    server = await aiohttp_server(fake.app)

    def check() -> None:
        rec = fake.last
        assert rec.path == "/openai/deployments/house/images/edits"
        assert rec.headers["api-key"] == UPSTREAM_KEY
        assert "Authorization" not in rec.headers
        assert rec.fields["model"] == ["house"]
        assert [f.data for f in rec.files] == [contract.IMAGE, contract.MASK]

    section = {"base_url": str(server.make_url("")).rstrip("/"), "pool": contract.POOL,
               "deployments": {"house": "gpt-image-2"}}  # fmt: skip
    return contract.Started(
        fake, {"azure": section}, {"AZURE_OPENAI_API_KEY": UPSTREAM_KEY}, check,
        fake.error_body,
    )  # fmt: skip


async def start_azure_v1(aiohttp_server: AiohttpServer, tmp: Path) -> Started:
    started = await start_azure(aiohttp_server, tmp)
    started.providers["azure"]["surface"] = "v1"
    fake = started.fake

    def check() -> None:
        assert fake.last.path == "/openai/v1/images/edits"
        assert fake.last.headers["api-key"] == UPSTREAM_KEY
        assert fake.last.fields["model"] == ["house"]

    started.check = check
    return started


async def start_xai(aiohttp_server: AiohttpServer, tmp: Path) -> Started:
    fake = FakeXAI(UPSTREAM_KEY)
    server = await aiohttp_server(fake.app)

    def check() -> None:
        body = fake.last.json
        assert fake.last.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert body is not None
        assert body["model"] == "grok-imagine-image"
        assert body["response_format"] == "b64_json"
        assert body["image"]["type"] == "image_url"
        assert data_url_bytes(body["image"]["url"]) == contract.IMAGE

    section = {"base_url": str(server.make_url("/v1")), "pool": contract.POOL}
    return contract.Started(
        fake, {"xai": section}, {"XAI_API_KEY": UPSTREAM_KEY}, check, fake.error_body
    )


async def start_amazon(aiohttp_server: AiohttpServer, tmp: Path) -> Started:
    fake = FakeBedrock()
    server = await aiohttp_server(fake.app)

    def check() -> None:
        # The fake has already recomputed and matched the SigV4 signature.
        rec = fake.last
        assert rec.path == "/model/amazon.nova-canvas-v1:0/invoke"
        assert rec.headers["Authorization"].startswith("AWS4-HMAC-SHA256 ")
        assert rec.json is not None
        assert rec.json["taskType"] == "INPAINTING"
        params = rec.json["inPaintingParams"]
        assert params["text"] == "put a hat on it"
        assert base64.b64decode(params["image"]) == contract.IMAGE
        assert_black_edit(base64.b64decode(params["maskImage"]))
        assert rec.json["imageGenerationConfig"] == {"numberOfImages": 1}

    section = {"base_url": str(server.make_url("")).rstrip("/"), "pool": contract.POOL}
    return contract.Started(fake, {"amazon": section}, AWS_ENV, check, fake.error_body)


async def start_replicate(aiohttp_server: AiohttpServer, tmp: Path) -> Started:
    fake = FakeReplicate(UPSTREAM_KEY)
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("")).rstrip("/")

    def check() -> None:
        create, download = fake.received[-2:]
        assert (
            create.path == "/v1/models/black-forest-labs/flux-kontext-pro/predictions"
        )
        assert create.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert create.headers["Prefer"] == "wait=60"
        assert create.json is not None
        inputs = create.json["input"]
        assert inputs["prompt"] == "put a hat on it"
        assert data_url_bytes(inputs["input_image"]) == contract.IMAGE
        assert download.path.startswith("/delivery/")

    section = {
        "base_url": f"{fake.url}/v1",
        "pool": contract.POOL,
        "output_hosts": LOCAL,
    }
    return contract.Started(
        fake, {"replicate": section}, {"REPLICATE_API_TOKEN": UPSTREAM_KEY}, check,
        fake.error_body,
    )  # fmt: skip


async def start_bfl(aiohttp_server: AiohttpServer, tmp: Path) -> Started:
    fake = FakeBFL(UPSTREAM_KEY)
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("")).rstrip("/")

    def check() -> None:
        submit, *polls, download = fake.received[-4:]
        assert submit.path == "/v1/flux-pro-1.0-fill"
        assert submit.headers["x-key"] == UPSTREAM_KEY
        assert submit.json is not None
        assert submit.json["prompt"] == "put a hat on it"
        assert base64.b64decode(submit.json["image"]) == contract.IMAGE
        contract.assert_white_edit(base64.b64decode(submit.json["mask"]))
        assert [p.path for p in polls] == ["/v1/get_result"] * 2
        assert all(p.headers["x-key"] == UPSTREAM_KEY for p in polls)
        assert download.path.startswith("/delivery/")

    section = {"base_url": f"{fake.url}/v1", "pool": contract.POOL,
               "poll_interval_s": 0.01, "allowed_hosts": LOCAL}  # fmt: skip
    return contract.Started(
        fake, {"bfl": section}, {"BFL_API_KEY": UPSTREAM_KEY}, check, fake.error_body
    )


def cases() -> list[Case]:
    Case = contract.Case
    return [
        Case("azure", "azure/house", True, start_azure, "azure/house"),
        Case("azure-v1", "azure/house", False, start_azure_v1, "azure/house"),
        Case("xai", "xai/grok-imagine-image", False, start_xai,
             "xai/grok-imagine-image"),
        Case("amazon", "amazon/amazon.nova-canvas-v1:0", True, start_amazon,
             "amazon/amazon.nova-canvas-v1:0"),
        Case("replicate", "replicate/black-forest-labs/flux-kontext-pro", False,
             start_replicate, "replicate/black-forest-labs/flux-pro"),
        Case("bfl", "bfl/flux-pro-1.0-fill", True, start_bfl, "bfl/flux-kontext-pro"),
    ]  # fmt: skip
