"""The provider contract's cases, keyed by provider type (the ``ProviderConfig`` tag).

Each case says which model to edit and generate with and what the fake must have
received for a masked edit; the fake and its config come from ``tests.fakes.registry``.
Adding a provider is one entry there and one in ``CASES`` here;
``tests/integration/test_provider_contract.py`` fails until both exist. The contract
tests, the input tests, the redaction and the redirect tests all run over ``PARAMS``.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import openai
from aiohttp.test_utils import TestServer
from PIL import Image

from tests.conftest import UPSTREAM_KEY, StartGateway
from tests.fakes.base import Reply
from tests.fakes.registry import Served
from tests.images import png

IMAGE = png(8, 8, seed=3)
# Left half fully transparent (OpenAI: edit there), right half opaque (keep).
_mask = Image.new("RGBA", (8, 8), (0, 0, 0, 255))
for _x in range(4):
    for _y in range(8):
        _mask.putpixel((_x, _y), (0, 0, 0, 0))
_buf = io.BytesIO()
_mask.save(_buf, format="PNG")
MASK = _buf.getvalue()
LEAK = "leaky-provider-detail-7f3a"
PROMPT = "put a hat on it"
# Short timeouts so the hang case is quick; small reply cap for the oversized case.
POOL = {"total_timeout_s": 5.0, "read_timeout_s": 1.0, "connect_timeout_s": 1.0}
MAX_REPLY = 64 * 1024


def _mask_is(mask_png: bytes, edit: int) -> None:
    """The converted mask: ``edit`` (255 white, 0 black) where the client's alpha was 0
    (the left half), the other colour elsewhere."""
    img = Image.open(io.BytesIO(mask_png)).convert("L")
    assert img.size == (8, 8)
    for y in range(8):
        for x in range(8):
            assert img.getpixel((x, y)) == (edit if x < 4 else 255 - edit), (x, y)


def assert_white_edit(mask_png: bytes) -> None:
    _mask_is(mask_png, 255)


def assert_black_edit(mask_png: bytes) -> None:
    """Nova's INPAINTING mask: black where the client's alpha was 0, white elsewhere."""
    _mask_is(mask_png, 0)


def data_url_bytes(url: str) -> bytes:
    assert url.startswith("data:image/png;base64,")
    return base64.b64decode(url.partition(",")[2])


# --- what each fake must have received for the masked edit ----------------------------


def check_openai(fake: Any) -> None:
    assert fake.last.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert [f.data for f in fake.last.files] == [IMAGE, MASK]


def openai_error(status: int, message: str) -> Any:
    return {"error": {"message": message, "type": "invalid_request_error",
                      "param": None, "code": None}}  # fmt: skip


def check_google(fake: Any) -> None:
    assert fake.last.headers["x-goog-api-key"] == UPSTREAM_KEY
    assert fake.images[-1] == [("image/png", IMAGE)]
    assert fake.prompts[-1] == PROMPT


def check_vertex(fake: Any) -> None:
    """Gemini on Vertex: the service account's token, Gemini's body, the global
    location."""
    assert fake.last.headers["Authorization"] == "Bearer ya29.fake-1"
    assert fake.last.path.endswith(
        "/locations/global/publishers/google/models/gemini-3.1-flash-image"
        ":generateContent"
    )
    assert fake.gemini_images[-1] == [("image/png", IMAGE)]
    assert fake.bodies[-1]["contents"][0]["parts"][-1] == {"text": PROMPT}


def check_stabilityai(fake: Any) -> None:
    rec = fake.last
    assert rec.path == "/v2beta/stable-image/edit/inpaint"
    assert rec.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert rec.headers["Accept"] == "application/json"
    assert fake.file("image") == IMAGE
    assert_white_edit(fake.file("mask"))
    assert rec.fields["prompt"] == [PROMPT]


def check_azure(fake: Any) -> None:
    rec = fake.last
    assert rec.path == "/openai/deployments/house/images/edits"
    assert rec.headers["api-key"] == UPSTREAM_KEY
    assert "Authorization" not in rec.headers
    assert rec.fields["model"] == ["house"]
    assert [f.data for f in rec.files] == [IMAGE, MASK]


def check_azure_v1(fake: Any) -> None:
    assert fake.last.path == "/openai/v1/images/edits"
    assert fake.last.headers["api-key"] == UPSTREAM_KEY
    assert fake.last.fields["model"] == ["house"]


def check_xai(fake: Any) -> None:
    body = fake.last.json
    assert fake.last.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert body is not None
    assert body["model"] == "grok-imagine-image"
    assert body["response_format"] == "b64_json"
    assert body["image"]["type"] == "image_url"
    assert data_url_bytes(body["image"]["url"]) == IMAGE


def check_amazon(fake: Any) -> None:
    # The fake has already recomputed and matched the SigV4 signature.
    rec = fake.last
    assert rec.path == "/model/amazon.nova-canvas-v1:0/invoke"
    assert rec.headers["Authorization"].startswith("AWS4-HMAC-SHA256 ")
    assert rec.json is not None
    assert rec.json["taskType"] == "INPAINTING"
    params = rec.json["inPaintingParams"]
    assert params["text"] == PROMPT
    assert base64.b64decode(params["image"]) == IMAGE
    assert_black_edit(base64.b64decode(params["maskImage"]))
    assert rec.json["imageGenerationConfig"] == {"numberOfImages": 1}


def check_replicate(fake: Any) -> None:
    create, download = fake.received[-2:]
    assert create.path == "/v1/models/black-forest-labs/flux-kontext-pro/predictions"
    assert create.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert create.headers["Prefer"] == "wait=60"
    assert create.json is not None
    inputs = create.json["input"]
    assert inputs["prompt"] == PROMPT
    assert data_url_bytes(inputs["input_image"]) == IMAGE
    assert download.path.startswith("/delivery/")


def check_bfl(fake: Any) -> None:
    submit, *polls, download = fake.received[-4:]
    assert submit.path == "/v1/flux-pro-1.0-fill"
    assert submit.headers["x-key"] == UPSTREAM_KEY
    assert submit.json is not None
    assert submit.json["prompt"] == PROMPT
    assert base64.b64decode(submit.json["image"]) == IMAGE
    assert_white_edit(base64.b64decode(submit.json["mask"]))
    assert [p.path for p in polls] == ["/v1/get_result"] * 2
    assert all(p.headers["x-key"] == UPSTREAM_KEY for p in polls)
    assert download.path.startswith("/delivery/")


@dataclass(frozen=True)
class Case:
    model: str  # used for the masked edit
    mask: bool  # the provider takes a mask
    check: Callable[[Any], None]  # given the fake, after the edit
    generate_model: str | None = None  # None: the provider does not generate
    id: str = ""  # defaults to the provider type
    section: dict[str, Any] = field(default_factory=dict)  # config overrides
    error_body: Callable[[int, str], Any] | None = None  # None: the fake's own


# Provider type (the ``ProviderConfig`` tag) → its contract cases.
CASES: dict[str, tuple[Case, ...]] = {
    "openai": (Case("openai/gpt-image-2", True, check_openai, "openai/gpt-image-2",
                    error_body=openai_error),),
    "google": (Case("google/gemini-3.1-flash-image", False, check_google,
                    "google/gemini-3.1-flash-lite-image"),),
    "vertex": (
        Case("vertex/gemini-3.1-flash-image", False, check_vertex,
             "vertex/gemini-3-pro-image"),
    ),
    "stabilityai": (Case("stabilityai/inpaint", True, check_stabilityai,
                         "stabilityai/core"),),
    "azure": (
        Case("azure/house", True, check_azure, "azure/house"),
        Case("azure/house", False, check_azure_v1, "azure/house", id="azure-v1",
             section={"surface": "v1"}),
    ),
    "xai": (Case("xai/grok-imagine-image", False, check_xai, "xai/grok-imagine-image"),),
    "amazon": (Case("amazon/amazon.nova-canvas-v1:0", True, check_amazon,
                    "amazon/amazon.nova-canvas-v1:0"),),
    "replicate": (Case("replicate/black-forest-labs/flux-kontext-pro", False,
                       check_replicate, "replicate/black-forest-labs/flux-pro"),),
    "bfl": (Case("bfl/flux-pro-1.0-fill", True, check_bfl, "bfl/flux-kontext-pro"),),
}  # fmt: skip
PARAMS = [(kind, case) for kind, cases in CASES.items() for case in cases]
IDS = [case.id or kind for kind, case in PARAMS]


@dataclass
class Env:
    """One contract case running: its fake, the proxy and an SDK client."""

    kind: str
    case: Case
    served: Served
    proxy: TestServer
    sdk: openai.AsyncOpenAI

    def check(self) -> None:
        self.case.check(self.fake)

    async def edit(self) -> Any:
        kwargs: dict[str, Any] = {}
        if self.case.mask:
            kwargs["mask"] = ("mask.png", MASK, "image/png")
        return await self.sdk.images.edit(
            model=self.case.model,
            image=("a.png", IMAGE, "image/png"),
            prompt=PROMPT,
            **kwargs,
        )

    @property
    def fake(self) -> Any:
        return self.served.fake

    def script(self, status: int, message: str = LEAK, **kw: Any) -> None:
        error_body = self.case.error_body or self.fake.error_body
        self.fake.script(Reply(status=status, body=error_body(status, message), **kw))

    async def upload(self, data: bytes, name: str) -> str:
        form = aiohttp.FormData()
        form.add_field("file", data, filename=name)
        async with aiohttp.ClientSession() as client:
            resp = await client.post(self.proxy.make_url("/v3/upload"), data=form)
            assert resp.status == 200
            file_id: str = (await resp.json())["file_id"]
            return file_id

    async def edit_json(self, body: dict[str, Any]) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as client:
            resp = await client.post(self.proxy.make_url("/v3/images/edits"), json=body)
            return resp.status, await resp.json()


async def start_env(
    start_gateway: StartGateway, param: tuple[str, Case], **sections: Any
) -> Env:
    """The case's fake and a proxy for it (short pool timeouts, ``sections`` added)."""
    kind, case = param
    gateway = await start_gateway(
        kind, section={"pool": POOL, **case.section}, **sections
    )
    return Env(kind, case, gateway.served, gateway.proxy, gateway.sdk("client"))
