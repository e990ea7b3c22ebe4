"""One contract for every adapter: the official OpenAI SDK → proxy → a fake provider
speaking that provider's wire format.

Adding a provider is one ``Case`` in ``CASES``: how to start its fake, its config
section and environment, and what the fake must have received for a masked edit.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestServer
from PIL import Image

from tests.conftest import UPSTREAM_KEY, AiohttpServer, StartProxy
from tests.fakes.base import OUTPUT_PNG, Reply
from tests.fakes.google import FakeGemini
from tests.fakes.openai import FakeOpenAI
from tests.fakes.stabilityai import FakeStability
from tests.fakes.vertex import FakeVertex, key_file, new_key
from tests.images import png
from tests.integration import contract_b

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
# Short timeouts so the hang case is quick; small reply cap for the oversized case.
POOL = {"total_timeout_s": 5.0, "read_timeout_s": 1.0, "connect_timeout_s": 1.0}
MAX_REPLY = 64 * 1024


def assert_white_edit(mask_png: bytes) -> None:
    """The converted mask: white where the client's alpha was 0, black elsewhere."""
    img = Image.open(io.BytesIO(mask_png))
    assert img.size == (8, 8)
    for y in range(8):
        for x in range(8):
            assert img.convert("L").getpixel((x, y)) == (255 if x < 4 else 0), (x, y)


@dataclass
class Started:
    fake: Any  # has script(), received, error_body()
    providers: dict[str, Any]
    environ: dict[str, str]
    check: Callable[[], None]  # what the fake must have received for the edit
    error_body: Callable[[int, str], Any] = field(default=lambda s, m: None)


Starter = Callable[[AiohttpServer, Path], Awaitable[Started]]


@dataclass(frozen=True)
class Case:
    id: str
    model: str  # used for the masked edit
    mask: bool  # the provider takes a mask
    start: Starter
    generate_model: str | None = None  # None: the provider does not generate


async def _serve(aiohttp_server: AiohttpServer, app: Any) -> TestServer:
    return await aiohttp_server(app)


async def start_openai(aiohttp_server: AiohttpServer, tmp: Path) -> Started:
    fake = FakeOpenAI(UPSTREAM_KEY)
    server = await _serve(aiohttp_server, fake.app)

    def check() -> None:
        assert fake.last.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert [f.data for f in fake.last.files] == [IMAGE, MASK]

    def error_body(status: int, message: str) -> Any:
        return {"error": {"message": message, "type": "invalid_request_error",
                          "param": None, "code": None}}  # fmt: skip

    return Started(
        fake,
        {"openai": {"base_url": str(server.make_url("/v1")), "pool": POOL}},
        {"OPENAI_API_KEY": UPSTREAM_KEY},
        check,
        error_body,
    )


async def start_google(aiohttp_server: AiohttpServer, tmp: Path) -> Started:
    fake = FakeGemini(UPSTREAM_KEY)
    server = await _serve(aiohttp_server, fake.app)

    def check() -> None:
        assert fake.last.headers["x-goog-api-key"] == UPSTREAM_KEY
        assert fake.images[-1] == [("image/png", IMAGE)]
        assert fake.prompts[-1] == "put a hat on it"

    return Started(
        fake,
        {"google": {"base_url": str(server.make_url("/v1beta")), "pool": POOL}},
        {"GEMINI_API_KEY": UPSTREAM_KEY},
        check,
        fake.error_body,
    )


async def start_vertex(aiohttp_server: AiohttpServer, tmp: Path) -> Started:
    private = new_key()
    fake = FakeVertex(private.public_key())
    server = await _serve(aiohttp_server, fake.app)
    key_path = tmp / "service-account.json"
    key_path.write_bytes(key_file(private, str(server.make_url("/token"))))

    def check() -> None:
        assert fake.last.headers["Authorization"] == "Bearer ya29.fake-1"
        assert fake.reference("REFERENCE_TYPE_RAW") == IMAGE
        assert_white_edit(fake.reference("REFERENCE_TYPE_MASK"))
        params = fake.bodies[-1]["parameters"]
        assert params["editMode"] == "EDIT_MODE_INPAINT_INSERTION"
        assert params["sampleCount"] == 1
        assert fake.bodies[-1]["instances"][0]["prompt"] == "put a hat on it"

    return Started(
        fake,
        {"vertex": {"base_url": str(server.make_url("/v1")), "project": "test-project",
                    "pool": POOL}},
        {"GOOGLE_APPLICATION_CREDENTIALS": str(key_path)},
        check,
        fake.error_body,
    )  # fmt: skip


async def start_stability(aiohttp_server: AiohttpServer, tmp: Path) -> Started:
    fake = FakeStability(UPSTREAM_KEY)
    server = await _serve(aiohttp_server, fake.app)

    def check() -> None:
        rec = fake.last
        assert rec.path == "/v2beta/stable-image/edit/inpaint"
        assert rec.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert rec.headers["Accept"] == "application/json"
        assert fake.file("image") == IMAGE
        assert_white_edit(fake.file("mask"))
        assert rec.fields["prompt"] == ["put a hat on it"]

    return Started(
        fake,
        {"stabilityai": {"base_url": str(server.make_url("/")), "pool": POOL}},
        {"STABILITY_API_KEY": UPSTREAM_KEY},
        check,
        fake.error_body,
    )


CASES = [
    Case("openai", "openai/gpt-image-2", True, start_openai, "openai/gpt-image-2"),
    Case("google", "google/gemini-2.5-flash-image", False, start_google,
         "google/gemini-2.5-flash-image"),
    Case("vertex", "vertex/imagen-3.0-capability-001", True, start_vertex,
         "vertex/imagen-4.0-generate-001"),
    Case("stabilityai", "stabilityai/inpaint", True, start_stability,
         "stabilityai/core"),
    *contract_b.cases(),
]  # fmt: skip


@dataclass
class Env:
    case: Case
    started: Started
    sdk: openai.AsyncOpenAI

    async def edit(self) -> Any:
        kwargs: dict[str, Any] = {}
        if self.case.mask:
            kwargs["mask"] = ("mask.png", MASK, "image/png")
        return await self.sdk.images.edit(
            model=self.case.model,
            image=("a.png", IMAGE, "image/png"),
            prompt="put a hat on it",
            **kwargs,
        )

    def script(self, status: int, message: str = LEAK, **kw: Any) -> None:
        self.started.fake.script(
            Reply(status=status, body=self.started.error_body(status, message), **kw)
        )


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
async def env(
    request: pytest.FixtureRequest,
    aiohttp_server: AiohttpServer,
    start_proxy: StartProxy,
    tmp_path: Path,
) -> Any:
    case: Case = request.param
    started = await case.start(aiohttp_server, tmp_path)
    proxy = await start_proxy(
        started.providers,
        environ=started.environ,
        limits={"max_response_bytes": MAX_REPLY},
    )
    sdk = openai.AsyncOpenAI(
        base_url=str(proxy.make_url("/v3")), api_key="client", max_retries=0
    )
    yield Env(case, started, sdk)
    await sdk.close()


async def test_success(env: Env) -> None:
    result = await env.edit()
    env.started.check()
    assert result.data is not None
    assert len(result.data) == 1
    assert result.data[0].b64_json is not None
    if env.case.id != "openai":  # the OpenAI fake has its own canned image
        assert base64.b64decode(result.data[0].b64_json) == OUTPUT_PNG
    extra = result.model_extra or {}
    assert extra["provider"] == env.case.model.split("/")[0]
    assert "cost" in extra


async def test_generation(env: Env) -> None:
    if env.case.generate_model is None:
        with pytest.raises(openai.BadRequestError) as exc:
            await env.sdk.images.generate(model=env.case.model, prompt="a boat")
        assert exc.value.param == "model"
        return
    result = await env.sdk.images.generate(
        model=env.case.generate_model, prompt="a boat", n=2
    )
    assert result.data is not None
    assert len(result.data) == 2
    assert all(d.b64_json for d in result.data)
    provider = env.case.generate_model.split("/")[0]
    assert (result.model_extra or {})["provider"] == provider


async def test_provider_400_passes_through(env: Env) -> None:
    env.script(400, "the prompt is too short")
    with pytest.raises(openai.BadRequestError) as exc:
        await env.edit()
    assert "the prompt is too short" in exc.value.message


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_a_502_that_echoes_nothing(
    env: Env, status: int
) -> None:
    env.script(status)
    with pytest.raises(openai.InternalServerError) as exc:
        await env.edit()
    assert exc.value.status_code == 502
    assert exc.value.response.headers["x-should-retry"] == "false"
    assert LEAK not in exc.value.response.text
    assert UPSTREAM_KEY not in exc.value.response.text


async def test_rate_limit_keeps_retry_after(env: Env) -> None:
    env.script(429, "slow down", headers={"Retry-After": "7"})
    with pytest.raises(openai.RateLimitError) as exc:
        await env.edit()
    assert exc.value.response.headers["Retry-After"] == "7"


async def test_provider_5xx_is_a_502(env: Env) -> None:
    env.script(500)
    with pytest.raises(openai.InternalServerError) as exc:
        await env.edit()
    assert exc.value.status_code == 502
    assert LEAK not in exc.value.response.text


async def test_hang_is_a_504(env: Env) -> None:
    env.started.fake.script(Reply(delay_s=3.0))
    with pytest.raises(openai.APIStatusError) as exc:
        await env.edit()
    assert exc.value.status_code == 504


async def test_dropped_connection_is_a_502(env: Env) -> None:
    env.started.fake.script(Reply(drop=True))
    with pytest.raises(openai.InternalServerError) as exc:
        await env.edit()
    assert exc.value.status_code == 502


@pytest.mark.parametrize(
    "body", [b"x" * (MAX_REPLY + 1024), b"{not json"], ids=["oversized", "malformed"]
)
async def test_bad_reply_is_a_502(env: Env, body: bytes) -> None:
    env.started.fake.script(
        Reply(body=body, headers={"Content-Type": "application/json"})
    )
    with pytest.raises(openai.InternalServerError) as exc:
        await env.edit()
    assert exc.value.status_code == 502
